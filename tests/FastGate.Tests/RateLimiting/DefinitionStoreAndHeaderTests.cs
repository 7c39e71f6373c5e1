using System.Text;
using FastGate.RateLimiting;
using Xunit;

namespace FastGate.Tests.RateLimiting;

public class RateLimiterDefinitionTests
{
    [Fact]
    public void Create_InvalidSettings_ReportsEveryProblemWithoutThrowing()
    {
        var errors = new List<string>();
        var d = RateLimiterDefinition.Create(errors, "bad id", RateLimitAlgorithm.Gcra, 0, TimeSpan.Zero, burst: -1, maxKeys: 0,
            rejectStatusCode: 200, storeTimeout: TimeSpan.FromMinutes(5));
        Assert.Null(d);
        Assert.Contains(errors, e => e.Contains("id may contain"));
        Assert.Contains(errors, e => e.Contains("rate must be at least 1"));
        Assert.Contains(errors, e => e.Contains("burst must be at least 1"));
        Assert.Contains(errors, e => e.Contains("per must be at least 1ms"));
        Assert.Contains(errors, e => e.Contains("maxKeys"));
        Assert.Contains(errors, e => e.Contains("status code"));
        Assert.Contains(errors, e => e.Contains("storeTimeout"));
    }

    [Fact]
    public void Create_ClusterConcurrency_IsAccepted_ClusterSlidingWindowIsRejected()
    {
        // cluster concurrency limits are leases in Redis (ClusterModeTests); the sliding window has no cluster form
        var errors = new List<string>();
        Assert.NotNull(RateLimiterDefinition.Create(errors, "c", RateLimitAlgorithm.Concurrency, 5, TimeSpan.FromSeconds(1), scope: RateLimitScope.Cluster));
        Assert.Empty(errors);
        Assert.Null(RateLimiterDefinition.Create(errors, "w", RateLimitAlgorithm.SlidingWindow, 5, TimeSpan.FromSeconds(1), scope: RateLimitScope.Cluster));
        Assert.Single(errors);
    }

    [Fact]
    public void EqualSettings_AreEqualDefinitions()
    {
        var a = Defs.Make(RateLimitAlgorithm.Gcra, 100, TimeSpan.FromSeconds(1), burst: 100);
        var b = Defs.Make(RateLimitAlgorithm.Gcra, 100, TimeSpan.FromSeconds(1), burst: 100);
        var c = Defs.Make(RateLimitAlgorithm.Gcra, 100, TimeSpan.FromSeconds(1), burst: 101);
        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, c);
    }
}

public class RateLimiterStoreTests
{
    [Fact]
    public void Reload_WithAnUnchangedDefinition_KeepsState_AndAChangedOneStartsFresh()
    {
        var time = FakeTime.Create();
        using var store = new RateLimiterStore(time);
        var v1 = store.GetOrCreate(Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(60), burst: 2, id: "per-ip"));
        Assert.True(((GcraRateLimiter)v1).Acquire("1.2.3.4"u8).IsAllowed);
        Assert.True(((GcraRateLimiter)v1).Acquire("1.2.3.4"u8).IsAllowed);

        // Reload: the configuration is compiled again into new, equal definition objects.
        var same = store.GetOrCreate(Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(60), burst: 2, id: "per-ip"));
        Assert.Same(v1, same);
        Assert.False(((GcraRateLimiter)same).Acquire("1.2.3.4"u8).IsAllowed);

        var changed = store.GetOrCreate(Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(60), burst: 3, id: "per-ip"));
        Assert.NotSame(v1, changed);
        Assert.True(((GcraRateLimiter)changed).Acquire("1.2.3.4"u8).IsAllowed);
        Assert.Equal(1, store.Retain([changed.Definition]));
        Assert.Single(store.Limiters);
    }

    [Fact]
    public void ClusterDefinition_WithoutRedis_IsAnError()
    {
        using var store = new RateLimiterStore(FakeTime.Create());
        var errors = new List<string>();
        var def = Defs.Make(RateLimitAlgorithm.Gcra, 1, TimeSpan.FromSeconds(1), scope: RateLimitScope.Cluster);
        Assert.Null(store.GetOrCreate(def, errors));
        Assert.Contains("redis", errors.Single());
    }
}

public class RateLimitHeadersTests
{
    private static string Write(in RateLimitDecision d, RateLimiterDefinition def)
    {
        Span<byte> buf = stackalloc byte[RateLimitHeaders.MaxLength(def)];
        int n = RateLimitHeaders.Write(buf, in d, def);
        Assert.True(n >= 0);
        return Encoding.ASCII.GetString(buf.Slice(0, n));
    }

    [Fact]
    public void Rejection_WritesRetryAfterPolicyAndRateLimit_AndLegacyWhenOn()
    {
        var time = FakeTime.Create();
        var def = Defs.Make(RateLimitAlgorithm.Gcra, 100, TimeSpan.FromSeconds(1), burst: 100, id: "per-ip", legacyHeaders: true);
        var limiter = new GcraRateLimiter(def, time);
        limiter.Acquire("k"u8, 100);
        var r = limiter.Acquire("k"u8);
        Assert.Equal(
            "Retry-After: 1\r\n" +
            "RateLimit-Policy: \"per-ip\";q=100;w=1\r\n" +
            "RateLimit: \"per-ip\";r=0;t=1\r\n" +
            "X-RateLimit-Limit: 100\r\n" +
            "X-RateLimit-Remaining: 0\r\n" +
            "X-RateLimit-Reset: 1\r\n", Write(in r, def));
        Assert.Equal("{\"error\":\"too_many_requests\",\"status\":429}\n", Encoding.ASCII.GetString(RateLimitResponses.BodyFor(in r)));
    }

    [Fact]
    public void Allowed_WritesQuotaOnlyWhenConfigured_WithoutAllocating()
    {
        var time = FakeTime.Create();
        var quiet = Defs.Make(RateLimitAlgorithm.Gcra, 10, TimeSpan.FromSeconds(1), burst: 20, id: "q");
        var loud = Defs.Make(RateLimitAlgorithm.Gcra, 10, TimeSpan.FromSeconds(1), burst: 20, id: "l", quotaHeaders: true);
        var d = new GcraRateLimiter(loud, time).Acquire("k"u8);
        Assert.Equal("", Write(in d, quiet));
        Assert.Equal("RateLimit-Policy: \"l\";q=20;w=2\r\nRateLimit: \"l\";r=19;t=1\r\n", Write(in d, loud));
        Span<byte> buf = stackalloc byte[256];
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) RateLimitHeaders.Write(buf, in d, loud);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(-1, RateLimitHeaders.Write(buf.Slice(0, 10), in d, loud));
    }
}
