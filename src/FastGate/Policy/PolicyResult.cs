using FastGate.Http;

namespace FastGate.Policy;

public enum PolicyVerdict : byte { Allow, Deny, Respond }

/// <summary>
/// The outcome of evaluating the policy for one request. One instance per connection, reset per request, so
/// evaluation allocates nothing: matched rules are recorded by index into the compiled rule table.
/// </summary>
public sealed class PolicyResult
{
    private int[] _matched = new int[16];

    public PolicyVerdict Verdict { get; set; }
    /// <summary>Index of the rule whose allow/deny/respond decided, or -1 when the default action decided.</summary>
    public int DecidingRule { get; set; } = -1;
    /// <summary>Enforced rules that matched, in rule order (their header, rate-limit, rewrite and route actions apply).</summary>
    public ReadOnlySpan<int> Matched => _matched.AsSpan(0, MatchedCount);
    public int MatchedCount { get; private set; }
    /// <summary>Report-mode rules that matched (counted and logged, not enforced).</summary>
    public int ReportMatches { get; set; }
    /// <summary>The first matched rule (in rule order) with a rewritePath action, or -1: its path is the one forwarded.</summary>
    public int RewriteRule { get; set; } = -1;
    /// <summary>The first matched rule (in rule order) with a route action, or -1: its cluster is the one used.</summary>
    public int RouteRule { get; set; } = -1;

    public void Reset()
    {
        Verdict = PolicyVerdict.Allow;
        DecidingRule = -1;
        MatchedCount = 0;
        ReportMatches = 0;
        RewriteRule = -1;
        RouteRule = -1;
        _scratchCount = 0;
    }

    // Candidate matches collected during evaluation (several trie leaves, any order), before Decide sorts them.
    private int[] _scratch = new int[16];
    private int _scratchCount;
    internal Span<int> ScratchSpan => _scratch.AsSpan(0, _scratchCount);

    // Per-connection buffers for the normalised path (grown when a longer path arrives, then reused).
    private byte[] _pathBuffer = new byte[256];
    private ByteRange[] _segments = new ByteRange[32];

    internal byte[] PathBuffer(int length) => _pathBuffer.Length >= length ? _pathBuffer : _pathBuffer = new byte[Math.Max(length, _pathBuffer.Length * 2)];
    private uint[] _segmentHashes = new uint[32];
    internal ByteRange[] SegmentBuffer(int count) => _segments.Length >= count ? _segments : _segments = new ByteRange[Math.Max(count, _segments.Length * 2)];
    private int _hashedSegments;

    internal void PrepareSegmentHashes(int count)
    {
        if (_segmentHashes.Length < count) _segmentHashes = new uint[Math.Max(count, _segmentHashes.Length * 2)];
        _hashedSegments = 0;
    }

    /// <summary>The hash of segment <paramref name="depth"/>, computed on first use (tries rarely reach the last segments).</summary>
    internal uint SegmentHash(ReadOnlySpan<byte> path, ReadOnlySpan<ByteRange> segments, int depth)
    {
        while (_hashedSegments <= depth)
        {
            var s = segments[_hashedSegments];
            _segmentHashes[_hashedSegments++] = ByteKeyTable<PathNode>.Hash(path.Slice(s.Start, s.Length), ignoreCase: false);
        }
        return _segmentHashes[depth];
    }

    internal void AddScratch(int ruleIndex)
    {
        if (_scratchCount == _scratch.Length) Array.Resize(ref _scratch, _scratch.Length * 2);
        _scratch[_scratchCount++] = ruleIndex;
    }

    public void AddMatch(int ruleIndex)
    {
        if (MatchedCount == _matched.Length) Array.Resize(ref _matched, _matched.Length * 2);
        _matched[MatchedCount++] = ruleIndex;
    }
}

/// <summary>What the evaluator knows about a request besides its head.</summary>
public readonly ref struct RequestFacts
{
    public RequestFacts(RequestHead head, ClientAddress client, int routeIndex, Security.ConsumerModel? consumer = null, Security.DeviceModel? device = null)
    {
        Head = head;
        Consumer = consumer;
        Device = device;
        Client = client;
        RouteIndex = routeIndex;
    }

    public RequestHead Head { get; }
    public ClientAddress Client { get; }
    /// <summary>Index of the matched route in the snapshot's route table, or -1.</summary>
    public int RouteIndex { get; }
    /// <summary>The consumer an API key identified, or null (consumers/consumerGroups conditions then fail).</summary>
    public Security.ConsumerModel? Consumer { get; }
    /// <summary>The allowlisted device of the connection's client certificate (mTLS), or null.</summary>
    public Security.DeviceModel? Device { get; }
}

/// <summary>A client address as a 128-bit value (IPv4 mapped into ::ffff:0:0/96), parsed once per connection.</summary>
public readonly record struct ClientAddress(UInt128 Value, bool IsIPv4)
{
    public static ClientAddress From(System.Net.IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
        {
            bytes.Clear();
            bytes[10] = 0xFF;
            bytes[11] = 0xFF;
            address.TryWriteBytes(bytes[12..], out _);
            return new ClientAddress(System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(bytes), true);
        }
        address.TryWriteBytes(bytes, out _);
        return new ClientAddress(System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(bytes), false);
    }
}
