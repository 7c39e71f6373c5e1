using System.Runtime.CompilerServices;

namespace FastGate.RateLimiting;

/// <summary>
/// A compiled limiter with its live state. One instance per distinct <see cref="RateLimiterDefinition"/>, obtained from a
/// <see cref="RateLimiterStore"/>. Thread-safe; the acquire paths take no locks for keys already in the table.
/// </summary>
public abstract class RateLimiter : IDisposable
{
    protected RateLimiter(RateLimiterDefinition definition, TimeProvider time)
    {
        Definition = definition;
        Time = time;
        Frequency = time.TimestampFrequency;
    }

    public RateLimiterDefinition Definition { get; }
    public RateLimiterCounters Counters { get; } = new();
    /// <summary>The clock of this limiter (the store's): timestamps passed to the acquire overloads come from it.</summary>
    public TimeProvider Time { get; }
    protected long Frequency { get; }

    /// <summary>Keys in the table (bounded by MaxKeys).</summary>
    public abstract long KeyCount { get; }
    /// <summary>New keys that found the table full and shared the overflow bucket.</summary>
    public abstract long OverflowHits { get; }
    /// <summary>Idle buckets removed from the table.</summary>
    public abstract long Evictions { get; }

    /// <summary>
    /// Charges <paramref name="cost"/> to <paramref name="key"/>. Completes synchronously (no allocation) for local limiters
    /// and for cluster limiters that hold a local allowance; otherwise waits for the store at most its timeout.
    /// For concurrency limiters, an allowed decision holds a lease: call <see cref="Release"/> exactly once when the
    /// response completes or the client goes away.
    /// </summary>
    public ValueTask<RateLimitDecision> AcquireAsync(ReadOnlySpan<byte> key, long cost = 1) => AcquireAsync(key, cost, Time.GetTimestamp());

    /// <summary>
    /// Like <see cref="AcquireAsync(ReadOnlySpan{byte}, long)"/> at <paramref name="timestamp"/>: a value of
    /// <see cref="Time"/>.GetTimestamp() read once per request and shared by every limiter the request meets.
    /// </summary>
    public abstract ValueTask<RateLimitDecision> AcquireAsync(ReadOnlySpan<byte> key, long cost, long timestamp);

    /// <summary>A request that has no value for the limiter's key: follows the definition's missingKey behaviour.</summary>
    public abstract ValueTask<RateLimitDecision> AcquireWithoutKeyAsync(long cost = 1);

    /// <summary>
    /// Charges <paramref name="cost"/> after the fact, admitted or not (a token quota charges what a response used):
    /// the key may go into debt, and is refused until the rate has paid it back. Only GCRA limiters can.
    /// </summary>
    public virtual void Charge(ReadOnlySpan<byte> key, long cost, long timestamp) =>
        throw new NotSupportedException($"limiter '{Definition.Id}' ({Definition.Algorithm}) cannot charge after the fact; token limits use gcra");

    /// <summary>Releases a concurrency lease held by <paramref name="decision"/>; no-op for other limiters and rejections.</summary>
    public virtual void Release(in RateLimitDecision decision) { }

    /// <summary>The store is down and the operator chose availability (onStoreFailure: allow): admitted, counted nowhere.</summary>
    protected RateLimitDecision AdmitWithoutStore(long limit)
    {
        Counters.StoreFallbackDecisions.Increment();
        Counters.Allowed.IncrementRelaxed();
        return new RateLimitDecision(RateLimitOutcome.Allowed, limit, limit, 0, 0, 0);
    }

    /// <summary>The store is down and the limit may not be decided without it (onStoreFailure: deny): 503, Retry-After 1.</summary>
    protected RateLimitDecision RefuseWithoutStore(long limit)
    {
        Counters.StoreFailureRejections.Increment();
        Counters.Rejected.Increment();
        return new RateLimitDecision(RateLimitOutcome.StoreUnavailable, limit, 0, 0, 1, 503);
    }

    /// <summary>A cluster bucket's Redis key (the limiter's prefix and the bucket's key), made once and kept in
    /// <paramref name="cached"/>.</summary>
    protected static byte[] PrefixedKey(ref byte[]? cached, byte[] prefix, byte[] key)
    {
        byte[]? k = Volatile.Read(ref cached);
        if (k is not null) return k;
        k = [.. prefix, .. key];
        Volatile.Write(ref cached, k);
        return k;
    }

    /// <summary>Evicts idle keys now (for a background timer; eviction also happens on demand when the table is full).</summary>
    public abstract int Sweep();

    public virtual void Dispose() { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected long CeilSeconds(long timestampDelta) =>
        timestampDelta <= 0 ? 0 : (timestampDelta + Frequency - 1) / Frequency;

    /// <summary>Converts a TimeSpan to timestamp units, rounding up.</summary>
    protected static long ToTimestampUnitsCeil(long timeSpanTicks, long frequency, long divisor)
    {
        Int128 num = (Int128)timeSpanTicks * frequency;
        Int128 den = (Int128)TimeSpan.TicksPerSecond * divisor;
        Int128 q = (num + den - 1) / den;
        return q > long.MaxValue / 4 ? long.MaxValue / 4 : (long)q;
    }

    protected RateLimitDecision Reject(long limit, long remaining, long resetDelta, long retryDelta)
    {
        Counters.Rejected.Increment();
        return new RateLimitDecision(RateLimitOutcome.Rejected, limit, remaining, CeilSeconds(resetDelta),
            Math.Max(1, CeilSeconds(retryDelta)), Definition.RejectStatusCode);
    }

    protected RateLimitDecision MissingKeyDecision(out bool useSharedBucket)
    {
        Counters.MissingKey.Increment();
        useSharedBucket = false;
        switch (Definition.MissingKey)
        {
            case MissingKeyBehavior.Allow:
                return RateLimitDecision.NotLimited;
            case MissingKeyBehavior.Deny:
                Counters.Rejected.Increment();
                return new RateLimitDecision(RateLimitOutcome.MissingKeyRejected, Definition.HeaderLimit, 0, 0, 0,
                    Definition.RejectStatusCode);
            default:
                useSharedBucket = true;
                return default;
        }
    }
}

/// <summary>A limiter whose state is all in this process: every acquire completes synchronously.</summary>
public abstract class LocalRateLimiter<TBucket> : RateLimiter, IBucketEvictionPolicy<TBucket> where TBucket : Bucket, new()
{
    protected readonly KeyTable<TBucket> Table;
    protected readonly TBucket SharedMissingKeyBucket = new();

    protected LocalRateLimiter(RateLimiterDefinition definition, TimeProvider time) : base(definition, time)
    {
        Table = new KeyTable<TBucket>(definition.MaxKeys, this, time);
    }

    public override long KeyCount => Table.Count;
    public override long OverflowHits => Table.OverflowHits;
    public override long Evictions => Table.Evictions;
    public override int Sweep() => Table.Sweep();

    public abstract bool TryMarkEvicted(TBucket bucket, long now);

    /// <summary>Charges <paramref name="cost"/> to <paramref name="key"/> (synchronous, allocation-free for present keys).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public RateLimitDecision Acquire(ReadOnlySpan<byte> key, long cost = 1) => Acquire(key, cost, Time.GetTimestamp());

    /// <summary>
    /// Charges <paramref name="cost"/> at <paramref name="timestamp"/>, a value of this limiter's
    /// <c>TimeProvider.GetTimestamp()</c> read once per request and shared by every limiter the request meets.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public RateLimitDecision Acquire(ReadOnlySpan<byte> key, long cost, long timestamp)
    {
        long now = timestamp;
        TBucket bucket = Table.GetOrAdd(key);
        while (true)
        {
            if (TryAcquire(bucket, cost, now, out RateLimitDecision decision)) return decision;
            bucket = Table.GetOrAdd(key); // the bucket was evicted under us: its replacement is equivalent
        }
    }

    /// <summary>Follows the definition's missingKey behaviour.</summary>
    public RateLimitDecision AcquireWithoutKey(long cost = 1)
    {
        RateLimitDecision d = MissingKeyDecision(out bool shared);
        if (!shared) return d;
        TryAcquire(SharedMissingKeyBucket, cost, Time.GetTimestamp(), out d);
        return d;
    }

    /// <summary>Decides against one bucket at <paramref name="now"/>. Returns false when the bucket was evicted.</summary>
    public abstract bool TryAcquire(TBucket bucket, long cost, long now, out RateLimitDecision decision);

    public override ValueTask<RateLimitDecision> AcquireAsync(ReadOnlySpan<byte> key, long cost, long timestamp) =>
        new(Acquire(key, cost, timestamp));

    public override ValueTask<RateLimitDecision> AcquireWithoutKeyAsync(long cost = 1) => new(AcquireWithoutKey(cost));
}
