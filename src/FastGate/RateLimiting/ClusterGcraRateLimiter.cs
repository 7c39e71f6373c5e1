using System.Runtime.CompilerServices;
using StackExchange.Redis;

namespace FastGate.RateLimiting;

/// <summary>Per-key local allowance of a cluster limiter. <see cref="Bucket.State"/> is the number of local tokens.</summary>
public sealed class ClusterBucket : Bucket
{
    internal long ExpiresAt;        // timestamp after which the local tokens are void
    internal long DeniedUntil;      // timestamp before which the store said no (negative cache)
    internal long RemoteRemaining;  // tokens left in Redis after the last grant
    internal long RemoteFullAt;     // timestamp at which the Redis bucket is full again
    internal int Refilling;         // 1 while a background refill is in flight
    internal byte[]? RedisKey;      // prefix + limiter + key, built on first store call
}

/// <summary>
/// GCRA shared through Redis. Each gateway takes small batches of tokens from the shared bucket (the "local
/// allowance") and spends them without touching Redis; when a key's allowance runs low, one background call refills
/// it. A request waits for Redis only when its key has no allowance left, and never longer than the store timeout.
/// Every token admitted was debited in Redis first, so the cluster never admits more than the shared limit plus the
/// allowances that are outstanding (at most instances × 2 × batch). Redis failures follow onStoreFailure.
/// </summary>
public sealed class ClusterGcraRateLimiter : RateLimiter, IBucketEvictionPolicy<ClusterBucket>
{
    private static readonly byte[] s_missingKey = "\0missing-key"u8.ToArray();

    private readonly RedisRateLimitBackend _backend;
    private readonly KeyTable<ClusterBucket> _table;
    private readonly GcraRateLimiter _fallback;
    private readonly long _intervalUs, _toleranceUs, _batch, _lifetime, _burst, _intervalTs;
    private readonly long _backoffMs;
    private readonly byte[] _prefix;
    private long _storeBackoffUntilMs; // Environment.TickCount64 (real time)
    private readonly Prometheus.Counter.Child _storeErrors;

    /// <summary>16 hex digits of SHA-256 over the settings fingerprint: the same in every process and every run.</summary>
    internal static string StateVersion(RateLimiterDefinition definition) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(definition.StateFingerprint)), 0, 8);

    public ClusterGcraRateLimiter(RateLimiterDefinition definition, TimeProvider time, RedisRateLimitBackend backend, Observability.GatewayMetrics metrics)
        : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.Gcra) throw new ArgumentException("cluster limiters are gcra", nameof(definition));
        _backend = backend;
        _table = new KeyTable<ClusterBucket>(definition.MaxKeys, this, time);
        _fallback = new GcraRateLimiter(definition, time);
        _burst = definition.Burst;
        _intervalUs = Math.Max(1, (long)Math.Ceiling(definition.Per.Ticks / 10m / definition.Rate));
        _toleranceUs = _intervalUs * _burst;
        _intervalTs = ToTimestampUnitsCeil(definition.Per.Ticks, Frequency, definition.Rate);
        _batch = Math.Max(1, (long)(_burst * backend.Options.AllowanceFraction));
        _lifetime = Math.Max(1, backend.Options.AllowanceLifetime.Ticks * Frequency / TimeSpan.TicksPerSecond);
        _backoffMs = (long)backend.Options.FailureBackoff.TotalMilliseconds;
        // Keys are versioned by the settings that give the stored TAT its meaning. The version is shared by every
        // gateway writing to this Redis, so it is a content hash (never string.GetHashCode: seeded per process).
        _prefix = [.. backend.KeyPrefix, .. System.Text.Encoding.UTF8.GetBytes($"{definition.Id}:{StateVersion(definition)}:")];
        _storeErrors = metrics.RateLimitStoreErrors.WithLabels(definition.Id, "redis");
        _table.Overflow.RedisKey = [.. _prefix, .. "\0overflow"u8];
    }

    public override long KeyCount => _table.Count;
    public override long OverflowHits => _table.OverflowHits;
    public override long Evictions => _table.Evictions;
    public override int Sweep() => _table.Sweep();
    /// <summary>Tokens taken from Redis per store call.</summary>
    public long BatchSize => _batch;
    /// <summary>The local limiter used while the store is down and onStoreFailure is local.</summary>
    public GcraRateLimiter Fallback => _fallback;

    public override ValueTask<RateLimitDecision> AcquireWithoutKeyAsync(long cost = 1)
    {
        RateLimitDecision d = MissingKeyDecision(out bool shared);
        return shared ? AcquireAsync(s_missingKey, cost, Time.GetTimestamp()) : new ValueTask<RateLimitDecision>(d);
    }

    public override ValueTask<RateLimitDecision> AcquireAsync(ReadOnlySpan<byte> key, long cost, long timestamp)
    {
        long now = timestamp;
        ClusterBucket b = _table.GetOrAdd(key);
        if (cost == 0) return Check(b, key, now);
        while (true)
        {
            long tokens = Volatile.Read(ref b.State);
            if (tokens == Bucket.Evicted) { b = _table.GetOrAdd(key); continue; }
            if (tokens < cost || now >= Volatile.Read(ref b.ExpiresAt)) break;
            if (Interlocked.CompareExchange(ref b.State, tokens - cost, tokens) != tokens) continue;
            long left = tokens - cost;
            if (left * 2 <= _batch) StartRefill(b, now);
            Counters.Allowed.IncrementRelaxed();
            long fullAt = Volatile.Read(ref b.RemoteFullAt);
            return new ValueTask<RateLimitDecision>(new RateLimitDecision(RateLimitOutcome.Allowed, _burst,
                Volatile.Read(ref b.RemoteRemaining) + left, CeilSeconds(fullAt - now), 0, 0));
        }

        long deniedUntil = Volatile.Read(ref b.DeniedUntil);
        if (now < deniedUntil && cost <= _burst)
        {
            // The store said no moments ago and told us when to come back: answer locally.
            return new ValueTask<RateLimitDecision>(Reject(_burst, 0, Volatile.Read(ref b.RemoteFullAt) - now, deniedUntil - now));
        }
        if (!_backend.IsConnected || Environment.TickCount64 < Volatile.Read(ref _storeBackoffUntilMs))
        {
            _backend.ReportFailure(null);
            return new ValueTask<RateLimitDecision>(StoreFailed(key, cost, now, countFailure: true));
        }

        Counters.StoreWaits.Increment();
        return AcquireFromStoreAsync(b, key.ToArray(), cost, now);
    }

    /// <summary>
    /// A token quota's check (cost 0): asks the store whether the key is in debt, taking no allowance — a token quota
    /// is spent by the charges after the responses, so every token debited in Redis is one a response reported (exact
    /// across gateways; an allowance taken here would be lost whenever a call outlives its lifetime). A refusal is
    /// remembered until the debt is paid back (charges elsewhere can only make it longer), so a refused key costs no
    /// store call until then.
    /// </summary>
    private ValueTask<RateLimitDecision> Check(ClusterBucket b, ReadOnlySpan<byte> key, long now)
    {
        long deniedUntil = Volatile.Read(ref b.DeniedUntil);
        if (now < deniedUntil)
            return new ValueTask<RateLimitDecision>(Reject(_burst, 0, Volatile.Read(ref b.RemoteFullAt) - now, deniedUntil - now));
        if (!_backend.IsConnected || Environment.TickCount64 < Volatile.Read(ref _storeBackoffUntilMs))
        {
            _backend.ReportFailure(null);
            return new ValueTask<RateLimitDecision>(StoreFailed(key, 0, now, countFailure: true));
        }
        Counters.StoreWaits.Increment();
        return AcquireFromStoreAsync(b, key.ToArray(), 0, now);
    }

    private async ValueTask<RateLimitDecision> AcquireFromStoreAsync(ClusterBucket b, byte[] key, long cost, long now)
    {
        GcraReply reply;
        try
        {
            Counters.StoreCalls.Increment();
            // a check (cost 0) wants nothing and needs nothing: refused only when the key is in debt (available < 0)
            reply = await _backend.EvalGcraAsync(RedisKeyOf(b, key), NowUs(), _intervalUs, _toleranceUs, cost == 0 ? 0 : Math.Max(_batch, cost), cost)
                .WaitAsync(Definition.StoreTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            if (e is TimeoutException) Volatile.Write(ref _storeBackoffUntilMs, Environment.TickCount64 + _backoffMs);
            _backend.ReportFailure(e);
            return StoreFailed(key, cost, now, countFailure: true);
        }
        bool refused = cost == 0 ? reply.Available < 0 : reply.Granted < cost;
        Record(b, reply, now, refused);
        if (refused)
        {
            return Reject(_burst, reply.Available, UsToTs(reply.TatMinusNowUs), UsToTs(reply.RetryUs));
        }
        Deposit(b, reply.Granted - cost, now);
        Counters.Allowed.IncrementRelaxed();
        return new RateLimitDecision(RateLimitOutcome.Allowed, _burst, reply.Available + reply.Granted - cost,
            CeilSeconds(UsToTs(reply.TatMinusNowUs)), 0, 0);
    }

    private void StartRefill(ClusterBucket b, long now)
    {
        if (Interlocked.CompareExchange(ref b.Refilling, 1, 0) != 0) return;
        if (!_backend.IsConnected || Environment.TickCount64 < Volatile.Read(ref _storeBackoffUntilMs))
        {
            Volatile.Write(ref b.Refilling, 0);
            return;
        }
        _ = RefillAsync(b, now);
    }

    private async Task RefillAsync(ClusterBucket b, long now)
    {
        try
        {
            Counters.StoreCalls.Increment();
            GcraReply reply = await _backend.EvalGcraAsync(RedisKeyOf(b, null), NowUs(), _intervalUs, _toleranceUs, _batch, 1)
                .WaitAsync(Definition.StoreTimeout).ConfigureAwait(false);
            Record(b, reply, now, refused: reply.Granted == 0);
            if (reply.Granted > 0) Deposit(b, reply.Granted, now);
        }
        catch (Exception e)
        {
            Counters.StoreFailures.Increment();
            _storeErrors.Inc();
            if (e is TimeoutException) Volatile.Write(ref _storeBackoffUntilMs, Environment.TickCount64 + _backoffMs);
            _backend.ReportFailure(e);
        }
        finally
        {
            Volatile.Write(ref b.Refilling, 0);
        }
    }

    /// <summary>
    /// A token quota's charge after the response: spends the key's local allowance first, and debits the rest in Redis
    /// (the key may go into debt there, refused on every gateway until the rate has paid it back). Never waits: the
    /// store call runs in the background; the next check of the key asks the store again.
    /// </summary>
    public override void Charge(ReadOnlySpan<byte> key, long cost, long timestamp)
    {
        if (cost <= 0) return;
        cost = Math.Min(cost, 16 * _burst); // as the local limiter: the debt is capped at 16 bursts
        ClusterBucket b = _table.GetOrAdd(key);
        long rest = cost;
        while (true)
        {
            long tokens = Volatile.Read(ref b.State);
            if (tokens == Bucket.Evicted) { b = _table.GetOrAdd(key); continue; }
            long take = timestamp < Volatile.Read(ref b.ExpiresAt) ? Math.Min(tokens, cost) : 0;
            if (take <= 0 || Interlocked.CompareExchange(ref b.State, tokens - take, tokens) == tokens)
            {
                rest = cost - Math.Max(0, take);
                break;
            }
        }
        if (rest == 0)
        {
            // the allowance is spent: a check at cost 0 would still pass locally, so the next one asks the store
            if (Volatile.Read(ref b.State) == 0) Volatile.Write(ref b.ExpiresAt, 0);
            return;
        }
        Volatile.Write(ref b.ExpiresAt, 0); // the key may be in debt now: its next check asks the store
        if (!_backend.IsConnected || Environment.TickCount64 < Volatile.Read(ref _storeBackoffUntilMs))
        {
            _backend.ReportFailure(null);
            Counters.StoreFailures.Increment();
            _storeErrors.Inc();
            if (Definition.OnStoreFailure == StoreFailureMode.Local) _fallback.Charge(key, rest, timestamp);
            return;
        }
        _ = ChargeStoreAsync(b, key.ToArray(), rest, timestamp);
    }

    /// <summary>KEYS[1] = bucket; ARGV: now µs, T µs, cost. Debits unconditionally; returns TAT−now after.</summary>
    internal const string ChargeScript = """
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + tonumber(ARGV[3]) * t
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return tat - now
""";

    private async Task ChargeStoreAsync(ClusterBucket b, byte[] key, long cost, long timestamp)
    {
        try
        {
            Counters.StoreCalls.Increment();
            RedisResult r = await _backend.EvalAsync(ChargeScript, [RedisKeyOf(b, key)], [NowUs(), _intervalUs, cost])
                .WaitAsync(Definition.StoreTimeout).ConfigureAwait(false);
            Volatile.Write(ref b.RemoteFullAt, timestamp + UsToTs((long)r));
        }
        catch (Exception e)
        {
            Counters.StoreFailures.Increment();
            _storeErrors.Inc();
            if (e is TimeoutException) Volatile.Write(ref _storeBackoffUntilMs, Environment.TickCount64 + _backoffMs);
            _backend.ReportFailure(e);
            if (Definition.OnStoreFailure == StoreFailureMode.Local) _fallback.Charge(key, cost, timestamp);
        }
    }

    private void Record(ClusterBucket b, in GcraReply reply, long now, bool refused)
    {
        Volatile.Write(ref b.RemoteRemaining, Math.Max(0, reply.Available));
        Volatile.Write(ref b.RemoteFullAt, now + UsToTs(reply.TatMinusNowUs));
        if (refused) Volatile.Write(ref b.DeniedUntil, now + UsToTs(reply.RetryUs));
    }

    private void Deposit(ClusterBucket b, long tokens, long now)
    {
        if (tokens <= 0) return;
        Volatile.Write(ref b.ExpiresAt, now + _lifetime);
        while (true)
        {
            long cur = Volatile.Read(ref b.State);
            if (cur == Bucket.Evicted) return; // the tokens are dropped: under-admission only
            if (Interlocked.CompareExchange(ref b.State, cur + tokens, cur) == cur) return;
        }
    }

    private RateLimitDecision StoreFailed(ReadOnlySpan<byte> key, long cost, long now, bool countFailure)
    {
        if (countFailure)
        {
            Counters.StoreFailures.Increment();
            _storeErrors.Inc();
        }
        if (Definition.OnStoreFailure == StoreFailureMode.Local)
        {
            Counters.StoreFallbackDecisions.Increment();
            RateLimitDecision d = _fallback.Acquire(key, cost);
            if (d.IsAllowed) Counters.Allowed.IncrementRelaxed(); else Counters.Rejected.Increment();
            return d;
        }
        if (Definition.OnStoreFailure == StoreFailureMode.Allow)
        {
            // fail open: admitted without counting anywhere (the operator chose availability over the limit)
            return AdmitWithoutStore(_burst);
        }
        return RefuseWithoutStore(_burst);
    }

    private RedisKey RedisKeyOf(ClusterBucket b, byte[]? key) =>
        Volatile.Read(ref b.RedisKey) ?? PrefixedKey(ref b.RedisKey, _prefix, key ?? b.KeyToArray());

    private long NowUs() => (Time.GetUtcNow().UtcTicks - DateTime.UnixEpoch.Ticks) / 10;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long UsToTs(long us) => us <= 0 ? 0 : (long)((Int128)us * Frequency / 1_000_000);

    public bool TryMarkEvicted(ClusterBucket bucket, long now)
    {
        if (Volatile.Read(ref bucket.Refilling) != 0 || now < Volatile.Read(ref bucket.DeniedUntil)) return false;
        long tokens = Volatile.Read(ref bucket.State);
        if (tokens == Bucket.Evicted || (tokens > 0 && now < Volatile.Read(ref bucket.ExpiresAt))) return false;
        return Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, tokens) == tokens;
    }

    /// <summary>Emission interval in timestamp units (for tests).</summary>
    internal long EmissionInterval => _intervalTs;
}
