using FastGate.RateLimiting;
using Xunit;

namespace FastGate.Tests.RateLimiting;

public class SlidingWindowRateLimiterTests
{
    private static readonly byte[] s_key = "client"u8.ToArray();

    [Fact]
    public void FirstWindow_AdmitsRateThenRejects_UntilTheWindowSlides()
    {
        var time = FakeTime.Create(startTicks: 100 * TimeSpan.TicksPerSecond); // window-aligned
        var limiter = new SlidingWindowRateLimiter(Defs.Make(RateLimitAlgorithm.SlidingWindow, 10, TimeSpan.FromSeconds(1)), time);
        for (int i = 0; i < 10; i++) Assert.Equal(9 - i, limiter.Acquire(s_key).Remaining);
        var r = limiter.Acquire(s_key);
        Assert.False(r.IsAllowed);
        // Next window at position q: estimate = 10·(1−q) + 0 must be ≤ 9 → q ≥ 0.1 s: wait 1.1 s → 2 s.
        Assert.Equal(2, r.RetryAfterSeconds);
        Assert.Equal(1, r.ResetSeconds);
        time.Advance(TimeSpan.FromMilliseconds(1099));
        Assert.False(limiter.Acquire(s_key).IsAllowed);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(limiter.Acquire(s_key).IsAllowed);
    }

    [Fact]
    public void Accuracy_AdmitsExactlyTheWeightedEstimate()
    {
        // Hammer at 10x the rate and compare with a straightforward reference model of the same estimate.
        var time = FakeTime.Create(startTicks: 50 * TimeSpan.TicksPerSecond + 1234);
        const long limit = 50;
        long w = TimeSpan.TicksPerSecond;
        var limiter = new SlidingWindowRateLimiter(Defs.Make(RateLimitAlgorithm.SlidingWindow, limit, TimeSpan.FromSeconds(1)), time);
        var counts = new Dictionary<long, long>();
        long admitted = 0;
        for (int step = 0; step < 20_000; step++)
        {
            long now = time.GetTimestamp();
            long idx = now / w, pos = now % w;
            counts.TryGetValue(idx - 1, out long prev);
            counts.TryGetValue(idx, out long curr);
            bool expected = prev * (w - pos) + (curr + 1) * w <= limit * w;
            bool got = limiter.Acquire(s_key).IsAllowed;
            Assert.Equal(expected, got);
            if (got) { counts[idx] = curr + 1; admitted++; }
            time.AdvanceTicks(2_000); // 0.2 ms: 5,000 requests/s offered against 50/s
        }
        // 20,000 × 0.2 ms = 4 s: the sliding estimate never lets more than limit through in any one window.
        foreach (var (idx, c) in counts) Assert.True(c <= limit, $"window {idx}: {c}");
        Assert.InRange(admitted, 4 * limit - limit / 2, 5 * limit);
    }

    [Fact]
    public void RetryAfter_WaitingItIsEnough_AndOneSecondLessIsNot()
    {
        var time = FakeTime.Create(startTicks: 7_777_777);
        var limiter = new SlidingWindowRateLimiter(Defs.Make(RateLimitAlgorithm.SlidingWindow, 5, TimeSpan.FromSeconds(3)), time);
        var rnd = new Random(7);
        for (int round = 0; round < 300; round++)
        {
            while (limiter.Acquire(s_key).IsAllowed) { }
            var r = limiter.Acquire(s_key);
            if (r.RetryAfterSeconds > 1)
            {
                time.AdvanceTicks((r.RetryAfterSeconds - 1) * TimeSpan.TicksPerSecond);
                Assert.False(limiter.Acquire(s_key).IsAllowed);
                time.AdvanceTicks(TimeSpan.TicksPerSecond);
            }
            else time.AdvanceTicks(TimeSpan.TicksPerSecond);
            Assert.True(limiter.Acquire(s_key).IsAllowed, $"round {round}");
            time.AdvanceTicks(rnd.NextInt64(0, 2 * TimeSpan.TicksPerSecond));
        }
    }

    [Fact]
    public void IdleKey_IsEvictedOnlyAfterBothWindowsPass()
    {
        var time = FakeTime.Create(startTicks: 10 * TimeSpan.TicksPerSecond);
        var limiter = new SlidingWindowRateLimiter(Defs.Make(RateLimitAlgorithm.SlidingWindow, 5, TimeSpan.FromSeconds(1)), time);
        limiter.Acquire(s_key);
        time.Advance(TimeSpan.FromMilliseconds(1500));
        Assert.Equal(0, limiter.Sweep());
        time.Advance(TimeSpan.FromMilliseconds(500));
        Assert.Equal(1, limiter.Sweep());
        Assert.Equal(0, limiter.KeyCount);
    }
}

public class ConcurrencyRateLimiterTests
{
    private static readonly byte[] s_key = "consumer-1"u8.ToArray();

    [Fact]
    public void Leases_LimitInFlight_AndReleaseFreesTheSlot()
    {
        var time = FakeTime.Create();
        var limiter = new ConcurrencyRateLimiter(Defs.Make(RateLimitAlgorithm.Concurrency, 2, TimeSpan.FromSeconds(1)), time);
        var a = limiter.Acquire(s_key);
        var b = limiter.Acquire(s_key);
        var c = limiter.Acquire(s_key);
        Assert.True(a.IsAllowed && b.IsAllowed);
        Assert.False(c.IsAllowed);
        Assert.False(c.Lease.IsHeld);
        Assert.Equal(2, limiter.InFlight(s_key));
        limiter.Release(in a);
        limiter.Release(in c); // a rejection holds nothing: no-op
        Assert.Equal(1, limiter.InFlight(s_key));
        var d = limiter.Acquire(s_key);
        Assert.True(d.IsAllowed);
        Assert.Equal(0, d.Remaining);
        b.Lease.Release();
        d.Lease.Release();
        Assert.Equal(0, limiter.InFlight(s_key));
        Assert.Equal(1, limiter.Sweep()); // nothing in flight: the key may go
    }

    [Fact]
    public void ManyThreads_NeverExceedTheLimit_AndAllSlotsComeBack()
    {
        var time = FakeTime.Create();
        const int limit = 3;
        var limiter = new ConcurrencyRateLimiter(Defs.Make(RateLimitAlgorithm.Concurrency, limit, TimeSpan.FromSeconds(1)), time);
        int inside = 0, maxInside = 0;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < 50_000; i++)
            {
                var d = limiter.Acquire(s_key);
                if (!d.IsAllowed) continue;
                int n = Interlocked.Increment(ref inside);
                int m;
                while (n > (m = Volatile.Read(ref maxInside)) && Interlocked.CompareExchange(ref maxInside, n, m) != m) { }
                Interlocked.Decrement(ref inside);
                limiter.Release(in d);
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.InRange(maxInside, 1, limit);
        Assert.Equal(0, limiter.InFlight(s_key));
    }
}
