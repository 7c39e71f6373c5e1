using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Security;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>
/// The gateway in front of an LLM API: the provider key injected from the environment (callers authenticate to the
/// gateway with their own credential and never hold the provider key), and server-sent events streamed through as
/// the upstream produces them.
/// </summary>
public sealed class AiGatewayTests : IDisposable
{
    private const string CallerKey = "team-a-gateway-key";
    private readonly string _openAiEnv = "FASTGATE_TEST_OPENAI_" + Guid.NewGuid().ToString("N");
    private readonly string _anthropicEnv = "FASTGATE_TEST_ANTHROPIC_" + Guid.NewGuid().ToString("N");
    private readonly string _openAiKey = "sk-test-" + Guid.NewGuid().ToString("N");

    public AiGatewayTests()
    {
        Environment.SetEnvironmentVariable(_openAiEnv, _openAiKey);
        Environment.SetEnvironmentVariable(_anthropicEnv, "anthropic-test-key");
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(_openAiEnv, null);
        Environment.SetEnvironmentVariable(_anthropicEnv, null);
    }

    private string Config(string upstream) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "llm", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [ { "id": "team-a", "apiKeys": [ "{{ApiKeys.Hash(CallerKey)}}" ] } ],
          "routes": [
            { "id": "openai", "match": { "pathPrefix": "/openai" }, "cluster": "llm", "stripPrefix": true, "auth": ["apiKey"],
              "upstreamCredential": { "provider": "openai", "env": "{{_openAiEnv}}" } },
            { "id": "anthropic", "match": { "pathPrefix": "/anthropic" }, "cluster": "llm", "stripPrefix": true, "auth": ["apiKey"],
              "upstreamCredential": { "provider": "anthropic", "env": "{{_anthropicEnv}}" } }
          ]
        }
        """;

    private static async Task<RawResponse> Send(TestGateway gateway, string request)
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        return await client.ReadResponseAsync();
    }

    [Fact]
    public async Task ProviderKey_IsInjected_CallerCredentialAndSpoofedKeyNeverReachTheProvider_SecretNotInAdminRoutes()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/')));

        // the caller's own Authorization (here an attempt to pick the provider key) is replaced by the gateway's
        var openai = await Send(gateway, $"POST /openai/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {CallerKey}\r\nAuthorization: Bearer sk-caller-own\r\nContent-Length: 2\r\n\r\n{{}}");
        Assert.Equal(200, openai.Status);
        var headers = JsonDocument.Parse(openai.Body).RootElement.GetProperty("headers");
        Assert.Equal("Bearer " + _openAiKey, headers.GetProperty("Authorization").GetString());
        Assert.False(headers.TryGetProperty("X-API-Key", out _));
        Assert.Equal("team-a", headers.GetProperty("X-Consumer-Id").GetString());

        var anthropic = await Send(gateway, $"POST /anthropic/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {CallerKey}\r\nx-api-key: {CallerKey}\r\nContent-Length: 0\r\n\r\n");
        var anthropicHeaders = JsonDocument.Parse(anthropic.Body).RootElement.GetProperty("headers");
        Assert.Equal("anthropic-test-key", anthropicHeaders.GetProperty("x-api-key").GetString());

        // without the caller's own credential nothing is forwarded (so the provider key is never spent for strangers)
        Assert.Equal(401, (await Send(gateway, "POST /openai/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")).Status);

        using var admin = gateway.CreateAdminClient();
        var routes = await admin.GetStringAsync("/admin/routes");
        Assert.Contains(_openAiEnv, routes);
        Assert.Contains("\"upstreamCredentialHeader\": \"Authorization\"", routes);
        Assert.DoesNotContain(_openAiKey, routes);
    }

    [Fact]
    public async Task ServerSentEvents_AreStreamedAsTheUpstreamWritesThem()
    {
        // The upstream sends its first event, then waits until the client has received it through the gateway before
        // sending the second. A gateway that buffered the response would never deliver the first: the read times out.
        var firstSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"), cancel);
            await stream.WriteAsync(Chunk("data: {\"delta\":\"Hel\"}\n\n"), cancel);
            await firstSeen.Task.WaitAsync(cancel);
            await stream.WriteAsync(Chunk("data: {\"delta\":\"lo\"}\n\ndata: [DONE]\n\n"), cancel);
            await stream.WriteAsync("0\r\n\r\n"u8.ToArray(), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address));

        using var tcp = new TcpClient();
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-API-Key: {CallerKey}\r\nAccept: text/event-stream\r\nContent-Length: 2\r\n\r\n{{}}"));
        var received = new StringBuilder();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (!received.ToString().Contains("\"Hel\"", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(buffer, cts.Token);
            Assert.NotEqual(0, n);
            received.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        Assert.Contains("Content-Type: text/event-stream", received.ToString());
        Assert.DoesNotContain("[DONE]", received.ToString()); // the second event does not exist yet
        firstSeen.SetResult();
        while (!received.ToString().Contains("\r\n0\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(buffer, cts.Token);
            Assert.NotEqual(0, n);
            received.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        Assert.Contains("data: [DONE]", received.ToString());
    }

    /// <summary>An LLM upstream that answers every request with <paramref name="tokens"/> in its usage (JSON, or SSE when chunked).</summary>
    private static RawUpstream UsageUpstream(long tokens, bool sse) => new(async (stream, cancel) =>
    {
        while (true)
        {
            var head = await RawUpstream.ReadHeadAsync(stream, cancel);
            if (head.Length == 0) return;
            if (head.Contains("Content-Length: 2", StringComparison.OrdinalIgnoreCase))
            {
                var body = new byte[2];
                await stream.ReadExactlyAsync(body, cancel);
            }
            if (sse)
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"), cancel);
                await stream.WriteAsync(Chunk("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"), cancel);
                // the usage event split over two chunks: the count must still be read
                var usage = $"data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{tokens / 2},\"completion_tokens\":{tokens - tokens / 2},\"total_tokens\":{tokens}}}}}\n\n";
                await stream.WriteAsync(Chunk(usage[..40]), cancel);
                await stream.WriteAsync(Chunk(usage[40..] + "data: [DONE]\n\n"), cancel);
                await stream.WriteAsync("0\r\n\r\n"u8.ToArray(), cancel);
            }
            else
            {
                var json = $"{{\"choices\":[{{\"message\":{{\"content\":\"hi\"}}}}],\"usage\":{{\"total_tokens\":{tokens}}}}}";
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {json.Length}\r\n\r\n{json}"), cancel);
            }
        }
    });

    private string QuotaConfig(string upstream, string routeId) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "llm", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [ { "id": "team-a", "apiKeys": [ "{{ApiKeys.Hash(CallerKey)}}" ] }, { "id": "team-b", "apiKeys": [ "{{ApiKeys.Hash("team-b-key")}}" ] } ],
          "rateLimits": [ { "id": "tokens-per-team", "unit": "tokens", "rate": 100, "per": "1h", "burst": 100, "key": "consumer", "headers": true } ],
          "routes": [
            { "id": "{{routeId}}", "match": { "pathPrefix": "/" }, "cluster": "llm", "auth": ["apiKey"], "rateLimits": ["tokens-per-team"],
              "upstreamCredential": { "provider": "openai", "env": "{{_openAiEnv}}" } }
          ]
        }
        """;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TokenQuota_ChargesWhatResponsesReport_RefusesWhileSpent_PerConsumer(bool sse)
    {
        // 100 tokens an hour per team; every response reports 60: two requests pass (the second goes into debt), the
        // third is refused with 429 until the rate pays the debt back; another team has its own budget
        await using var upstream = UsageUpstream(60, sse);
        await using var gateway = await TestGateway.StartAsync(QuotaConfig(upstream.Address, sse ? "chat-sse" : "chat-json"));
        string Request(string key) => $"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\nContent-Length: 2\r\n\r\n{{}}";

        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 2; i++)
        {
            await client.SendAsync(Request(CallerKey));
            var ok = await client.ReadResponseAsync();
            Assert.Equal(200, ok.Status);
            Assert.Contains("\"hi\"", ok.Body);
        }
        await client.SendAsync(Request(CallerKey));
        var refused = await client.ReadResponseAsync();
        Assert.Equal(429, refused.Status);
        Assert.True(refused.Headers.ContainsKey("Retry-After"));

        using var other = await RawClient.ConnectAsync(gateway.EndPoint);
        await other.SendAsync(Request("team-b-key"));
        Assert.Equal(200, (await other.ReadResponseAsync()).Status);

        // the last response's tokens are charged just after its bytes are sent (the native transport sends them inline)
        string expected = $"fastgate_llm_tokens_total{{route=\"{(sse ? "chat-sse" : "chat-json")}\"}} 180";
        await Eventually.WaitUntilAsync(async () => (await gateway.ScrapeMetricsAsync()).Contains(expected, StringComparison.Ordinal), expected);
    }

    [Fact]
    public void TokenQuota_NeedsGcraAndLocalScope()
    {
        var result = ConfigLoader.Load("""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "c", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
              "redis": { "connection": "127.0.0.1:6379" },
              "rateLimits": [
                { "id": "a", "unit": "tokens", "algorithm": "slidingWindow", "rate": 10, "per": "1m" },
                { "id": "b", "unit": "tokens", "scope": "cluster", "rate": 10, "per": "1m" },
                { "id": "c", "unit": "bytes", "rate": 10, "per": "1m" }
              ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "c" } ]
            }
            """);
        Assert.Contains(result.Errors, e => e.Path == "$.rateLimits[0].algorithm" && e.Message.Contains("uses gcra", StringComparison.Ordinal));
        Assert.DoesNotContain(result.Errors, e => e.Path.StartsWith("$.rateLimits[1]", StringComparison.Ordinal)); // cluster token quotas: docs/cluster.md
        Assert.Contains(result.Errors, e => e.Path == "$.rateLimits[2].unit" && e.Message.Contains("not requests or tokens", StringComparison.Ordinal));
    }

    private static byte[] Chunk(string text) => Encoding.ASCII.GetBytes($"{Encoding.ASCII.GetByteCount(text):x}\r\n{text}\r\n");

    [Fact]
    public void UpstreamCredential_ConfigErrors_HaveTheirPaths()
    {
        var result = ConfigLoader.Load("""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "c", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
              "routes": [
                { "id": "a", "match": { "pathPrefix": "/a" }, "cluster": "c", "upstreamCredential": { "provider": "openia", "env": "FASTGATE_TEST_UNSET_VARIABLE_43" } },
                { "id": "b", "match": { "pathPrefix": "/b" }, "cluster": "c", "upstreamCredential": { "env": "PATH" } },
                { "id": "c", "match": { "pathPrefix": "/c" }, "cluster": "c", "upstreamCredential": { "header": "X Key", "provider": "openai" } },
                { "id": "d", "match": { "pathPrefix": "/d" }, "cluster": "c", "upstreamCredential": { "provider": "openai", "value": "sk-in-the-file" } }
              ]
            }
            """);
        void AssertError(string path, string part) =>
            Assert.True(result.Errors.Any(e => e.Path == path && e.Message.Contains(part, StringComparison.Ordinal)),
                $"expected {path}: ...{part}... in\n" + string.Join("\n", result.Errors));
        AssertError("$.routes[0].upstreamCredential.provider", "not a provider preset");
        AssertError("$.routes[0].upstreamCredential.env", "is not set");
        AssertError("$.routes[1].upstreamCredential", "give \"provider\"");
        AssertError("$.routes[2].upstreamCredential.header", "not a header name");
        AssertError("$.routes[3].upstreamCredential.value", "unknown property");
        AssertError("$.routes[3].upstreamCredential.env", "is required");
    }
}
