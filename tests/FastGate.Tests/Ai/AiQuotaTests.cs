using System.Text.Json;
using FastGate.Ai;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;
using static FastGate.Tests.Ai.AiUsageTests;

namespace FastGate.Tests.Ai;

/// <summary>Token quotas per consumer and model on the unified endpoint, over real sockets.</summary>
public sealed class AiQuotaTests
{
    // 10 tokens at once, refilled at 1 token an hour: each call reports 6 (5 prompt + 1 completion), so a budget
    // admits two calls (the second goes into debt) and refuses the third
    private const string TokenLimit =
        """ "rateLimits": [ { "id": "tok", "unit": "tokens", "rate": 1, "per": "1h", "burst": 10, "key": "consumer", "headers": true } ], """;

    private static long Requests(TestGateway gw, string consumer, string model) =>
        AiMetrics.For(gw.Metrics).Usage.Snapshot().Where(s => s.Key.Consumer == consumer && s.Key.Model == model).Sum(s => s.Requests);

    /// <summary>One call, then a wait until the usage series counted it (the quota is charged before that count).</summary>
    private static async Task<RawResponse> CallAsync(TestGateway gw, string callerKey, string consumer, string model)
    {
        long before = Requests(gw, consumer, model);
        var r = await ChatAsync(gw, callerKey, model);
        if (r.Status == 200) await Eventually.WaitUntilAsync(() => Requests(gw, consumer, model) > before, $"the call of {consumer} to {model} to be counted");
        return r;
    }

    [Fact]
    public async Task Quota_PerConsumerAndModel_SpentBudgetRefused429_OtherModelsAndConsumersKeepTheirs()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, AiUsageTests.Completion));
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }, { "name": "slow", "targets": ["oa:b"] }, { "name": "free", "targets": ["oa:c"] }""",
            """, "quotas": [ { "rateLimit": "tok", "models": ["fast", "slow"] } ]""",
            TokenLimit));

        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        var refused = await CallAsync(gw, "caller-key-a", "team-a", "fast");
        Assert.Equal(429, refused.Status);
        var error = JsonDocument.Parse(refused.Body).RootElement.GetProperty("error");
        Assert.Equal("tokens", error.GetProperty("type").GetString());
        Assert.Equal("rate_limit_exceeded", error.GetProperty("code").GetString());
        Assert.Contains("'tok'", error.GetProperty("message").GetString());
        Assert.True(long.Parse(refused.Headers["Retry-After"]) > 0);
        Assert.StartsWith("\"tok\"", refused.Headers["RateLimit-Policy"]);
        Assert.Equal(2, oa.Requests.Count); // the refused call never reached the provider

        // the same consumer on another limited model, another consumer on the same model, and an unlimited model
        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "slow")).Status);
        Assert.Equal(200, (await CallAsync(gw, "caller-key-b", "team-b", "fast")).Status);
        for (int i = 0; i < 3; i++) Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "free")).Status);
        Assert.Equal(429, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        Assert.Equal(7, oa.Requests.Count);

        Assert.Equal(2, Requests(gw, "team-a", "fast")); // refusals are not usage
        Assert.Equal(2, gw.Metrics.RateLimitDecisions.WithLabels("tok", "rejected").Value);
        Assert.Equal(4, gw.Metrics.RateLimitDecisions.WithLabels("tok", "allowed").Value); // fast x2, slow, team-b fast: "free" has no quota
        await Eventually.WaitUntilAsync(() => gw.Metrics.Rejections.WithLabels("rate_limited").Value >= 2, "the refusals to be counted");
        Assert.Equal(2, gw.Metrics.Rejections.WithLabels("rate_limited").Value);
    }

    /// <summary>An OpenAI stream reporting 5 prompt + 1 completion tokens in its usage event.</summary>
    internal const string UsageStream =
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}]}\n\n" +
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n" +
        "data: [DONE]\n\n";

    /// <summary>
    /// Holds a RateLimit field to the budgets expected: each item's id and remaining tokens exactly, its reset (the
    /// seconds until the bucket is whole, which the clock wears down while the test runs) within a minute under
    /// the value at the moment of the charge.
    /// </summary>
    internal static void AssertRateLimit(string field, params (string Id, long Remaining, long Reset)[] expected)
    {
        var items = field.Split(", ");
        Assert.Equal(expected.Length, items.Length);
        for (int i = 0; i < items.Length; i++)
        {
            var m = System.Text.RegularExpressions.Regex.Match(items[i], "^\"([^\"]+)\";r=(\\d+);t=(\\d+)$");
            Assert.True(m.Success, items[i]);
            Assert.Equal(expected[i].Id, m.Groups[1].Value);
            Assert.Equal(expected[i].Remaining, long.Parse(m.Groups[2].Value));
            Assert.InRange(long.Parse(m.Groups[3].Value), Math.Max(0, expected[i].Reset - 60), expected[i].Reset);
        }
    }

    private static Task Charged(TestGateway gw, double tokens) =>
        Eventually.WaitUntilAsync(() => gw.Metrics.LlmTokens.WithLabels("ai").Value >= tokens, $"{tokens} tokens to be charged");

    internal static IReadOnlyList<byte[]> WholeOrStream(ProviderRequest request) =>
        request.Json.TryGetProperty("stream", out var s) && s.ValueKind == JsonValueKind.True
            ? FakeProvider.Sse(UsageStream, 40)
            : FakeProvider.Json(200, AiUsageTests.Completion);

    [Fact]
    public async Task QuotaHeaders_OnAllowedCalls_WholeAndStreamed_RouteAndModelBudgetsAsAdmitted()
    {
        // "tokr" (the route's token quota, 100 tokens) and "tok" (per consumer and model, 10 tokens), both with
        // headers: each allowed answer carries both budgets as they were when the call was admitted; 1 token an hour,
        // so a budget 6 tokens down is whole again in 6 h = 21,600 s
        await using var oa = new FakeProvider(WholeOrStream);
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }, { "name": "free", "targets": ["oa:b"] }""",
            """, "quotas": [ { "rateLimit": "tok", "models": ["fast"] } ]""",
            """
            "rateLimits": [ { "id": "tok", "unit": "tokens", "rate": 1, "per": "1h", "burst": 10, "key": "consumer", "headers": true },
                            { "id": "tokr", "unit": "tokens", "rate": 1, "per": "1h", "burst": 100, "key": "consumer", "headers": true } ],
            """,
            """ "rateLimits": ["tokr"], """));

        var first = await CallAsync(gw, "caller-key-a", "team-a", "fast");
        Assert.Equal(200, first.Status);
        Assert.Equal("\"tokr\";q=100;w=360000, \"tok\";q=10;w=36000", first.Headers["RateLimit-Policy"]);
        AssertRateLimit(first.Headers["RateLimit"], ("tokr", 100, 0), ("tok", 10, 0));
        await Charged(gw, 6); // the route's quota is charged after the answer went out

        long before = Requests(gw, "team-a", "fast");
        var streamed = await ChatAsync(gw, "caller-key-a", "fast", stream: true);
        Assert.Equal(200, streamed.Status);
        Assert.Equal("text/event-stream", streamed.Headers["Content-Type"]);
        Assert.Equal("\"tokr\";q=100;w=360000, \"tok\";q=10;w=36000", streamed.Headers["RateLimit-Policy"]);
        AssertRateLimit(streamed.Headers["RateLimit"], ("tokr", 94, 21600), ("tok", 4, 21600));
        await Eventually.WaitUntilAsync(() => Requests(gw, "team-a", "fast") > before, "the streamed call to be counted");
        await Charged(gw, 12);

        // the streamed call's 6 tokens were charged: "tok" is in debt (12 of 10), the route's budget 88 of 100
        var refused = await CallAsync(gw, "caller-key-a", "team-a", "fast");
        Assert.Equal(429, refused.Status);
        var free = await CallAsync(gw, "caller-key-a", "team-a", "free");
        Assert.Equal(200, free.Status);
        Assert.Equal("\"tokr\";q=100;w=360000", free.Headers["RateLimit-Policy"]); // no model quota on "free"
        AssertRateLimit(free.Headers["RateLimit"], ("tokr", 88, 43200));
        await Charged(gw, 18);
        var other = await CallAsync(gw, "caller-key-b", "team-b", "fast");
        AssertRateLimit(other.Headers["RateLimit"], ("tokr", 100, 0), ("tok", 10, 0)); // budgets of its own
        Assert.Equal(4, oa.Requests.Count);
    }

    [Fact]
    public async Task Quota_ForListedConsumersOnly_OthersUnlimited()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, AiUsageTests.Completion));
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }""",
            """, "quotas": [ { "rateLimit": "tok", "consumers": ["team-a"] } ]""",
            TokenLimit));
        for (int i = 0; i < 3; i++) Assert.Equal(200, (await CallAsync(gw, "caller-key-b", "team-b", "fast")).Status);
        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        Assert.Equal(429, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
        Assert.Equal(5, oa.Requests.Count);
    }

    [Fact]
    public async Task Quota_SpentBudget_KeptAcrossAReload()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, AiUsageTests.Completion));
        var dir = Path.Combine(Path.GetTempPath(), "fastgate-ai-quota-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, "fastgate.json");
            string Text(string extra) => Gateway($$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""", """{ "name": "fast", "targets": ["oa:a"] }""",
                """, "quotas": [ { "rateLimit": "tok", "models": ["fast"] } ]""" + extra, TokenLimit);
            await File.WriteAllTextAsync(path, Text(""));
            await using var gw = await TestGateway.StartFromFileAsync(path);
            Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
            Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
            Assert.Equal(429, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);
            await File.WriteAllTextAsync(path, Text(""", "cooldown": "5s" """));
            using var admin = gw.CreateAdminClient();
            Assert.Equal(200, (int)(await admin.PostAsync("/admin/reload", null)).StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(5).TotalSeconds * System.Diagnostics.Stopwatch.Frequency, gw.Host.Runtime.Current.Routes[0].Ai!.CooldownTicks, 0);
            Assert.Equal(429, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status); // the new snapshot kept the spent budget
            Assert.Equal(200, (await CallAsync(gw, "caller-key-b", "team-b", "fast")).Status);
            Assert.Equal(3, oa.Requests.Count);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Quota_ConfigErrors_CarryTheirJsonPaths()
    {
        var errors = ConfigLoader.Load(Gateway(
            """{ "id": "oa", "kind": "openai", "baseUrl": "https://api.openai.com/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }""",
            """
            , "quotas": [ { "rateLimit": "nope" }, { "rateLimit": "requests", "models": ["fats"], "consumers": ["team-c"] }, { "models": [], "key": "x" } ]
            """,
            """ "rateLimits": [ { "id": "requests", "rate": 10 } ], """)).Errors.Select(e => e.ToString()).ToList();
        string[] expected =
        [
            "$.routes[0].ai.quotas[0].rateLimit: unknown rate limit 'nope'",
            "$.routes[0].ai.quotas[1].rateLimit: rate limit 'requests' counts requests",
            "$.routes[0].ai.quotas[1].models[0]: unknown model 'fats'",
            "$.routes[0].ai.quotas[1].consumers[0]: unknown consumer 'team-c'",
            "$.routes[0].ai.quotas[2].rateLimit: is required",
            "$.routes[0].ai.quotas[2].key: unknown property",
        ];
        foreach (var e in expected) Assert.Contains(errors, x => x.StartsWith(e, StringComparison.Ordinal));
        Assert.Equal(expected.Length, errors.Count);
    }

    [Fact]
    public async Task Quota_WhoseRedisStoreIsDown_WithDeny_Refused503_AndTheErrorNamesTheStoreNotASpentBudget()
    {
        using var redis = new FastGate.Tests.RateLimiting.RedisServerProcess();
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, AiUsageTests.Completion));
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""",
            """{ "name": "fast", "targets": ["oa:a"] }""",
            """, "quotas": [ { "rateLimit": "tok", "models": ["fast"] } ]""",
            $$"""
            "redis": { "connection": "{{redis.Configuration}}" },
            "rateLimits": [ { "id": "tok", "unit": "tokens", "rate": 1, "per": "1h", "burst": 1000, "key": "consumer", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" } ],
            """));
        Assert.Equal(200, (await CallAsync(gw, "caller-key-a", "team-a", "fast")).Status);

        redis.Kill();
        var refused = await ChatAsync(gw, "caller-key-a", "fast");
        Assert.Equal(503, refused.Status);
        var error = JsonDocument.Parse(refused.Body).RootElement.GetProperty("error");
        Assert.Equal("rate_limit_store_unavailable", error.GetProperty("code").GetString());
        var message = error.GetProperty("message").GetString()!;
        Assert.Contains("'tok' cannot be checked: its store is unavailable", message);
        Assert.DoesNotContain("spent", message);
        Assert.Single(oa.Requests); // the refused call never reached the provider
    }
}
