using System.Net;
using FastGate.Tests.Infrastructure;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.RateLimiting;

/// <summary>A Redis outage under a running gateway is visible: a store-error metric and one warning per outage.</summary>
public class RedisOutageTests
{
    private const string Series = "fastgate_ratelimit_store_errors_total{limiter=\"outage\",store=\"redis\"}";

    [Fact]
    public async Task RedisKilled_EachRequestNeedingTheStoreCountsOneStoreError_AndOneWarningIsLogged()
    {
        using var redis = new RedisServerProcess();
        string warning = $"rate-limit store (redis) at {redis.Configuration} unavailable";
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var logs = new CapturedLogs();
        var config = TestGateway.Config(upstream.Address.ToString().TrimEnd('/'))
            .Replace("\"routes\": [ ", """
                "redis": { "connection": "REDIS" },
                "rateLimits": [ { "id": "outage", "rate": 10, "per": "1h", "burst": 10, "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" } ],
                "routes": [ { "id": "limited", "match": { "pathPrefix": "/hello" }, "cluster": "backend", "rateLimits": ["outage"] },
                """.Replace("REDIS", redis.Configuration));
        await using var gateway = await TestGateway.StartAsync(config, logs: logs);
        using var http = gateway.CreateClient();

        // a burst of 10 gives a batch of 1 token per store call: every request goes to Redis, none is left locally
        for (int i = 0; i < 3; i++)
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/hello")).StatusCode);
        var before = await gateway.ScrapeMetricsAsync();
        Assert.Contains(Series + " 0", before); // registered before the first failure
        Assert.Equal(0, logs.Count(LogLevel.Warning, warning));

        redis.Kill();
        const int during = 5;
        for (int i = 0; i < during; i++)
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync("/hello")).StatusCode); // onStoreFailure deny
        var after = await gateway.ScrapeMetricsAsync();
        Assert.Equal(during, Proxy.ProxyForwardingTests.Counter(after, Series));
        // reconnect attempts keep failing in the background: still one warning for the one outage
        Assert.True(logs.Count(LogLevel.Warning, warning) == 1, logs.Dump());

        // back (same port, empty): one line says so, requests are limited through Redis again; a second outage warns again
        redis.Start();
        await Eventually.WaitUntilAsync(async () => (await http.GetAsync("/hello")).StatusCode == HttpStatusCode.OK,
            "the gateway uses Redis again after its restart", TimeSpan.FromSeconds(20));
        Assert.True(logs.Count(LogLevel.Information, $"rate-limit store (redis) at {redis.Configuration} available again") == 1, logs.Dump());
        var back = await gateway.ScrapeMetricsAsync();
        redis.Kill();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync("/hello")).StatusCode);
        Assert.Equal(1, Proxy.ProxyForwardingTests.Counter(await gateway.ScrapeMetricsAsync(), Series) - Proxy.ProxyForwardingTests.Counter(back, Series));
        Assert.True(logs.Count(LogLevel.Warning, warning) == 2, logs.Dump());
    }
}
