using System.Net;
using System.Text;
using FastGate.Tests.Cluster;
using FastGate.Tests.Infrastructure;
using FastGate.Tests.RateLimiting;
using StackExchange.Redis;

namespace FastGate.Tests.Ai;

/// <summary>
/// Token quotas of the unified endpoint shared by two `fastgate` OS processes through one real redis-server: the
/// route's token quota and a per-consumer-and-model quota, both <c>"scope": "cluster"</c>, called alternately on
/// the two gateways. Exact: the budget each answer advertises, the call that is refused, and the tokens the shared
/// Redis buckets hold.
/// </summary>
[Collection("cluster-processes")]
public sealed class AiClusterQuotaTests : IAsyncLifetime
{
    // every call reports 7 prompt + 5 completion tokens; "tok" (per consumer and model) holds 30, "tokr" (the route's) 1,000;
    // both refill 1 token an hour, so nothing refills during the test and a token is 3,600 s of the bucket's time
    private const long PerCall = 12;
    private const string Completion =
        """{"id":"x","object":"chat.completion","created":1,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}""";
    private const string Stream =
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}]}\n\n" +
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5,\"total_tokens\":12}}\n\n" +
        "data: [DONE]\n\n";

    private RedisServerProcess _redis = null!;
    private FakeProvider _provider = null!;
    private DirectoryInfo _dir = null!;
    private FastgateProcess _a = null!, _b = null!;
    private ConnectionMultiplexer _mux = null!;

    public async Task InitializeAsync()
    {
        _redis = new RedisServerProcess();
        _provider = new FakeProvider(r => r.Json.TryGetProperty("stream", out var s) && s.ValueKind == System.Text.Json.JsonValueKind.True
            ? FakeProvider.Sse(Stream, 50)
            : FakeProvider.Json(200, Completion));
        _dir = Directory.CreateTempSubdirectory("fastgate-ai-cluster-");
        var config = AiUsageTests.Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{_provider.Address}}/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }""",
            """, "quotas": [ { "rateLimit": "tok", "models": ["fast"] } ]""",
            $$"""
            "redis": { "connection": "{{_redis.Configuration}}" },
            "rateLimits": [
              { "id": "tok", "unit": "tokens", "rate": 1, "per": "1h", "burst": 30, "key": "consumer", "headers": true, "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" },
              { "id": "tokr", "unit": "tokens", "rate": 1, "per": "1h", "burst": 1000, "key": "consumer", "headers": true, "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" } ],
            """,
            """ "rateLimits": ["tokr"], """);
        var started = await Task.WhenAll(FastgateProcess.StartAsync(_dir.FullName, config, "a.json"), FastgateProcess.StartAsync(_dir.FullName, config, "b.json"));
        (_a, _b) = (started[0], started[1]);
        _mux = await ConnectionMultiplexer.ConnectAsync(_redis.Configuration);
    }

    public async Task DisposeAsync()
    {
        _mux?.Dispose();
        if (_a is not null) await _a.DisposeAsync();
        if (_b is not null) await _b.DisposeAsync();
        await _provider.DisposeAsync();
        _redis.Dispose();
        try { _dir.Delete(recursive: true); } catch (IOException) { }
    }

    private static async Task<RawResponse> ChatAsync(FastgateProcess g, string callerKey, bool stream = false)
    {
        var body = $$"""{"model":"fast","stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hello"}]}""";
        using var client = await RawClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, g.Port));
        await client.SendAsync($"POST /ai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-API-Key: {callerKey}\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}");
        return await client.ReadResponseAsync();
    }

    /// <summary>
    /// The tokens a shared bucket holds: its value is the GCRA's TAT in µs since the epoch; a bucket that was empty
    /// and has taken n tokens (1 token = 3,600 s, none refilled) is n·T ahead of now, less the few seconds since the
    /// first charge. 0 when there is no key.
    /// </summary>
    private async Task<long> TokensInRedisAsync(string limiter, string key)
    {
        var server = _mux.GetServers().Single();
        var keys = new List<RedisKey>();
        await foreach (var k in server.KeysAsync(pattern: $"fastgate:rl:{limiter}:*:{key}")) keys.Add(k);
        if (keys.Count == 0) return 0;
        var value = await _mux.GetDatabase().StringGetAsync(Assert.Single(keys));
        long tatUs = long.Parse(value.ToString());
        long nowUs = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) / 10;
        const long tokenUs = 3_600_000_000;
        return tatUs <= nowUs ? 0 : (tatUs - nowUs + tokenUs - 1) / tokenUs;
    }

    /// <summary>Waits until both buckets of team-a hold <paramref name="tokens"/> (the charge is sent after the answer), then holds them to it.</summary>
    private async Task Settled(string consumer, long tokens)
    {
        long model = -1, route = -1;
        await Eventually.WaitUntilAsync(async () =>
            (model = await TokensInRedisAsync("tok", consumer + "\u001Ffast")) >= tokens && (route = await TokensInRedisAsync("tokr", consumer)) >= tokens,
            $"{consumer}'s buckets to hold {tokens} tokens", describe: () => $"tok {model}, tokr {route}");
        Assert.Equal(tokens, model);
        Assert.Equal(tokens, route);
    }

    [Fact]
    public async Task SharedTokenQuotas_TwoGatewayProcesses_ExactBudgetsInHeadersRefusalAndRedis()
    {
        // A, B, A (streamed): each admitted with the budget the other gateway left, and charged exactly 12 tokens
        var first = await ChatAsync(_a, "caller-key-a");
        Assert.Equal(200, first.Status);
        Assert.Equal("\"tokr\";q=1000;w=3600000, \"tok\";q=30;w=108000", first.Headers["RateLimit-Policy"]);
        AiQuotaTests.AssertRateLimit(first.Headers["RateLimit"], ("tokr", 1000, 0), ("tok", 30, 0));
        await Settled("team-a", PerCall);

        var second = await ChatAsync(_b, "caller-key-a");
        Assert.Equal(200, second.Status);
        AiQuotaTests.AssertRateLimit(second.Headers["RateLimit"], ("tokr", 988, 43200), ("tok", 18, 43200));
        await Settled("team-a", 2 * PerCall);

        var third = await ChatAsync(_a, "caller-key-a", stream: true);
        Assert.Equal(200, third.Status);
        Assert.Equal("text/event-stream", third.Headers["Content-Type"]);
        AiQuotaTests.AssertRateLimit(third.Headers["RateLimit"], ("tokr", 976, 86400), ("tok", 6, 86400));
        Assert.Equal("[DONE]", AiGatewayKit.Events(third.Body)[^1]);
        await Settled("team-a", 3 * PerCall);

        // 36 of 30: the model budget is in debt on both gateways; the provider sees no more of team-a's calls
        foreach (var g in new[] { _b, _a })
        {
            var refused = await ChatAsync(g, "caller-key-a");
            Assert.Equal(429, refused.Status);
            Assert.InRange(long.Parse(refused.Headers["Retry-After"]), 21600 - 60, 21600); // 6 tokens of debt at 1 token an hour
            Assert.Contains("rate_limit_exceeded", refused.Body);
        }
        Assert.Equal(3, _provider.Requests.Count);

        // another consumer has budgets of its own, on either gateway
        var other = await ChatAsync(_b, "caller-key-b");
        Assert.Equal(200, other.Status);
        AiQuotaTests.AssertRateLimit(other.Headers["RateLimit"], ("tokr", 1000, 0), ("tok", 30, 0));
        await Settled("team-b", PerCall);
        await Settled("team-a", 3 * PerCall); // the refusals charged nothing

        // each process charged (and counted) exactly the tokens of the calls it answered
        foreach (var g in new[] { _a, _b })
        {
            double counted = 0;
            await Eventually.WaitUntilAsync(async () => (counted = await ClusterHarness.SampleAsync(g, "fastgate_llm_tokens_total", "route=\"ai\"")) >= 2 * PerCall,
                "each gateway to count its tokens", describe: () => $"{counted}");
            Assert.Equal(2 * PerCall, counted);
        }
    }
}
