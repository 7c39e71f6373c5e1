namespace FastGate.RateLimiting;

/// <summary>
/// Generic cell rate algorithm (token-bucket semantics): each bucket is its theoretical arrival time (TAT), one 64-bit
/// word updated with CompareExchange. A request of cost c at time now is admitted when max(TAT, now) + c·T − now ≤ τ,
/// with T = per / rate and τ = burst · T. A TAT at or before now is a full bucket (0 is the initial state).
/// Time is kept exactly as scaled timestamps: s = (timestamp − epoch) · R with T = P / R as a reduced fraction of
/// timestamp units, so steady traffic at the rate is never rejected and the limiter never admits more than
/// burst + rate × elapsed. When R would exceed 16 (rates that do not divide the clock finely), T is rounded up to a
/// whole timestamp unit instead (R = 1; error below one timestamp unit — 1 ns on Linux — per request, always strict).
/// </summary>
public sealed class GcraRateLimiter : LocalRateLimiter<Bucket>
{
    private readonly long _interval;   // T in scaled units (P)
    private readonly long _scale;      // R
    private readonly long _tolerance;  // τ = burst · T (scaled)
    private readonly long _burst;
    private readonly long _epoch;
    private readonly long _secondScaled; // one second in scaled units
    private readonly DecisionScale _units;

    public GcraRateLimiter(RateLimiterDefinition definition, TimeProvider time) : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.Gcra) throw new ArgumentException("not a gcra definition", nameof(definition));
        // per in timestamp units = per.Ticks * F / 1e7; T = that / rate.
        Int128 num = (Int128)definition.Per.Ticks * Frequency;
        Int128 den = (Int128)TimeSpan.TicksPerSecond * definition.Rate;
        Int128 g = Gcd(num, den);
        num /= g; den /= g;
        if (den <= 16)
        {
            _interval = (long)num;
            _scale = (long)den;
        }
        else
        {
            _interval = Math.Max(1, ToTimestampUnitsCeil(definition.Per.Ticks, Frequency, definition.Rate));
            _scale = 1;
        }
        _burst = definition.Burst;
        _tolerance = _interval * _burst;
        _secondScaled = Frequency * _scale;
        _units = new DecisionScale(_interval, _secondScaled);
        _epoch = time.GetTimestamp() - 1;
    }

    private static Int128 Gcd(Int128 a, Int128 b)
    {
        while (b != 0) (a, b) = (b, a % b);
        return a;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private long CeilScaledSeconds(long delta) => delta <= 0 ? 0 : (delta + _secondScaled - 1) / _secondScaled;

    public override bool TryAcquire(Bucket bucket, long cost, long timestamp, out RateLimitDecision decision)
    {
        long t = _interval, tau = _tolerance;
        long now = (timestamp - _epoch) * _scale;
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
                long retry = cost > _burst ? Definition.Per.Ticks * Frequency / TimeSpan.TicksPerSecond * _scale : diff - tau;
                Counters.Rejected.Increment();
                decision = new RateLimitDecision(RateLimitOutcome.Rejected, _burst, available, CeilScaledSeconds(start - now),
                    Math.Max(1, CeilScaledSeconds(retry)), Definition.RejectStatusCode);
                return true;
            }
            if (Interlocked.CompareExchange(ref bucket.State, newTat, tat) == tat)
            {
                Counters.Allowed.IncrementRelaxed();
                decision = new RateLimitDecision(_burst, tau - diff, diff, _units);
                return true;
            }
        }
    }

    public override void Charge(ReadOnlySpan<byte> key, long cost, long timestamp)
    {
        if (cost <= 0) return;
        long now = (timestamp - _epoch) * _scale;
        // the debt is capped at 16 bursts: enough for any one response, and far from overflow
        long add = Math.Min(cost, 16 * _burst) * _interval;
        var bucket = Table.GetOrAdd(key);
        while (true)
        {
            long tat = Volatile.Read(ref bucket.State);
            if (tat == Bucket.Evicted)
            {
                bucket = Table.GetOrAdd(key);
                continue;
            }
            long start = tat > now ? tat : now;
            if (Interlocked.CompareExchange(ref bucket.State, start + add, tat) == tat) return;
        }
    }

    public override bool TryMarkEvicted(Bucket bucket, long timestamp)
    {
        long now = (timestamp - _epoch) * _scale;
        long tat = Volatile.Read(ref bucket.State);
        return tat != Bucket.Evicted && tat <= now && Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, tat) == tat;
    }
}
