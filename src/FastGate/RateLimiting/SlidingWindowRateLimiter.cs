namespace FastGate.RateLimiting;

/// <summary>
/// Sliding-window counter: the estimate at position p of window i is prev·(W−p)/W + curr, where prev and curr count
/// windows i−1 and i. State packs [window index: 23 bits][prev: 20 bits][curr: 20 bits] into one 64-bit word (top bit 0)
/// updated with CompareExchange; the comparison is done exactly in integers.
/// </summary>
public sealed class SlidingWindowRateLimiter : LocalRateLimiter<Bucket>
{
    private const int CountBits = 20;
    private const long CountMask = (1L << CountBits) - 1;
    private const long IndexMask = (1L << 23) - 1;

    private readonly long _window; // W in timestamp units
    private readonly long _limit;

    public SlidingWindowRateLimiter(RateLimiterDefinition definition, TimeProvider time) : base(definition, time)
    {
        if (definition.Algorithm != RateLimitAlgorithm.SlidingWindow) throw new ArgumentException("not a slidingWindow definition", nameof(definition));
        _window = Math.Max(1, ToTimestampUnitsCeil(definition.Per.Ticks, Frequency, 1));
        _limit = definition.Rate;
    }

    private static long Pack(long index, long prev, long curr) => ((index & IndexMask) << (2 * CountBits)) | (prev << CountBits) | curr;

    private static void Unpack(long state, long index, out long prev, out long curr)
    {
        long stored = state >> (2 * CountBits);
        long delta = (index - stored) & IndexMask;
        long p = (state >> CountBits) & CountMask, c = state & CountMask;
        if (delta == 0) { prev = p; curr = c; }
        else if (delta == 1) { prev = c; curr = 0; }
        else { prev = 0; curr = 0; }
    }

    public override bool TryAcquire(Bucket bucket, long cost, long now, out RateLimitDecision decision)
    {
        long w = _window, limit = _limit;
        long index = now / w;
        long pos = now - index * w;
        while (true)
        {
            long state = Volatile.Read(ref bucket.State);
            if (state == Bucket.Evicted) { decision = default; return false; }
            Unpack(state, index, out long prev, out long curr);
            // admitted iff prev·(W−pos) + (curr+cost)·W ≤ limit·W
            Int128 used = (Int128)prev * (w - pos) + (Int128)(curr + cost) * w;
            Int128 cap = (Int128)limit * w;
            if (used > cap || cost > limit)
            {
                decision = Reject(limit, (long)((cap - used + (Int128)cost * w) / w), w - pos, RetryDelta(prev, curr, cost, pos));
                return true;
            }
            long next = Pack(index, prev, curr + cost);
            if (Interlocked.CompareExchange(ref bucket.State, next, state) == state)
            {
                Counters.Allowed.IncrementRelaxed();
                decision = new RateLimitDecision(RateLimitOutcome.Allowed, limit, (long)((cap - used) / w), CeilSeconds(w - pos), 0, 0);
                return true;
            }
        }
    }

    /// <summary>Exact time until a request of <paramref name="cost"/> fits (timestamp units).</summary>
    private long RetryDelta(long prev, long curr, long cost, long pos)
    {
        long w = _window, limit = _limit;
        if (cost > limit) return w;
        // Still in this window: need prev·(W−p) ≤ (limit−curr−cost)·W.
        long room = limit - curr - cost;
        if (room >= 0 && prev > 0)
        {
            long p = w - (long)((Int128)room * w / prev);
            if (p < w) return Math.Max(p - pos, 1);
        }
        // Next window: prev' = curr, curr' = 0: need curr·(W−q) ≤ (limit−cost)·W.
        long q = curr == 0 ? 0 : w - (long)((Int128)(limit - cost) * w / curr);
        if (q < 0) q = 0;
        return (w - pos) + q;
    }

    public override bool TryMarkEvicted(Bucket bucket, long now)
    {
        long state = Volatile.Read(ref bucket.State);
        if (state == Bucket.Evicted) return false;
        Unpack(state, now / _window, out long prev, out long curr);
        return prev == 0 && curr == 0 && Interlocked.CompareExchange(ref bucket.State, Bucket.Evicted, state) == state;
    }
}
