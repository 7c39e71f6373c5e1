using System.Diagnostics;
using FastGate.RateLimiting;
using Xunit;
using Xunit.Abstractions;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.RateLimiting;

/// <summary>Cluster limiters against a real redis-server (time for the limits is injected; Redis I/O is real).</summary>
public class ClusterRateLimiterTests(ITestOutputHelper output)
{
    private static readonly byte[] s_key = "203.0.113.7"u8.ToArray();

    private static RateLimiterDefinition ClusterDef(long rate, TimeSpan per, long burst, StoreFailureMode mode, TimeSpan timeout) =>
        Defs.Make(RateLimitAlgorithm.Gcra, rate, per, burst: burst, id: "cluster", scope: RateLimitScope.Cluster,
            onStoreFailure: mode, storeTimeout: timeout);

    // a reconnect inside StackExchange.Redis has no signal of its own: poll it
    private static Task WaitUntil(Func<bool> condition, string what) => Eventually.WaitUntilAsync(condition, what, TimeSpan.FromSeconds(20));

    [Fact]
    public async Task TokenQuota_TwoGateways_ChecksTakeNoAllowance_RedisHoldsExactlyTheTokensCharged()
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create();
        using var backendA = RedisRateLimitBackend.Connect(redis.Configuration);
        using var backendB = RedisRateLimitBackend.Connect(redis.Configuration);
        using var storeA = new RateLimiterStore(time, backendA);
        using var storeB = new RateLimiterStore(time, backendB);
        // 1,000 tokens refilled at 1 an hour (the clock moves by seconds only: no refill); the default allowance of
        // 1 % would be batches of 10 tokens
        var def = ClusterDef(1, TimeSpan.FromHours(1), 1000, StoreFailureMode.Deny, TimeSpan.FromSeconds(5));
        var a = storeA.GetOrCreate(def);
        var b = storeB.GetOrCreate(def);

        async Task<long> SettledRemaining(RateLimiter on, long expected)
        {
            long seen = -1;
            await Eventually.WaitUntilAsync(async () => (seen = (await on.AcquireAsync(s_key, 0)).Remaining) <= expected,
                $"the charges to reach the store ({expected} tokens left)", describe: () => $"{seen} left");
            return seen;
        }

        // a call on A outlives the allowance lifetime (1 s), as LLM calls do, and reports 7 tokens
        var check = await a.AcquireAsync(s_key, 0);
        Assert.Equal(RateLimitOutcome.Allowed, check.Outcome);
        Assert.Equal(1000, check.Remaining);
        time.Advance(TimeSpan.FromSeconds(2));
        a.Charge(s_key, 7, time.GetTimestamp());
        Assert.Equal(993, await SettledRemaining(b, 993)); // B sees exactly A's 7: no allowance was taken and lost

        // a quick call on B (5 tokens), then one that spends the rest exactly: still admitted at 0 left, not in debt
        Assert.True((await b.AcquireAsync(s_key, 0)).IsAllowed);
        b.Charge(s_key, 5, time.GetTimestamp());
        Assert.Equal(988, await SettledRemaining(a, 988));
        a.Charge(s_key, 988, time.GetTimestamp());
        Assert.Equal(0, await SettledRemaining(b, 0));
        Assert.True((await a.AcquireAsync(s_key, 0)).IsAllowed);

        // one token of debt: refused on both, until the rate pays it back (1 token = 1 h)
        b.Charge(s_key, 1, time.GetTimestamp());
        RateLimitDecision refusal = default;
        await Eventually.WaitUntilAsync(async () => !(refusal = await a.AcquireAsync(s_key, 0)).IsAllowed, "the debt to reach the store");
        Assert.Equal(RateLimitOutcome.Rejected, refusal.Outcome);
        Assert.Equal(3600, refusal.RetryAfterSeconds);
        var onB = await b.AcquireAsync(s_key, 0);
        Assert.Equal(RateLimitOutcome.Rejected, onB.Outcome);
        Assert.Equal(3600, onB.RetryAfterSeconds);
        long calls = a.Counters.StoreCalls.Value;
        Assert.False((await a.AcquireAsync(s_key, 0)).IsAllowed); // remembered: no store call until the debt is paid
        Assert.Equal(calls, a.Counters.StoreCalls.Value);
        Assert.Equal(0, a.Counters.StoreFailures.Value + b.Counters.StoreFailures.Value);
    }

    [Theory]
    [InlineData(0.01)] // batch of 1 token (the default share of a burst of 100)
    [InlineData(0.05)] // batch of 5 tokens
    public async Task TwoGateways_SharingOneLimit_AdmitAtMost105PercentTogether(double allowanceFraction)
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create(); // both gateways see one (synchronised) clock
        var options = new RedisClusterOptions { AllowanceFraction = allowanceFraction };
        using var backendA = RedisRateLimitBackend.Connect(redis.Configuration, options);
        using var backendB = RedisRateLimitBackend.Connect(redis.Configuration, options);
        using var storeA = new RateLimiterStore(time, backendA);
        using var storeB = new RateLimiterStore(time, backendB);
        // 100/s, burst 100; deny on store failure so a failure could never inflate the count.
        var def = ClusterDef(100, TimeSpan.FromSeconds(1), 100, StoreFailureMode.Deny, TimeSpan.FromSeconds(5));
        var a = storeA.GetOrCreate(def);
        var b = storeB.GetOrCreate(def);

        long admitted = 0, requests = 0;
        const int steps = 1000; // 10 s in 10 ms steps, each gateway offered 300 requests/s: 6x the limit together
        for (int step = 0; step < steps; step++)
        {
            for (int i = 0; i < 3; i++)
            {
                if ((await a.AcquireAsync(s_key)).IsAllowed) admitted++;
                if ((await b.AcquireAsync(s_key)).IsAllowed) admitted++;
                requests += 2;
            }
            time.Advance(TimeSpan.FromMilliseconds(10));
        }
        long limit = 100 + 100 * 10;
        long waits = a.Counters.StoreWaits.Value + b.Counters.StoreWaits.Value;
        long calls = a.Counters.StoreCalls.Value + b.Counters.StoreCalls.Value;
        output.WriteLine($"admitted {admitted} of {requests}, shared limit {limit} ({100.0 * admitted / limit:F1}%), " +
                         $"store calls {calls}, requests that waited for the store {waits}");
        Assert.Equal(0, a.Counters.StoreFailures.Value + b.Counters.StoreFailures.Value);
        Assert.True(admitted <= limit * 105 / 100, $"admitted {admitted} > 105% of {limit}");
        Assert.True(admitted >= limit * 90 / 100, $"admitted only {admitted} of {limit}");
    }

    [Fact]
    public async Task SteadyTrafficBelowTheLimit_IsServedFromTheLocalAllowance()
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create();
        using var backend = RedisRateLimitBackend.Connect(redis.Configuration, new RedisClusterOptions { AllowanceFraction = 0.1 });
        using var store = new RateLimiterStore(time, backend);
        var limiter = (ClusterGcraRateLimiter)store.GetOrCreate(ClusterDef(1000, TimeSpan.FromSeconds(1), 1000, StoreFailureMode.Deny, TimeSpan.FromSeconds(5)));
        Assert.Equal(100, limiter.BatchSize);
        int rejected = 0;
        for (int i = 0; i < 5000; i++)
        {
            var d = limiter.AcquireAsync(s_key);
            if (!(await d).IsAllowed) rejected++;
            time.Advance(TimeSpan.FromMilliseconds(2)); // 500/s against 1000/s
            if (i % 50 == 0) await Task.Yield(); // give background refills a chance to land
        }
        output.WriteLine($"store calls {limiter.Counters.StoreCalls.Value}, waits {limiter.Counters.StoreWaits.Value}");
        Assert.Equal(0, rejected);
        Assert.True(limiter.Counters.StoreWaits.Value < 500, $"{limiter.Counters.StoreWaits.Value} of 5000 requests waited for Redis");
    }

    [Fact]
    public async Task RedisKilled_WithLocal_FallsBackToALocalLimiterAtTheSameRate_ThenRecovers()
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create();
        using var backend = RedisRateLimitBackend.Connect(redis.Configuration);
        using var store = new RateLimiterStore(time, backend);
        var limiter = store.GetOrCreate(ClusterDef(1, TimeSpan.FromSeconds(60), 5, StoreFailureMode.Local, TimeSpan.FromMilliseconds(500)));

        for (int i = 0; i < 5; i++) Assert.True((await limiter.AcquireAsync(s_key)).IsAllowed);
        Assert.False((await limiter.AcquireAsync(s_key)).IsAllowed);
        Assert.Equal(0, limiter.Counters.StoreFailures.Value);

        redis.Kill();
        await WaitUntil(() => !backend.IsConnected, "the client notices Redis is gone");
        byte[] other = "198.51.100.1"u8.ToArray();
        int admitted = 0;
        for (int i = 0; i < 20; i++) if ((await limiter.AcquireAsync(other)).IsAllowed) admitted++;
        Assert.Equal(5, admitted); // the local fallback enforces the same burst
        Assert.True(limiter.Counters.StoreFailures.Value >= 20);
        Assert.Equal(20, limiter.Counters.StoreFallbackDecisions.Value);

        redis.Start(); // same port, empty (no persistence): the script must be loaded again
        await WaitUntil(() => backend.IsConnected, "the client reconnects by itself");
        long fallbacks = limiter.Counters.StoreFallbackDecisions.Value;
        long calls = limiter.Counters.StoreCalls.Value;
        byte[] third = "192.0.2.55"u8.ToArray();
        for (int i = 0; i < 5; i++) Assert.True((await limiter.AcquireAsync(third)).IsAllowed);
        Assert.False((await limiter.AcquireAsync(third)).IsAllowed);
        Assert.Equal(fallbacks, limiter.Counters.StoreFallbackDecisions.Value);
        Assert.True(limiter.Counters.StoreCalls.Value > calls);
    }

    [Fact]
    public async Task RedisKilled_WithDeny_Rejects503_ThenRecovers()
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create();
        using var backend = RedisRateLimitBackend.Connect(redis.Configuration);
        using var store = new RateLimiterStore(time, backend);
        var limiter = store.GetOrCreate(ClusterDef(10, TimeSpan.FromSeconds(1), 10, StoreFailureMode.Deny, TimeSpan.FromMilliseconds(500)));
        Assert.True((await limiter.AcquireAsync(s_key)).IsAllowed);

        redis.Kill();
        await WaitUntil(() => !backend.IsConnected, "the client notices Redis is gone");
        time.Advance(TimeSpan.FromSeconds(5)); // any local allowance has expired
        var d = await limiter.AcquireAsync(s_key);
        Assert.Equal(RateLimitOutcome.StoreUnavailable, d.Outcome);
        Assert.Equal(503, d.StatusCode);
        Assert.Equal(1, d.RetryAfterSeconds);
        Assert.Equal(1, limiter.Counters.StoreFailureRejections.Value);

        redis.Start();
        await WaitUntil(() => backend.IsConnected, "the client reconnects by itself");
        Assert.True((await limiter.AcquireAsync(s_key)).IsAllowed);
    }

    [LinuxFact] // SIGSTOP and SIGCONT
    public async Task FrozenRedis_NoRequestWaitsLongerThanTheStoreTimeout()
    {
        using var redis = new RedisServerProcess();
        var time = FakeTime.Create();
        using var backend = RedisRateLimitBackend.Connect(redis.Configuration);
        using var store = new RateLimiterStore(time, backend);
        var limiter = store.GetOrCreate(ClusterDef(10, TimeSpan.FromSeconds(1), 10, StoreFailureMode.Deny, TimeSpan.FromMilliseconds(200)));
        Assert.True((await limiter.AcquireAsync(s_key)).IsAllowed);
        time.Advance(TimeSpan.FromSeconds(5));

        redis.Pause();
        try
        {
            var sw = Stopwatch.StartNew();
            var d = await limiter.AcquireAsync("fresh-key"u8.ToArray());
            sw.Stop();
            output.WriteLine($"frozen store answered in {sw.ElapsedMilliseconds} ms");
            Assert.Equal(RateLimitOutcome.StoreUnavailable, d.Outcome);
            // Within the backoff window the next requests do not even try the store.
            var d2 = await limiter.AcquireAsync("another-key"u8.ToArray());
            Assert.Equal(RateLimitOutcome.StoreUnavailable, d2.Outcome);
            Assert.Equal(2, limiter.Counters.StoreCalls.Value); // the first request's, then the frozen one's
            Assert.Equal(2, limiter.Counters.StoreFailures.Value);
        }
        finally
        {
            redis.Resume();
        }
    }
}
