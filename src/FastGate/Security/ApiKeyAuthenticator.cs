using System.Collections.Frozen;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using FastGate.Http;

namespace FastGate.Security;

/// <summary>
/// The authenticated caller as the request path sees it. An API key gives a consumer; a token gives a subject (its
/// issuer and subject claim), which is also a consumer only when a consumer lists it (<see cref="ConsumerConfig.Jwt"/>).
/// Rules on consumers, consumer limit keys and the consumer header apply only when <see cref="IsConsumer"/>.
/// </summary>
public sealed class ConsumerModel
{
    /// <summary>The consumer id; "" for a token that maps to no consumer.</summary>
    public required string Id { get; init; }
    public required string[] Groups { get; init; }
    /// <summary>The identity lines sent upstream, pre-encoded: "X-Consumer-Id: alice\r\n" for a consumer, plus
    /// "X-Subject-Id: …\r\nX-Subject-Issuer: …\r\n" for a token.</summary>
    public required byte[] ForwardedHeaderLine { get; init; }
    /// <summary>False for a token that maps to no consumer: it is a subject only.</summary>
    public bool IsConsumer { get; init; } = true;
    /// <summary>For a JWT: the subject claim's value, as the token carries it.</summary>
    public string? Subject { get; init; }
    /// <summary>For a JWT: "&lt;issuer id&gt;:&lt;subject&gt;" (issuer ids contain no ':'), the identity as the access
    /// log shows it; null otherwise.</summary>
    public string? SubjectId { get; init; }
    /// <summary>For a JWT: <see cref="SubjectId"/> in UTF-8, the rate-limit key of the subject, so the same subject
    /// from two issuers never shares a bucket.</summary>
    public byte[] SubjectKey { get; init; } = [];
    /// <summary>The id in UTF-8 (made once).</summary>
    public byte[] IdBytes => _idBytes ??= Encoding.UTF8.GetBytes(Id);
    private byte[]? _idBytes;
    /// <summary>How the consumer proved who it is.</summary>
    public AuthScheme Scheme { get; init; } = AuthScheme.ApiKey;
    /// <summary>For a JWT: the index of its issuer in the snapshot's jwtIssuers; else -1.</summary>
    public int IssuerIndex { get; init; } = -1;
    /// <summary>For a JWT: the scopes of its "scope" / "scp" claims.</summary>
    public string[] Scopes { get; init; } = [];
    /// <summary>For a JWT: every claim by name (arrays give several values).</summary>
    public FrozenDictionary<string, string[]> Claims { get; init; } = FrozenDictionary<string, string[]>.Empty;

    public bool HasScope(string scope)
    {
        foreach (var s in Scopes) if (string.Equals(s, scope, StringComparison.Ordinal)) return true;
        return false;
    }

    /// <summary>True when the claim has one of the values (any value when the list is empty).</summary>
    public bool HasClaim(string name, string[] values)
    {
        if (!Claims.TryGetValue(name, out var actual)) return false;
        if (values.Length == 0) return true;
        foreach (var a in actual)
            foreach (var v in values)
                if (string.Equals(a, v, StringComparison.Ordinal)) return true;
        return false;
    }
}

/// <summary>
/// Finds the consumer of an API key: the key (from the configured header or "Authorization: ApiKey &lt;key&gt;")
/// is hashed with SHA-256 into a stack buffer and the digest looked up; the configured table holds digests only. The
/// time the lookup takes depends on the digest, not on how much of the key an attacker guessed. No allocation.
/// <para>
/// SHA-256 through OpenSSL costs 1.5–3 µs a call, more than the rest of the request path. Keys that were accepted are
/// therefore remembered in a small direct-mapped cache owned by this authenticator (so by one config snapshot: a
/// reload that removes a key starts from an empty cache): the slot is chosen by a 64-bit XxHash3 of the key under a
/// random secret seed, and a hit needs that whole hash to match and then the whole key, compared in fixed time. A
/// key that is not accepted is never cached, so a wrong guess always pays the SHA-256 lookup and learns nothing from
/// the cache's timing. A hit allocates nothing and takes no lock; an accepted key allocates one entry when it first
/// lands in its slot.
/// </para>
/// </summary>
public sealed class ApiKeyAuthenticator
{
    private readonly FrozenDictionary<Digest, ConsumerModel> _byDigest;
    private readonly byte[] _header;
    private readonly byte[]? _query;

    /// <summary>"name=" of apiKeys.queryParameter, or empty: the parameter that carries a key (dropped upstream).</summary>
    public ReadOnlySpan<byte> KeyQueryPrefix => _query;
    private readonly CacheEntry?[] _cache;
    private readonly ulong _seed;

    public ApiKeyAuthenticator(IReadOnlyList<ConsumerConfig> consumers, ApiKeyOptionsConfig options, JwtOptionsConfig? jwt = null)
    {
        _header = Encoding.ASCII.GetBytes(options.Header);
        _query = options.QueryParameter is { Length: > 0 } q ? Encoding.ASCII.GetBytes(q + "=") : null;
        ConsumerHeaderName = Encoding.ASCII.GetBytes(options.ConsumerHeader);
        jwt ??= new JwtOptionsConfig();
        _subjectHeader = Encoding.ASCII.GetBytes(jwt.SubjectHeader);
        _issuerHeader = Encoding.ASCII.GetBytes(jwt.IssuerHeader);
        var table = new Dictionary<Digest, ConsumerModel>();
        foreach (var c in consumers)
        {
            var model = new ConsumerModel
            {
                Id = c.Id,
                Groups = c.Groups.ToArray(),
                ForwardedHeaderLine = Encoding.UTF8.GetBytes($"{options.ConsumerHeader}: {c.Id}\r\n"),
            };
            foreach (var key in c.ApiKeys)
                if (ApiKeys.TryParseHash(key, out var digest)) table[new Digest(digest)] = model;
        }
        _byDigest = table.ToFrozenDictionary();
        // Twice the number of keys (at least 1024, at most 65536 slots), so that keys seldom share a slot.
        _cache = new CacheEntry?[_byDigest.Count == 0 ? 0
            : (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(2 * _byDigest.Count, MinCacheSize, MaxCacheSize))];
        _seed = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
    }

    private const int MinCacheSize = 1024, MaxCacheSize = 1 << 16;

    public static ApiKeyAuthenticator Empty { get; } = new([], new ApiKeyOptionsConfig());

    /// <summary>The header carrying the consumer id upstream (a client's own copy is always removed).</summary>
    public byte[] ConsumerHeaderName { get; }
    private readonly byte[] _subjectHeader, _issuerHeader;
    /// <summary>The headers carrying a token's subject and issuer upstream (jwt.subjectHeader, jwt.issuerHeader).</summary>
    public ReadOnlySpan<byte> SubjectHeaderName => _subjectHeader;
    public ReadOnlySpan<byte> IssuerHeaderName => _issuerHeader;

    /// <summary>The identity headers the gateway sets (consumer, token subject and issuer): a client's copies are always removed.</summary>
    public bool IsIdentityHeader(ReadOnlySpan<byte> name) =>
        Ascii.EqualsIgnoreCase(name, ConsumerHeaderName) || Ascii.EqualsIgnoreCase(name, _subjectHeader) || Ascii.EqualsIgnoreCase(name, _issuerHeader);
    /// <summary>The header the key is read from (not forwarded upstream).</summary>
    public ReadOnlySpan<byte> KeyHeaderName => _header;

    public ConsumerModel? Authenticate(RequestHead request)
    {
        if (_cache.Length == 0 || !TryGetKey(request, out var key) || key.IsEmpty || key.Length > 512) return null;
        ulong hash = XxHash3.HashToUInt64(key, (long)_seed);
        ref var slot = ref _cache[(int)(hash & (ulong)(_cache.Length - 1))];
        var e = Volatile.Read(ref slot);
        if (e is not null && e.Hash == hash && CryptographicOperations.FixedTimeEquals(e.Key, key)) return e.Consumer;
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(key, digest);
        var consumer = _byDigest.GetValueOrDefault(new Digest(digest));
        if (consumer is not null) Volatile.Write(ref slot, new CacheEntry(hash, key.ToArray(), consumer));
        return consumer;
    }

    /// <summary>An accepted key: its seeded hash, its bytes and its consumer.</summary>
    private sealed class CacheEntry(ulong hash, byte[] key, ConsumerModel consumer)
    {
        public readonly ulong Hash = hash;
        public readonly byte[] Key = key;
        public readonly ConsumerModel Consumer = consumer;
    }

    private bool TryGetKey(RequestHead request, out ReadOnlySpan<byte> key)
    {
        if (request.TryGetHeader(_header, out key)) return true;
        if (request.TryGetHeader("authorization"u8, out var auth) && auth.Length > 7 && Ascii.EqualsIgnoreCase(auth[..7], "ApiKey "u8))
        {
            key = auth[7..].Trim((byte)' ');
            return true;
        }
        if (_query is not null && !request.Query.IsEmpty)
        {
            var q = request[request.Query][1..];
            while (!q.IsEmpty)
            {
                int amp = q.IndexOf((byte)'&');
                var pair = amp < 0 ? q : q[..amp];
                if (pair.StartsWith(_query)) { key = pair[_query.Length..]; return true; }
                q = amp < 0 ? default : q[(amp + 1)..];
            }
        }
        key = default;
        return false;
    }

    /// <summary>A SHA-256 digest as a value key.</summary>
    private readonly struct Digest : IEquatable<Digest>
    {
        private readonly UInt128 _a, _b;

        public Digest(ReadOnlySpan<byte> d)
        {
            _a = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(d);
            _b = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(d[16..]);
        }

        public bool Equals(Digest other) => ((_a ^ other._a) | (_b ^ other._b)) == UInt128.Zero;
        public override bool Equals(object? obj) => obj is Digest d && Equals(d);
        public override int GetHashCode() => (int)(ulong)_a; // digest bits are uniform already
    }
}
