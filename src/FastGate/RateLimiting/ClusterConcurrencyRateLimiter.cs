using System.Collections.Concurrent;
using StackExchange.Redis;

namespace FastGate.RateLimiting;

/// <summary>Per-key state of a cluster concurrency limiter: <see cref="Bucket.State"/> = slots this gateway holds.</summary>
public sealed class ClusterConcurrencyBucket : Bucket
{
    internal byte[]? RedisKey;
}

/// <summary>
/// Requests in flight counted across the cluster. Redis holds one hash per key: member id → slots that member holds.
/// A slot is a lease in the member's name, valid while the member's liveness key (<c>{prefix}alive:{member}</c>,
/// TTL <see cref="RedisClusterOptions.LeaseTtl"/>, renewed every third of it) exists: the acquire script drops the
/// fields of members whose liveness expired, so a gateway that died holding slots frees them after the lease TTL.
/// Every acquire is one store call (admission must see the others' slots); a release is one background call.
/// While the store is down, onStoreFailure applies (local: a local limiter with the same slot count per gateway).
/// </summary>
public sealed class ClusterConcurrencyRateLimiter : RateLimiter, IBucketEvictionPolicy<ClusterConcurrencyBucket>
{
    /// <summary>
    /// KEYS[1] = the key's hash. ARGV: member, cost, limit, liveness prefix, lease TTL ms.
    /// Returns {1, used after} when admitted, {0, used} when full.
    /// </summary>
    internal const string AcquireScript = """
local me = ARGV[1]
local cost = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local prefix = ARGV[4]
redis.call('SET', prefix .. me, '1', 'PX', ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local used = 0
for i = 1, #all, 2 do
  local who = all[i]
  local n = tonumber(all[i + 1])
  if who ~= me and redis.call('EXISTS', prefix .. who) == 0 then
    redis.call('HDEL', KEYS[1], who)
  elseif n > 0 then
    used = used + n
  end
end
if used + cost > limit then return {0, used} end
redis.call('HINCRBY', KEYS[1], me, cost)
redis.call('PEXPIRE', KEYS[1], 86400000)
return {1, used + cost}
""";

    /// <summary>KEYS[1] = the key's hash. ARGV: member, cost. Gives the slots back (the field goes at zero).</summary>
    internal const string ReleaseScript = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
""";

    private static readonly byte[] s_missingKey = "\0missing-key"u8.ToArray();

    private readonly RedisRateLimitBackend _backend;
    private readonly KeyTable<ClusterConcurrencyBucket> _table;
    private readonly ConcurrencyRateLimiter _fallback;
    private readonly ConcurrentDictionary<ClusterConcurrencyBucket, byte> _held = new(ReferenceEqualityComparer.Instance);
    private readonly byte[] _prefix;
    private readonly RedisValue _member, _alivePrefix, _ttlMs;
    private readonly long _limit;
    private readonly Prometheus.Counter.Child _storeErrors;

    public ClusterConcurrencyRateLimiter(RateLimiterDefinition definition, TimeProvider time, RedisRateLimitBackend backend,
        Observability.GatewayMetrics metrics) : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.Concurrency) throw new ArgumentException("not a concurrency definition", nameof(definition));
        _backend = backend;
        _limit = definition.Rate;
        _table = new KeyTable<ClusterConcurrencyBucket>(definition.MaxKeys, this, time);
        _fallback = new ConcurrencyRateLimiter(definition, time);
        _prefix = [.. backend.KeyPrefix, .. System.Text.Encoding.UTF8.GetBytes($"{definition.Id}:{ClusterGcraRateLimiter.StateVersion(definition)}:")];
        _table.Overflow.RedisKey = [.. _prefix, .. "\0overflow"u8];
        _member = backend.Options.InstanceId;
        _alivePrefix = backend.Options.KeyPrefix + "alive:";
        _ttlMs = (long)backend.Options.LeaseTtl.TotalMilliseconds;
        _storeErrors = metrics.RateLimitStoreErrors.WithLabels(definition.Id, "redis");
        backend.StartLeaseRenewal();
        backend.StateChanged += OnStoreStateChanged;
    }

    public override long KeyCount => _table.Count;
    public override long OverflowHits => _table.OverflowHits;
    public override long Evictions => _table.Evictions;
    public override int Sweep() => _table.Sweep();
    /// <summary>The local limiter used while the store is down and onStoreFailure is local.</summary>
    public ConcurrencyRateLimiter Fallback => _fallback;

    /// <summary>Slots this gateway holds for <paramref name="key"/> (diagnostics and tests).</summary>
    public long HeldLocally(ReadOnlySpan<byte> key)
    {
        var b = _table.Find(key);
        long v = b is null ? 0 : Volatile.Read(ref b.State);
        return v == Bucket.Evicted ? 0 : v;
    }

    public override ValueTask<RateLimitDecision> AcquireWithoutKeyAsync(long cost = 1)
    {
        RateLimitDecision d = MissingKeyDecision(out bool shared);
        return shared ? AcquireAsync(s_missingKey, cost, Time.GetTimestamp()) : new ValueTask<RateLimitDecision>(d);
    }

    public override ValueTask<RateLimitDecision> AcquireAsync(ReadOnlySpan<byte> key, long cost, long timestamp)
    {
        if (!_backend.IsConnected) return new ValueTask<RateLimitDecision>(StoreFailed(key, cost));
        ClusterConcurrencyBucket b = _table.GetOrAdd(key);
        // hold the bucket (so it is not evicted while the store call runs): the slot is counted locally first
        while (true)
        {
            long cur = Volatile.Read(ref b.State);
            if (cur == Bucket.Evicted) { b = _table.GetOrAdd(key); continue; }
            if (Interlocked.CompareExchange(ref b.State, cur + cost, cur) == cur) break;
        }
        Counters.StoreWaits.Increment();
        return AcquireFromStoreAsync(b, key.ToArray(), cost);
    }

    private async ValueTask<RateLimitDecision> AcquireFromStoreAsync(ClusterConcurrencyBucket b, byte[] key, long cost)
    {
        RedisResult[] r;
        try
        {
            Counters.StoreCalls.Increment();
            r = (RedisResult[])(await _backend.EvalAsync(AcquireScript, [RedisKeyOf(b, key)], [_member, cost, _limit, _alivePrefix, _ttlMs])
                .WaitAsync(Definition.StoreTimeout).ConfigureAwait(false))!;
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            Interlocked.Add(ref b.State, -cost);
            _backend.ReportFailure(e);
            return StoreFailed(key, cost);
        }
        long used = (long)r[1];
        if ((long)r[0] == 0)
        {
            Interlocked.Add(ref b.State, -cost);
            Counters.Rejected.Increment();
            return new RateLimitDecision(RateLimitOutcome.Rejected, _limit, _limit - used, 0, 1, Definition.RejectStatusCode);
        }
        _held.TryAdd(b, 0);
        Counters.Allowed.IncrementRelaxed();
        return new RateLimitDecision(RateLimitOutcome.Allowed, _limit, _limit - used, 0, 0, 0, new RateLimitLease(b, cost));
    }

    public override void Release(in RateLimitDecision decision)
    {
        RateLimitLease lease = decision.Lease;
        if (lease.Bucket is not ClusterConcurrencyBucket b)
        {
            lease.Release(); // a fallback (local) lease, or none
            return;
        }
        if (Interlocked.Add(ref b.State, -lease.Cost) <= 0) _held.TryRemove(b, out _);
        _ = ReleaseInStoreAsync(b, lease.Cost);
    }

    private async Task ReleaseInStoreAsync(ClusterConcurrencyBucket b, long cost)
    {
        try
        {
            Counters.StoreCalls.Increment();
            await _backend.EvalAsync(ReleaseScript, [RedisKeyOf(b, null)], [_member, cost]).WaitAsync(Definition.StoreTimeout).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // the slot stays counted in Redis until this member's next reconcile (or its lease expires)
            Counters.StoreFailures.Increment();
            _storeErrors.Inc();
            _backend.ReportFailure(e);
        }
    }

    /// <summary>The store is back (possibly empty after a restart or a failover): write the slots this gateway holds.</summary>
    private void OnStoreStateChanged(bool up)
    {
        if (up) _ = ReconcileAsync();
    }

    internal async Task ReconcileAsync()
    {
        try
        {
            IDatabase db = _backend.Multiplexer.GetDatabase();
            foreach (var b in _held.Keys)
            {
                long held = Volatile.Read(ref b.State);
                if (held > 0) await db.HashSetAsync(RedisKeyOf(b, null), _member, held).ConfigureAwait(false);
                else await db.HashDeleteAsync(RedisKeyOf(b, null), _member).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            _backend.ReportFailure(e);
        }
    }

    private RateLimitDecision StoreFailed(ReadOnlySpan<byte> key, long cost)
    {
        Counters.StoreFailures.Increment();
        _storeErrors.Inc();
        switch (Definition.OnStoreFailure)
        {
            case StoreFailureMode.Local:
            {
                Counters.StoreFallbackDecisions.Increment();
                RateLimitDecision d = _fallback.Acquire(key, cost);
                if (d.IsAllowed) Counters.Allowed.IncrementRelaxed(); else Counters.Rejected.Increment();
                return d;
            }
            case StoreFailureMode.Allow:
                return AdmitWithoutStore(_limit);
            default:
                return RefuseWithoutStore(_limit);
        }
    }

    private RedisKey RedisKeyOf(ClusterConcurrencyBucket b, byte[]? key) =>
        Volatile.Read(ref b.RedisKey) ?? PrefixedKey(ref b.RedisKey, _prefix, key ?? b.KeyToArray());

    public bool TryMarkEvicted(ClusterConcurrencyBucket bucket, long now) =>
        Volatile.Read(ref bucket.State) == 0 && Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, 0) == 0;

    public override void Dispose() => _backend.StateChanged -= OnStoreStateChanged;
}
