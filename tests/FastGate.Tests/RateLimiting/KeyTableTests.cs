using FastGate.RateLimiting;
using Xunit;

namespace FastGate.Tests.RateLimiting;

public class KeyTableTests
{
    [Fact]
    public void Rotating2MillionKeys_StaysBoundedByMaxKeys_AndNeverResetsAThrottledKeyEarly()
    {
        var time = FakeTime.Create();
        const int maxKeys = 100_000;
        // 10/s, burst 10: T = 100 ms; a bucket used once is full again 100 ms later.
        var limiter = new GcraRateLimiter(Defs.Make(RateLimitAlgorithm.Gcra, 10, TimeSpan.FromSeconds(1), burst: 10, maxKeys: maxKeys), time);
        byte[] victim = "victim"u8.ToArray();
        int victimAdmitted = 0;
        while (limiter.Acquire(victim).IsAllowed) victimAdmitted++;
        Assert.Equal(10, victimAdmitted);

        Span<byte> key = stackalloc byte[8];
        long maxSeen = 0;
        for (int i = 0; i < 2_000_000; i++)
        {
            BitConverter.TryWriteBytes(key, (long)i * 7919 + 1);
            limiter.Acquire(key);
            time.AdvanceTicks(4); // 2M keys over 0.8 s; a key used once is idle again after 250,000 more keys
            if ((i & 1023) == 0) maxSeen = Math.Max(maxSeen, limiter.KeyCount);
        }
        Assert.InRange(limiter.KeyCount, 1, maxKeys);
        Assert.InRange(maxSeen, 1, maxKeys);
        // Keys idle again (250,000 keys later) make room: the table turns over several times.
        Assert.True(limiter.Evictions > 500_000, $"evictions {limiter.Evictions}");
        Assert.True(limiter.OverflowHits > 0, "the table was never full");
        // 0.8 s after draining, the victim has earned exactly 8 tokens, not a fresh burst of 10.
        int after = 0;
        while (limiter.Acquire(victim).IsAllowed) after++;
        Assert.Equal(8, after);
    }

    [Fact]
    public void FullTableOfBusyKeys_SendsNewKeysToTheOverflowBucket_AndCountsIt()
    {
        var time = FakeTime.Create();
        var limiter = new GcraRateLimiter(Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(60), burst: 100, maxKeys: 100), time);
        for (int i = 0; i < 100; i++) Assert.True(limiter.Acquire(Defs.Key(i)).IsAllowed);
        Assert.Equal(100, limiter.KeyCount);
        // Every key is mid-refill: none may be evicted, so new keys share one overflow bucket (burst 100).
        int overflowAdmitted = 0;
        for (int i = 1000; i < 1300; i++) if (limiter.Acquire(Defs.Key(i)).IsAllowed) overflowAdmitted++;
        Assert.Equal(100, overflowAdmitted);
        Assert.Equal(300, limiter.OverflowHits);
        Assert.Equal(100, limiter.KeyCount);
        Assert.Equal(0, limiter.Evictions);
        // Existing keys still have their own buckets.
        Assert.Equal(98, limiter.Acquire(Defs.Key(5)).Remaining);
    }

    [Fact]
    public void NewKey_CostsAboutOneSmallObject()
    {
        var time = FakeTime.Create();
        var limiter = new GcraRateLimiter(Defs.Make(RateLimitAlgorithm.Gcra, 10, TimeSpan.FromSeconds(1), maxKeys: 200_000), time);
        Span<byte> ip = stackalloc byte[16];
        limiter.Acquire(ip);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 1; i <= 100_000; i++)
        {
            BitConverter.TryWriteBytes(ip, i);
            limiter.Acquire(ip);
        }
        double perKey = (GC.GetAllocatedBytesForCurrentThread() - before) / 100_000.0;
        // One 56-byte bucket (16-byte keys inline) + the slot arrays' growth (8 bytes/slot, load <= 0.5, doubling).
        Assert.InRange(perKey, 56, 120);
    }

    [Fact]
    public void ConcurrentInsertsOfTheSameKeys_NeverCreateDuplicates()
    {
        var time = FakeTime.Create();
        var limiter = new GcraRateLimiter(Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(1), burst: 1, maxKeys: 10_000), time);
        int admitted = 0;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < 5_000; i++)
                if (limiter.Acquire(Defs.Key(i)).IsAllowed) Interlocked.Increment(ref admitted);
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Equal(5_000, admitted); // burst 1 per key: one admission each, whichever thread came first
        Assert.Equal(5_000, limiter.KeyCount);
    }
}
