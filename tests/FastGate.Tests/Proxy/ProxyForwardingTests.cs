using System.Net.Http;
using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

public class ProxyForwardingTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _f;

    public ProxyForwardingTests(ProxyFixture f) => _f = f;

    private static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement;

    [Fact]
    public async Task Get_ThroughGateway_ReturnsUpstreamBodyAndRequestId()
    {
        using var http = _f.Gateway.CreateClient();
        using var response = await http.GetAsync("/hello");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("Hello, World!", await response.Content.ReadAsStringAsync());
        Assert.True(response.Headers.TryGetValues("X-Request-Id", out var ids));
        Assert.Equal(32, ids.Single().Length);
    }

    [Fact]
    public async Task Post_WithContentLengthBody_ArrivesWhole()
    {
        using var http = _f.Gateway.CreateClient();
        var body = new string('x', 100_000);
        using var response = await http.PostAsync("/echo", new StringContent(body));
        var echo = Json(await response.Content.ReadAsStringAsync());
        Assert.Equal(100_000, echo.GetProperty("bodyBytes").GetInt64());
        Assert.Equal("POST", echo.GetProperty("method").GetString());
    }

    [Fact]
    public async Task Post_WithChunkedBody_ArrivesWhole()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(11, Json(response.Body).GetProperty("bodyBytes").GetInt64());
    }

    [Fact]
    public async Task Forwarding_SetsForwardedHeadersAndStripsHopByHop()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("GET /echo HTTP/1.1\r\nHost: front.test\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\n" +
                               "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 10.1.1.1\r\n" +
                               "X-Forwarded-Host: spoofed\r\nX-Request-Id: my-id-1\r\nX-Custom: kept\r\n\r\n");
        var response = await client.ReadResponseAsync();
        var headers = Json(response.Body).GetProperty("headers");
        Assert.Equal("kept", headers.GetProperty("X-Custom").GetString());
        Assert.Equal("10.1.1.1, 127.0.0.1", headers.GetProperty("X-Forwarded-For").GetString());
        Assert.Equal("front.test", headers.GetProperty("X-Forwarded-Host").GetString());
        Assert.Equal("http", headers.GetProperty("X-Forwarded-Proto").GetString());
        Assert.Equal("my-id-1", headers.GetProperty("X-Request-Id").GetString());
        Assert.Equal("my-id-1", response.Headers["X-Request-Id"]);
        foreach (var hop in new[] { "X-Secret-Hop", "Keep-Alive", "TE", "Proxy-Connection" })
            Assert.False(headers.TryGetProperty(hop, out _), $"{hop} reached the upstream");
    }

    [Fact]
    public async Task Routing_MostSpecificRouteWins_AndStripPrefixRewritesThePath()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("GET /api/echo?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        var stripped = await client.ReadResponseAsync();
        Assert.Equal("/echo?q=1", Json(stripped.Body).GetProperty("path").GetString());

        var before = await _f.Gateway.ScrapeMetricsAsync();
        await client.SendAsync("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("GET /hello HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        // a request is counted once its response went out, so the last count may land just after the client read it
        await Eventually.WaitUntilAsync(async () => Counter(await _f.Gateway.ScrapeMetricsAsync(), "fastgate_requests_total{route=\"vhost\",code=\"200\"}")
            > Counter(before, "fastgate_requests_total{route=\"vhost\",code=\"200\"}"), "the vhost request to be counted");
        var after = await _f.Gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Counter(after, "fastgate_requests_total{route=\"exact\",code=\"200\"}") - Counter(before, "fastgate_requests_total{route=\"exact\",code=\"200\"}"));
        Assert.Equal(1, Counter(after, "fastgate_requests_total{route=\"vhost\",code=\"200\"}") - Counter(before, "fastgate_requests_total{route=\"vhost\",code=\"200\"}"));
    }

    internal static double Counter(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
                return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    [Fact]
    public async Task PipelinedRequests_AreAnsweredInOrder()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo?n=3 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /echo?n=4 HTTP/1.1\r\nHost: t\r\n\r\n");
        for (int i = 1; i <= 4; i++)
        {
            var r = await client.ReadResponseAsync();
            Assert.Equal($"/echo?n={i}", Json(r.Body).GetProperty("path").GetString());
        }
    }

    [Fact]
    public async Task Head_And204And304_HaveNoBodyAndKeepTheConnection()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        var head = await client.ReadResponseAsync(headRequest: true);
        Assert.Equal(200, head.Status);
        Assert.Equal("13", head.Headers["Content-Length"]);
        await client.SendAsync("GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n");
        Assert.Equal(204, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n");
        Assert.Equal(304, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        Assert.Equal("Hello, World!", (await client.ReadResponseAsync()).Body);
    }

    [Fact]
    public async Task Http10Request_IsAnsweredAndClosed()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("GET /hello HTTP/1.0\r\n\r\n");
        var r = await client.ReadResponseAsync();
        Assert.Equal(200, r.Status);
        Assert.StartsWith("Hello, World!", r.Body);
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task ExpectContinue_GatewayAnswers100ThenForwardsTheBody()
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        var interim = await client.ReadResponseAsync(headRequest: true);
        Assert.Equal(100, interim.Status);
        await client.SendAsync("data");
        var r = await client.ReadResponseAsync();
        Assert.Equal(4, Json(r.Body).GetProperty("bodyBytes").GetInt64());
    }

    [Fact]
    public async Task ServerSentEvents_ArriveOneByOne()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"), cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes("d\r\ndata: first\n\n\r\n"), cancel);
            await release.Task.WaitAsync(cancel); // the second event waits until the client has seen the first
            await stream.WriteAsync(Encoding.ASCII.GetBytes("e\r\ndata: second\n\n\r\n0\r\n\r\n"), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/events", HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal("data: first", await reader.ReadLineAsync(cts.Token));
        release.SetResult();
        Assert.Equal("", await reader.ReadLineAsync(cts.Token));
        Assert.Equal("data: second", await reader.ReadLineAsync(cts.Token));
    }

    [Fact]
    public async Task WebSocket_EchoesThroughTheTunnel()
    {
        using var ws = new ClientWebSocket();
        await ws.ConnectAsync(new Uri($"ws://{_f.Gateway.EndPoint}/ws"), CancellationToken.None);
        var buffer = new byte[1024];
        foreach (var message in new[] { "one", "two", new string('z', 900) })
        {
            await ws.SendAsync(Encoding.UTF8.GetBytes(message), WebSocketMessageType.Text, true, CancellationToken.None);
            var r = await ws.ReceiveAsync(buffer, CancellationToken.None);
            Assert.Equal(message, Encoding.UTF8.GetString(buffer, 0, r.Count));
        }
        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
        Assert.Equal(WebSocketState.Closed, ws.State);
    }

    [Fact]
    public async Task Metrics_ExposeRequestsDurationAndAllocatedBytes()
    {
        using var http = _f.Gateway.CreateClient();
        (await http.GetAsync("/hello")).Dispose();
        var text = await _f.Gateway.ScrapeMetricsAsync();
        Assert.Contains("fastgate_requests_total{route=\"exact\",code=\"200\"}", text);
        Assert.Contains("fastgate_request_duration_seconds_bucket{route=\"exact\",le=", text);
        Assert.True(Counter(text, "dotnet_gc_allocated_bytes_total") > 0);
        var destination = _f.Upstream.Address.ToString().TrimEnd('/');
        Assert.True(Counter(text, $"fastgate_upstream_connections{{cluster=\"backend\",destination=\"{destination}\",state=\"open\"}}") >= 1);
    }

    /// <summary>A read-only stream of a given length that produces bytes without holding them.</summary>
    internal sealed class PatternStream(long length) : Stream
    {
        private long _position;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = (int)Math.Min(count, length - _position);
            buffer.AsSpan(offset, n).Fill((byte)'p');
            _position += n;
            return n;
        }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

/// <summary>Tests that measure this process's live heap run alone: a test beside them holding memory (200,000 routes) would count.</summary>
[CollectionDefinition("Memory measurements", DisableParallelization = true)]
public sealed class MemoryMeasurementCollection;

[Collection("Memory measurements")]
public class LargeBodyMemoryTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _f;

    public LargeBodyMemoryTests(ProxyFixture f) => _f = f;

    private static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement;

    [Fact]
    public async Task LargeBodies_StreamBothWaysWithBoundedMemory()
    {
        const long size = 50L * 1024 * 1024;
        long baseline = GC.GetTotalMemory(forceFullCollection: true);
        long peak = 0;
        using var sampling = new CancellationTokenSource();
        // Live memory (after a full collection) sampled during the transfers: garbage left by tests running in
        // parallel does not count, a body held whole by the gateway would (≥ 50 MB live at the end of a transfer).
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: true));
                await Task.Delay(50); // the sampling interval (not a wait for anything)
            }
        });

        using var http = _f.Gateway.CreateClient();
        using (var response = await http.GetAsync($"/bytes/{size}", HttpCompletionOption.ResponseHeadersRead))
        {
            var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[81920];
            long total = 0;
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0) total += n;
            Assert.Equal(size, total);
        }
        var content = new StreamContent(new ProxyForwardingTests.PatternStream(size));
        content.Headers.ContentLength = size;
        using (var response = await http.PostAsync("/echo", content))
            Assert.Equal(size, Json(await response.Content.ReadAsStringAsync()).GetProperty("bodyBytes").GetInt64());

        sampling.Cancel();
        await sampler;
        // Gateway, upstream and client share this process: none of them may hold a whole body.
        Assert.True(peak - baseline < 40L * 1024 * 1024, $"heap grew by {(peak - baseline) / 1048576} MB while streaming 2 x 50 MB");
    }
}
