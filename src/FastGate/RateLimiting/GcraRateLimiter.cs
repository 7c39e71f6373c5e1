namespace FastGate.RateLimiting;

/// <summary>
/// Generic cell rate algorithm (token-bucket semantics): each bucket is its theoretical arrival time (TAT) in
/// TimeProvider timestamp units, one 64-bit word updated with CompareExchange. A request of cost c at time now is
/// admitted when max(TAT, now) + c·T − now ≤ τ, where T = per / rate (rounded up to a timestamp unit, so the limiter
/// never admits more than burst + rate × elapsed) and τ = burst · T. TAT = 0 (or any TAT ≤ now) is a full bucket.
/// </summary>
public sealed class GcraRateLimiter : LocalRateLimiter<Bucket>
{
    private readonly long _interval;   // T
    private readonly long _tolerance;  // τ = burst · T
    private readonly long _burst;

    public GcraRateLimiter(RateLimiterDefinition definition, TimeProvider time) : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.Gcra) throw new ArgumentException("not a gcra definition", nameof(definition));
        _interval = Math.Max(1, ToTimestampUnitsCeil(definition.Per.Ticks, Frequency, definition.Rate));
        _burst = definition.Burst;
        _tolerance = _interval * _burst;
    }

    /// <summary>Emission interval T in timestamp units.</summary>
    public long EmissionInterval => _interval;

    public override bool TryAcquire(Bucket bucket, long cost, long now, out RateLimitDecision decision)
    {
        long t = _interval, tau = _tolerance;
        while (true)
        {
            long tat = Volatile.Read(ref bucket.State);
            if (tat == Bucket.Evicted) { decision = default; return false; }
            long start = tat > now ? tat : now;
            long newTat = start + cost * t;
            long diff = newTat - now;
            if (diff > tau || cost > _burst)
            {
                long available = (tau - (start - now)) / t;
                long retry = cost > _burst ? Definition.Per.Ticks * Frequency / TimeSpan.TicksPerSecond : diff - tau;
                decision = Reject(_burst, available, start - now, retry);
                return true;
            }
            if (Interlocked.CompareExchange(ref bucket.State, newTat, tat) == tat)
            {
                Counters.Allowed.Increment();
                decision = new RateLimitDecision(RateLimitOutcome.Allowed, _burst, (tau - diff) / t, CeilSeconds(diff), 0, 0);
                return true;
            }
        }
    }

    public override bool TryMarkEvicted(Bucket bucket, long now)
    {
        long tat = Volatile.Read(ref bucket.State);
        return tat != Bucket.Evicted && tat <= now && Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, tat) == tat;
    }
}
