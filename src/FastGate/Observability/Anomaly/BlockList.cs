using System.Text;

namespace FastGate.Observability.Anomaly;

/// <summary>
/// Temporary blocks of client identities (IP text), with a TTL. Reads are lock-free: the request path looks the
/// identity's hash up in an immutable dictionary published with Volatile (no allocation; an empty list costs one
/// read). Writes (the detector, the admin API) rebuild and republish under a lock, off the request path.
/// </summary>
public sealed class BlockList
{
    private readonly TimeProvider _time;
    private readonly object _gate = new();
    private Dictionary<ulong, BlockEntry> _entries = new();

    /// <param name="metrics">Where the blocked-identity gauge lives (unexported metrics of its own when omitted).</param>
    public BlockList(TimeProvider time, GatewayMetrics? metrics = null)
    {
        _time = time;
        _blocked = (metrics ?? new GatewayMetrics()).BlockedIdentities;
    }

    private readonly Prometheus.Gauge _blocked;

    public int Count => Volatile.Read(ref _entries).Count;

    /// <summary>True when <paramref name="identity"/> (the client IP as ASCII text) is blocked and the block has not expired.</summary>
    public bool IsBlocked(ReadOnlySpan<byte> identity)
    {
        var entries = Volatile.Read(ref _entries);
        if (entries.Count == 0) return false;
        return entries.TryGetValue(IdentityHash.Of(identity), out var e) && _time.GetUtcNow() < e.ExpiresAt;
    }

    public bool IsBlocked(string identity) => IsBlocked(Encoding.UTF8.GetBytes(identity));

    /// <summary>
    /// Cluster mode: told of every local change (a block made here, a block lifted here) so the other gateways apply it
    /// too (<see cref="Cluster.ClusterNode"/>). Changes that came from the cluster are applied with the Apply* methods,
    /// which do not call it back.
    /// </summary>
    public IBlockReplication? Replication { get; set; }

    public void Block(string identity, TimeSpan ttl, string reason)
    {
        var now = _time.GetUtcNow();
        var entry = new BlockEntry(identity, now, now + ttl, reason);
        ApplyBlock(entry);
        Replication?.Blocked(entry);
    }

    public bool Remove(string identity)
    {
        bool removed = ApplyRemove(identity);
        Replication?.Removed(identity);
        return removed;
    }

    /// <summary>Adds (or replaces) a block without telling <see cref="Replication"/> (it came from the cluster).</summary>
    public void ApplyBlock(BlockEntry entry)
    {
        lock (_gate)
        {
            var next = Copy(_time.GetUtcNow());
            if (entry.ExpiresAt > _time.GetUtcNow()) next[IdentityHash.Of(Encoding.UTF8.GetBytes(entry.Identity))] = entry;
            Publish(next);
        }
    }

    /// <summary>Lifts a block without telling <see cref="Replication"/>.</summary>
    public bool ApplyRemove(string identity)
    {
        lock (_gate)
        {
            var next = Copy(_time.GetUtcNow());
            bool removed = next.Remove(IdentityHash.Of(Encoding.UTF8.GetBytes(identity)));
            Publish(next);
            return removed;
        }
    }

    /// <summary>Replaces the whole list with <paramref name="entries"/> (a reconciling read of the cluster's list).</summary>
    public void ApplyAll(IEnumerable<BlockEntry> entries)
    {
        var now = _time.GetUtcNow();
        var next = new Dictionary<ulong, BlockEntry>();
        foreach (var e in entries)
            if (e.ExpiresAt > now) next[IdentityHash.Of(Encoding.UTF8.GetBytes(e.Identity))] = e;
        lock (_gate) Publish(next);
    }

    /// <summary>Drops expired entries (called on the detector's interval).</summary>
    public void Expire()
    {
        var now = _time.GetUtcNow();
        var current = Volatile.Read(ref _entries);
        bool any = false;
        foreach (var e in current.Values) any |= e.ExpiresAt <= now;
        if (!any) return;
        lock (_gate) Publish(Copy(now));
    }

    public IReadOnlyList<BlockEntry> List()
    {
        var now = _time.GetUtcNow();
        return Volatile.Read(ref _entries).Values.Where(e => e.ExpiresAt > now).OrderBy(e => e.BlockedAt).ToList();
    }

    private Dictionary<ulong, BlockEntry> Copy(DateTimeOffset now)
    {
        var next = new Dictionary<ulong, BlockEntry>();
        foreach (var (k, v) in _entries)
            if (v.ExpiresAt > now) next[k] = v;
        return next;
    }

    private void Publish(Dictionary<ulong, BlockEntry> next)
    {
        Volatile.Write(ref _entries, next);
        _blocked.Set(next.Count);
    }
}

public sealed record BlockEntry(string Identity, DateTimeOffset BlockedAt, DateTimeOffset ExpiresAt, string Reason);

/// <summary>Where a <see cref="BlockList"/> reports its local changes (cluster mode shares them).</summary>
public interface IBlockReplication
{
    void Blocked(BlockEntry entry);
    void Removed(string identity);
}

/// <summary>A 64-bit FNV-1a hash of identity bytes with a per-process random seed (so keys cannot be aimed at).</summary>
internal static class IdentityHash
{
    private static readonly ulong s_seed = (ulong)Random.Shared.NextInt64() | 1;

    public static ulong Of(ReadOnlySpan<byte> bytes)
    {
        ulong h = 14695981039346656037UL ^ s_seed;
        foreach (byte b in bytes)
        {
            h ^= b;
            h *= 1099511628211UL;
        }
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9UL;
        h ^= h >> 32;
        return h == 0 ? 1 : h;
    }
}
