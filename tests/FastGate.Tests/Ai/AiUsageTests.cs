using System.Text;
using System.Text.Json;
using FastGate.Ai;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Ai;

/// <summary>
/// Usage and cost on the unified endpoint, over real sockets: per consumer, model and provider on the gateway's own
/// registry, the price table, /admin/usage with its cardinality cap, and the access log's model and token fields.
/// </summary>
public sealed class AiUsageTests : IDisposable
{
    private readonly string _env = "FASTGATE_TEST_AI_USAGE_KEY_" + Guid.NewGuid().ToString("N");
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fastgate-ai-usage-" + Guid.NewGuid().ToString("N"));

    public AiUsageTests()
    {
        Environment.SetEnvironmentVariable(_env, "provider-secret-key");
        Directory.CreateDirectory(_dir);
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(_env, null);
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    internal const string Completion =
        """{"id":"x","object":"chat.completion","created":1,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}""";

    private const string AnthropicStream =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n" +
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n" +
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    internal static string Gateway(string providers, string models, string extraAi = "", string extraSections = "", string routeExtra = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "none", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
          "consumers": [
            { "id": "team-a", "apiKeys": [ "{{FastGate.Security.ApiKeys.Hash("caller-key-a")}}" ] },
            { "id": "team-b", "apiKeys": [ "{{FastGate.Security.ApiKeys.Hash("caller-key-b")}}" ] }
          ],
          {{extraSections}}
          "routes": [
            { "id": "ai", "match": { "pathPrefix": "/ai" }, "cluster": "none", "stripPrefix": true, "auth": ["apiKey"], {{routeExtra}}
              "ai": { "providers": [ {{providers}} ], "models": [ {{models}} ], "connectTimeout": "2s", "responseTimeout": "10s" {{extraAi}} } }
          ]
        }
        """;

    internal static async Task<RawResponse> ChatAsync(TestGateway gw, string callerKey, string model, bool stream = false)
    {
        var body = $$"""{"model":"{{model}}","stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hello"}]}""";
        using var client = await RawClient.ConnectAsync(gw.EndPoint);
        await client.SendAsync($"POST /ai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-API-Key: {callerKey}\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}");
        return await client.ReadResponseAsync();
    }

    private static long TotalRequests(TestGateway gw) => AiMetrics.For(gw.Metrics).Usage.Snapshot().Sum(s => s.Requests);

    private static JsonElement Entry(JsonElement usage, string consumer, string model, string provider) =>
        usage.GetProperty("usage").EnumerateArray().Single(e => e.GetProperty("route").GetString() == "ai" && e.GetProperty("consumer").GetString() == consumer
            && e.GetProperty("model").GetString() == model && e.GetProperty("provider").GetString() == provider);

    [Fact]
    public async Task Usage_PerConsumerModelProvider_ExactOnTheGatewaysRegistry_CostFromThePriceTable_AdminSummary()
    {
        await using var oa = new FakeProvider(req => req.Json.GetProperty("model").GetString() == "rejects-everything"
            ? FakeProvider.Json(400, """{"error":{"message":"bad request","type":"invalid_request_error"}}""")
            : FakeProvider.Json(200, Completion));
        await using var an = new FakeProvider(_ => FakeProvider.Sse(AnthropicStream, 11));
        await using var down = new FakeProvider(_ => FakeProvider.Json(500, "{}"));
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""
            { "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1", "keyEnv": ["{{_env}}"] },
            { "id": "an", "kind": "anthropic", "baseUrl": "{{an.Address}}", "keyEnv": ["{{_env}}"] },
            { "id": "dn", "kind": "openai", "baseUrl": "{{down.Address}}/v1" }
            """,
            """
            { "name": "fast", "targets": ["oa:gpt-4o-mini"] }, { "name": "claude", "targets": ["an:claude-haiku"] },
            { "name": "bad", "targets": ["oa:rejects-everything"] }, { "name": "down", "targets": ["dn:x"] }
            """,
            """, "prices": [ { "target": "oa:gpt-4o-mini", "input": 0.15, "completion": 0.60 }, { "target": "an:claude-haiku", "input": 1, "completion": 5 } ]"""));

        Assert.Equal(200, (await ChatAsync(gw, "caller-key-a", "fast")).Status);
        Assert.Equal(200, (await ChatAsync(gw, "caller-key-a", "fast")).Status);
        Assert.Equal(200, (await ChatAsync(gw, "caller-key-b", "fast")).Status);
        var streamed = await ChatAsync(gw, "caller-key-b", "claude", stream: true);
        Assert.Equal(200, streamed.Status);
        Assert.Equal("[DONE]", AiGatewayKit.Events(streamed.Body)[^1]);
        Assert.Equal(400, (await ChatAsync(gw, "caller-key-a", "bad")).Status);
        Assert.Equal(502, (await ChatAsync(gw, "caller-key-b", "down")).Status);
        Assert.Equal(404, (await ChatAsync(gw, "caller-key-a", "no-such-model")).Status); // refused by the gateway: no series
        // the request count of a series is bumped last: once all six are counted, so are their tokens and costs
        await Eventually.WaitUntilAsync(() => TotalRequests(gw) >= 6, "six calls to be counted");
        Assert.Equal(6, TotalRequests(gw));

        var m = AiMetrics.For(gw.Metrics);
        Assert.Equal(2, m.Requests.WithLabels("ai", "team-a", "fast", "oa", "ok").Value);
        Assert.Equal(1, m.Requests.WithLabels("ai", "team-b", "fast", "oa", "ok").Value);
        Assert.Equal(1, m.Requests.WithLabels("ai", "team-b", "claude", "an", "ok").Value);
        Assert.Equal(1, m.Requests.WithLabels("ai", "team-a", "bad", "oa", "error").Value);
        Assert.Equal(0, m.Requests.WithLabels("ai", "team-a", "bad", "oa", "ok").Value);
        Assert.Equal(1, m.Requests.WithLabels("ai", "team-b", "down", "", "failed").Value);
        Assert.Equal(10, m.Tokens.WithLabels("ai", "team-a", "fast", "oa", "prompt").Value);
        Assert.Equal(2, m.Tokens.WithLabels("ai", "team-a", "fast", "oa", "completion").Value);
        Assert.Equal(25, m.Tokens.WithLabels("ai", "team-b", "claude", "an", "prompt").Value);
        Assert.Equal(15, m.Tokens.WithLabels("ai", "team-b", "claude", "an", "completion").Value);
        // 2 x (5 x 0.15 + 1 x 0.60) / 1M and (25 x 1 + 15 x 5) / 1M
        Assert.Equal(2.7e-6, m.Cost.WithLabels("ai", "team-a", "fast", "oa").Value, 15);
        Assert.Equal(1e-4, m.Cost.WithLabels("ai", "team-b", "claude", "an").Value, 15);
        Assert.Equal(0, m.Cost.WithLabels("ai", "team-a", "bad", "oa").Value); // a 400 reports no usage: nothing to price
        Assert.Equal(2, m.FirstToken.WithLabels("ai", "team-a", "fast", "oa").Count);
        Assert.Equal(1, m.FirstToken.WithLabels("ai", "team-b", "claude", "an").Count);

        // the scrape of this gateway's admin /metrics shows them (its own registry, not the process-wide default one)
        var scrape = await gw.ScrapeMetricsAsync();
        Assert.Contains("fastgate_ai_requests_total{route=\"ai\",consumer=\"team-a\",model=\"fast\",provider=\"oa\",outcome=\"ok\"} 2", scrape);
        Assert.Contains("fastgate_ai_tokens_total{route=\"ai\",consumer=\"team-b\",model=\"claude\",provider=\"an\",kind=\"completion\"} 15", scrape);
        using (var process = new MemoryStream())
        {
            await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(process);
            Assert.DoesNotContain("fastgate_ai_", Encoding.UTF8.GetString(process.ToArray()));
        }

        using var admin = gw.CreateAdminClient();
        var text = await admin.GetStringAsync("/admin/usage");
        foreach (var secret in new[] { "provider-secret-key", "caller-key-a", "caller-key-b" }) Assert.DoesNotContain(secret, text);
        var usage = JsonDocument.Parse(text).RootElement;
        Assert.Equal(5, usage.GetProperty("usage").GetArrayLength());
        var a = Entry(usage, "team-a", "fast", "oa");
        Assert.Equal(2, a.GetProperty("requests").GetInt64());
        Assert.Equal(0, a.GetProperty("errors").GetInt64());
        Assert.Equal(10, a.GetProperty("promptTokens").GetInt64());
        Assert.Equal(2, a.GetProperty("completionTokens").GetInt64());
        Assert.Equal(0.0000027m, a.GetProperty("cost").GetDecimal());
        var b = Entry(usage, "team-b", "claude", "an");
        Assert.Equal(0.0001m, b.GetProperty("cost").GetDecimal());
        Assert.Equal(1, Entry(usage, "team-a", "bad", "oa").GetProperty("errors").GetInt64());
        var failed = Entry(usage, "team-b", "down", "");
        Assert.Equal(1, failed.GetProperty("requests").GetInt64());
        Assert.Equal(1, failed.GetProperty("errors").GetInt64());
        var totals = usage.GetProperty("totals");
        Assert.Equal(6, totals.GetProperty("requests").GetInt64());
        Assert.Equal(2, totals.GetProperty("errors").GetInt64());
        Assert.Equal(10 + 5 + 25, totals.GetProperty("promptTokens").GetInt64());
        Assert.Equal(2 + 1 + 15, totals.GetProperty("completionTokens").GetInt64());
        Assert.Equal(0.0000027m + 0.00000135m + 0.0001m, totals.GetProperty("cost").GetDecimal());
    }

    [Fact]
    public async Task Usage_Cardinality_CappedPerRoute_LaterSeriesCountAsOther()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, Completion));
        await using var gw = await TestGateway.StartAsync(Gateway(
            $$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""",
            """{ "name": "m1", "targets": ["oa:a"] }, { "name": "m2", "targets": ["oa:b"] }, { "name": "m3", "targets": ["oa:c"] }""",
            """, "maxUsageSeries": 2"""));
        foreach (var (key, model) in new[] { ("caller-key-a", "m1"), ("caller-key-a", "m2"), ("caller-key-a", "m3"), ("caller-key-b", "m1"), ("caller-key-a", "m1") })
        {
            long expected = TotalRequests(gw) + 1;
            Assert.Equal(200, (await ChatAsync(gw, key, model)).Status);
            // one at a time: the first two distinct series are the ones kept
            await Eventually.WaitUntilAsync(() => TotalRequests(gw) >= expected, "the call to be counted");
        }
        Assert.Equal(5, TotalRequests(gw));
        var m = AiMetrics.For(gw.Metrics);
        Assert.Equal(2, m.Requests.WithLabels("ai", "team-a", "m1", "oa", "ok").Value);
        Assert.Equal(1, m.Requests.WithLabels("ai", "team-a", "m2", "oa", "ok").Value);
        Assert.Equal(2, m.Requests.WithLabels("ai", "other", "other", "other", "ok").Value);
        Assert.Equal(10, m.Tokens.WithLabels("ai", "other", "other", "other", "prompt").Value);
        var scrape = await gw.ScrapeMetricsAsync();
        Assert.DoesNotContain("model=\"m3\"", scrape);
        Assert.DoesNotContain("consumer=\"team-b\"", scrape);

        using var admin = gw.CreateAdminClient();
        var usage = JsonDocument.Parse(await admin.GetStringAsync("/admin/usage")).RootElement;
        Assert.Equal(3, usage.GetProperty("usage").GetArrayLength());
        Assert.Equal(2, Entry(usage, "other", "other", "other").GetProperty("requests").GetInt64());
        Assert.Equal(2, usage.GetProperty("overflowed").GetProperty("ai").GetInt64());
        Assert.Equal(5, usage.GetProperty("totals").GetProperty("requests").GetInt64());
        Assert.Equal(405, (int)(await admin.PostAsync("/admin/usage", null)).StatusCode);
    }

    [Fact]
    public async Task Usage_KeptAcrossAReload()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, Completion));
        var path = Path.Combine(_dir, "fastgate.json");
        string Text(string extra) => Gateway($$"""{ "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1" }""", """{ "name": "m", "targets": ["oa:a"] }""", extra);
        await File.WriteAllTextAsync(path, Text(""));
        await using var gw = await TestGateway.StartFromFileAsync(path);
        Assert.Equal(200, (await ChatAsync(gw, "caller-key-a", "m")).Status);
        await Eventually.WaitUntilAsync(() => TotalRequests(gw) >= 1, "the call to be counted");
        await File.WriteAllTextAsync(path, Text(""", "cooldown": "5s" """));
        using var admin = gw.CreateAdminClient();
        var reload = await admin.PostAsync("/admin/reload", null);
        Assert.Equal(200, (int)reload.StatusCode);
        Assert.Equal(200, (await ChatAsync(gw, "caller-key-a", "m")).Status);
        await Eventually.WaitUntilAsync(() => TotalRequests(gw) >= 2, "the second call to be counted");
        var usage = JsonDocument.Parse(await admin.GetStringAsync("/admin/usage")).RootElement;
        Assert.Equal(2, Entry(usage, "team-a", "m", "oa").GetProperty("requests").GetInt64());
        Assert.Equal(10, Entry(usage, "team-a", "m", "oa").GetProperty("promptTokens").GetInt64());
    }

    [Fact]
    public async Task AccessLog_CarriesModelProviderAndTokens_OnAiCallsOnly()
    {
        await using var oa = new FakeProvider(_ => FakeProvider.Json(200, Completion));
        await using var down = new FakeProvider(_ => FakeProvider.Json(503, "{}"));
        var log = Path.Combine(_dir, "access.log");
        var gw = await TestGateway.StartAsync(Gateway(
            $$"""
            { "id": "oa", "kind": "openai", "baseUrl": "{{oa.Address}}/v1", "keyEnv": ["{{_env}}"] },
            { "id": "dn", "kind": "openai", "baseUrl": "{{down.Address}}/v1" }
            """,
            """{ "name": "fast", "targets": ["oa:gpt-4o-mini"] }, { "name": "down", "targets": ["dn:x"] }""",
            extraSections: $$""" "accessLog": { "path": "{{log}}", "sampleRate": 1 }, """));
        try
        {
            Assert.Equal(200, (await ChatAsync(gw, "caller-key-a", "fast")).Status);
            Assert.Equal(502, (await ChatAsync(gw, "caller-key-b", "down")).Status);
            using var client = await RawClient.ConnectAsync(gw.EndPoint);
            await client.SendAsync("GET /ai/v1/models HTTP/1.1\r\nHost: a\r\nX-API-Key: caller-key-b\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
            await Eventually.WaitUntilAsync(() => gw.Host.Runtime.Observability.AccessLog!.Written >= 3, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gw.DisposeAsync(); // flushes the writer
        }
        var text = await File.ReadAllTextAsync(log);
        Assert.DoesNotContain("provider-secret-key", text);
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, lines.Count);
        var chat = lines.Single(l => l.GetProperty("method").GetString() == "POST" && l.GetProperty("status").GetInt32() == 200);
        Assert.Equal("team-a", chat.GetProperty("consumer").GetString());
        Assert.Equal("fast", chat.GetProperty("model").GetString());
        Assert.Equal("oa", chat.GetProperty("provider").GetString());
        Assert.Equal(5, chat.GetProperty("prompt_tokens").GetInt64());
        Assert.Equal(1, chat.GetProperty("completion_tokens").GetInt64());
        var failed = lines.Single(l => l.GetProperty("status").GetInt32() == 502);
        Assert.Equal("down", failed.GetProperty("model").GetString());
        Assert.Equal("", failed.GetProperty("provider").GetString());
        Assert.Equal(0, failed.GetProperty("prompt_tokens").GetInt64());
        Assert.Equal("ai_providers_failed", failed.GetProperty("decision").GetString());
        var models = lines.Single(l => l.GetProperty("method").GetString() == "GET");
        Assert.False(models.TryGetProperty("model", out _));
        Assert.False(models.TryGetProperty("prompt_tokens", out _));
    }

    [Fact]
    public void PriceTable_And_SeriesCap_ErrorsCarryTheirJsonPaths()
    {
        var errors = ConfigLoader.Load(AiGatewayKit.Config(
            """{ "id": "oa", "kind": "openai", "baseUrl": "https://api.openai.com/v1" }""",
            """{ "name": "m", "targets": ["oa:gpt-4o-mini"] }""",
            """
            , "maxUsageSeries": 0,
            "prices": [ { "target": "oa:gpt-4o-mini", "input": 0.15, "completion": 0.6 }, { "target": "oa:gpt-4o-mini", "input": 1 },
                        { "target": "oa:gpt-5", "input": -1, "completion": "cheap" }, { "input": 1, "output": 2 } ]
            """)).Errors.Select(e => e.ToString()).ToList();
        string[] expected =
        [
            "$.routes[0].ai.maxUsageSeries: must be greater than 0",
            "$.routes[0].ai.prices[1].target: duplicate price for 'oa:gpt-4o-mini'",
            "$.routes[0].ai.prices[2].target: 'oa:gpt-5' is not a target of any model",
            "$.routes[0].ai.prices[2].input: must be between 0 and",
            "$.routes[0].ai.prices[2].completion: expected a number",
            "$.routes[0].ai.prices[3].target: is required",
            "$.routes[0].ai.prices[3].output: unknown property",
        ];
        foreach (var e in expected) Assert.Contains(errors, x => x.StartsWith(e, StringComparison.Ordinal));
        Assert.Equal(expected.Length, errors.Count);
    }
}

/// <summary>The usage store under contention: the cap holds exactly and no count is lost.</summary>
public class AiUsageStoreTests
{
    [Fact]
    public void ConcurrentNewSeries_CapHeldExactly_EveryCallCountedOnce()
    {
        var metrics = new FastGate.Observability.GatewayMetrics();
        var store = AiMetrics.For(metrics).Usage;
        const int keys = 64, callsPerKey = 200, max = 10;
        using var start = new ManualResetEventSlim();
        var threads = Enumerable.Range(0, 8).Select(t => new Thread(() =>
        {
            start.Wait();
            for (int i = 0; i < keys * callsPerKey / 8; i++)
            {
                int k = (i * 8 + t) % keys;
                store.Get(new AiUsageKey("r", "c" + k, "m", "p"), max).Answered(error: k % 2 == 1, prompt: 3, completion: 2, costPico: 7);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        start.Set();
        threads.ForEach(t => t.Join());

        var all = store.Snapshot();
        Assert.Equal(max, all.Count(s => s.Key.Consumer != AiUsageStore.Other));
        Assert.Single(all, s => s.Key.Consumer == AiUsageStore.Other);
        Assert.Equal(keys * callsPerKey, all.Sum(s => s.Requests));
        Assert.Equal(keys * callsPerKey / 2, all.Sum(s => s.Errors));
        Assert.Equal(3L * keys * callsPerKey, all.Sum(s => s.Prompt));
        Assert.Equal(7L * keys * callsPerKey, all.Sum(s => s.CostPico));
        // every call that did not find its series counted in "other", and only those
        Assert.Equal(store.Overflowed("r"), all.Single(s => s.Key.Consumer == AiUsageStore.Other).Requests);
        // the keys that never got a series counted all their calls there
        Assert.True(store.Overflowed("r") >= (keys - max) * callsPerKey, $"{store.Overflowed("r")} calls overflowed");
        // and the registry agrees with the store, series by series
        var m = AiMetrics.For(metrics);
        foreach (var x in all)
        {
            Assert.Equal(x.Requests - x.Errors, m.Requests.WithLabels(x.Key.Route, x.Key.Consumer, x.Key.Model, x.Key.Provider, "ok").Value);
            Assert.Equal(x.Errors, m.Requests.WithLabels(x.Key.Route, x.Key.Consumer, x.Key.Model, x.Key.Provider, "error").Value);
            Assert.Equal(x.Prompt, m.Tokens.WithLabels(x.Key.Route, x.Key.Consumer, x.Key.Model, x.Key.Provider, "prompt").Value);
        }
    }
}
