using System.Collections.Concurrent;
using System.Net;
using System.Net.Http;
using FastGate.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Observability;

/// <summary>OpenTelemetry spans exported by OTLP/HTTP to a real collector endpoint, against what the upstream saw.</summary>
public class TracingTests
{
    private const string Key = "trace-test-key-0123456789";

    /// <summary>An upstream that answers 200 and remembers each request's traceparent.</summary>
    private sealed class TraceUpstream : IAsyncDisposable
    {
        private readonly WebApplication _app;
        public readonly ConcurrentQueue<string> TraceParents = new();
        private TraceUpstream(WebApplication app) => _app = app;
        public string Address => _app.Urls.First();

        public static async Task<TraceUpstream> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            var upstream = new TraceUpstream(app);
            app.Run(async context =>
            {
                upstream.TraceParents.Enqueue(context.Request.Headers["traceparent"].ToString());
                await context.Response.WriteAsync("ok");
            });
            await app.StartAsync();
            return upstream;
        }

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }

    private static string Config(string upstream, string collector, string tracing) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [ { "id": "acme", "apiKeys": [ "{{FastGate.Security.ApiKeys.Hash(Key)}}" ] } ],
          "routes": [
            { "id": "private", "match": { "pathPrefix": "/private" }, "cluster": "backend", "auth": ["apiKey"] },
            { "id": "open", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ],
          "tracing": { "enabled": true, "endpoint": "{{collector}}", "exportInterval": "100ms", "serviceName": "edge-gw" {{tracing}} }
        }
        """;

    [Fact]
    public async Task ForwardedRequest_ServerAndUpstreamSpans_ParentedOnIncomingTrace_AndTheUpstreamHangsUnderThem()
    {
        await using var collector = await OtlpCollector.StartAsync();
        await using var upstream = await TraceUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address, collector.Endpoint, ""));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        const string traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        const string parentId = "00f067aa0ba902b7";
        using var request = new HttpRequestMessage(HttpMethod.Get, "/private/orders?id=7");
        request.Headers.Add("traceparent", $"00-{traceId}-{parentId}-01");
        request.Headers.Add("X-API-Key", Key);
        using (var response = await http.SendAsync(request)) Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        await collector.WaitForSpansAsync(2);
        var spans = collector.Spans;
        Assert.Equal(2, spans.Count);
        var server = Assert.Single(spans, s => s.Kind == OtlpSpan.KindServer);
        var client = Assert.Single(spans, s => s.Kind == OtlpSpan.KindClient);
        Assert.Equal(traceId, server.TraceId);
        Assert.Equal(parentId, server.ParentSpanId);
        Assert.Equal(traceId, client.TraceId);
        Assert.Equal(server.SpanId, client.ParentSpanId);
        Assert.Equal("edge-gw", server.ServiceName);
        Assert.Equal("FastGate", server.Scope);
        Assert.Equal("GET", server.Name);
        Assert.Equal("private", server.Attributes["fastgate.route"]);
        Assert.Equal("backend", server.Attributes["fastgate.cluster"]);
        Assert.Equal("acme", server.Attributes["fastgate.consumer"]);
        Assert.Equal("forward", server.Attributes["fastgate.decision"]);
        Assert.Equal(200L, server.Attributes["http.response.status_code"]);
        Assert.Equal("/private/orders", server.Attributes["url.path"]);
        Assert.Equal(upstream.Address, client.Attributes["server.address"]);
        Assert.True(server.StartNanos <= client.StartNanos, $"the upstream span starts within the server span ({server.StartNanos} > {client.StartNanos})");
        Assert.True(client.EndNanos <= server.EndNanos, $"the upstream span ends within the server span ({client.EndNanos} > {server.EndNanos})");

        // the upstream received the upstream span as its parent: its own spans continue this trace under the gateway's
        Assert.True(upstream.TraceParents.TryDequeue(out var forwarded));
        Assert.Equal($"00-{traceId}-{client.SpanId}-01", forwarded);
    }

    [Fact]
    public async Task SampleRatioZero_WithAlwaysSampleErrors_ExportsTheRefusedRequestOnly_AndForwardsUnsampled()
    {
        await using var collector = await OtlpCollector.StartAsync();
        await using var upstream = await TraceUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address, collector.Endpoint,
            """, "sampleRatio": 0, "alwaysSampleErrors": true"""));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        for (int i = 0; i < 5; i++)
            using (var ok = await http.GetAsync("/open/" + i)) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using (var refused = await http.GetAsync("/private/x")) Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.True(gateway.Host.Runtime.Tracing!.Flush());

        await collector.WaitForSpansAsync(1);
        var span = Assert.Single(collector.Spans);
        Assert.Equal(OtlpSpan.KindServer, span.Kind);
        Assert.Equal(OtlpSpan.StatusError, span.StatusCode);
        Assert.Equal("authentication_required", span.Attributes["fastgate.decision"]);
        Assert.Equal(401L, span.Attributes["http.response.status_code"]);
        // the five forwarded requests were recorded, not sampled: the upstream was told so
        Assert.Equal(5, upstream.TraceParents.Count);
        Assert.All(upstream.TraceParents, tp => Assert.EndsWith("-00", tp));
    }

    [Fact]
    public async Task TracingOff_NoSpanIsStarted_AndTheTraceContextIsStillPropagated()
    {
        await using var collector = await OtlpCollector.StartAsync();
        await using var upstream = await TraceUpstream.StartAsync();
        var config = Config(upstream.Address, collector.Endpoint, "").Replace("\"enabled\": true", "\"enabled\": false");
        await using var gateway = await TestGateway.StartAsync(config);
        Assert.Null(gateway.Host.Runtime.Tracing);
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        using var request = new HttpRequestMessage(HttpMethod.Get, "/open");
        request.Headers.Add("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        using (var response = await http.SendAsync(request)) Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(upstream.TraceParents.TryDequeue(out var forwarded));
        Assert.StartsWith("00-4bf92f3577b34da6a3ce929d0e0e4736-", forwarded);
        Assert.Equal(0, collector.Requests);
    }

    [Theory]
    [InlineData("""{ "tracing": { "endpoint": "udp://x" } }""", "$.tracing.endpoint")]
    [InlineData("""{ "tracing": { "protocol": "thrift" } }""", "$.tracing.protocol")]
    [InlineData("""{ "tracing": { "sampleRatio": 1.5 } }""", "$.tracing.sampleRatio")]
    [InlineData("""{ "tracing": { "sampleRate": 1 } }""", "$.tracing.sampleRate")]
    [InlineData("""{ "tracing": { "exportInterval": "0s" } }""", "$.tracing.exportInterval")]
    public void BadTracingSection_IsAnErrorWithItsJsonPath(string json, string path)
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load(json);
        Assert.Contains(loaded.Errors, e => e.ToString().Contains(path));
    }
}
