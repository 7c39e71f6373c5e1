namespace FastGate.RateLimiting;

/// <summary>
/// In-flight limiter: each bucket's state is the number of requests (cost units) in flight. An allowed decision holds
/// a lease (<see cref="RateLimitDecision.Lease"/>) that must be released exactly once, when the response completes or
/// the client goes away. A bucket is evicted only when nothing is in flight.
/// </summary>
public sealed class ConcurrencyRateLimiter : LocalRateLimiter<Bucket>
{
    private readonly long _limit;

    public ConcurrencyRateLimiter(RateLimiterDefinition definition, TimeProvider time) : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.Concurrency) throw new ArgumentException("not a concurrency definition", nameof(definition));
        _limit = definition.Rate;
    }

    public override bool TryAcquire(Bucket bucket, long cost, long now, out RateLimitDecision decision)
    {
        while (true)
        {
            long inFlight = Volatile.Read(ref bucket.State);
            if (inFlight == Bucket.Evicted) { decision = default; return false; }
            if (inFlight + cost > _limit)
            {
                Counters.Rejected.Increment();
                decision = new RateLimitDecision(RateLimitOutcome.Rejected, _limit, _limit - inFlight, 0, 1, Definition.RejectStatusCode);
                return true;
            }
            if (Interlocked.CompareExchange(ref bucket.State, inFlight + cost, inFlight) == inFlight)
            {
                Counters.Allowed.IncrementRelaxed();
                decision = new RateLimitDecision(RateLimitOutcome.Allowed, _limit, _limit - inFlight - cost, 0, 0, 0,
                    new RateLimitLease(bucket, cost));
                return true;
            }
        }
    }

    public override void Release(in RateLimitDecision decision) => decision.Lease.Release();

    /// <summary>In-flight count for a key (0 when absent). Diagnostics and tests.</summary>
    public long InFlight(ReadOnlySpan<byte> key)
    {
        Bucket? b = Table.Find(key);
        long v = b is null ? 0 : Volatile.Read(ref b.State);
        return v == Bucket.Evicted ? 0 : v;
    }

    public override bool TryMarkEvicted(Bucket bucket, long now) =>
        Volatile.Read(ref bucket.State) == 0 && Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, 0) == 0;
}

/// <summary>A concurrency slot held by an allowed request. Release exactly once (copies share the slot).</summary>
public readonly struct RateLimitLease
{
    private readonly Bucket? _bucket;
    private readonly long _cost;

    internal RateLimitLease(Bucket bucket, long cost)
    {
        _bucket = bucket;
        _cost = cost;
    }

    public bool IsHeld => _bucket is not null;
    internal Bucket? Bucket => _bucket;
    internal long Cost => _cost;

    public void Release()
    {
        if (_bucket is not null) Interlocked.Add(ref _bucket.State, -_cost);
    }
}
