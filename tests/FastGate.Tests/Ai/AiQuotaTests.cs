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
}
