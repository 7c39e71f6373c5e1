using System.Net;
using System.Net.Sockets;
using System.Text;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

public class ProxyFailureTests
{
    private static async Task<RawUpstream> CountingUpstream() => await Task.FromResult(new RawUpstream(async (stream, cancel) =>
    {
        await RawUpstream.ReadHeadAsync(stream, cancel);
        await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), cancel);
    }));

    public static TheoryData<string, int> MalformedRequests => new()
    {
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n continued\r\n\r\n", 400 },
        { "GET / HTTP/1.1\nHost: a\n\n", 400 },
        { "GET / HTTP/1.1\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501 },
        { "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505 },
        { "GET /" + new string('a', 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: " + new string('a', 40000) + "\r\n\r\n", 431 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", 400 },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public async Task MalformedRequest_GetsItsStatusAndClosedConnection_AndNothingReachesTheUpstream(string request, int status)
    {
        await using var upstream = await CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        var response = await client.ReadResponseAsync();
        Assert.Equal(status, response.Status);
        Assert.Equal("close", response.Headers["Connection"]);
        Assert.True(await client.IsClosedByServerAsync());
        if (!request.Contains("chunked\r\n\r\n", StringComparison.Ordinal) || status != 400 || request.Contains("Content-Length"))
            Assert.Equal(0, upstream.Connections);
    }

    [Fact]
    public async Task ChunkedBodyOverTheLimit_Gets413()
    {
        await using var upstream = await CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address, limits: "\"maxBodyBytes\": 10"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n");
        Assert.Equal(413, (await client.ReadResponseAsync()).Status);
    }

    [Fact]
    public async Task UpstreamDown_Is502()
    {
        using var dead = Ports.Refusing();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(dead.Address));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/");
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Contains("upstream_connect_failed", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task UpstreamTooSlow_Is504()
    {
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await Task.Delay(Timeout.Infinite, cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address, limits: "\"upstreamResponseTimeout\": \"500ms\""));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/");
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")]
    [InlineData("HTTP/1.1 200 OK\nContent-Length: 2\n\nok")]
    [InlineData("NONSENSE\r\n\r\n")]
    [InlineData("")]
    public async Task MalformedOrMissingUpstreamResponse_Is502(string reply)
    {
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(reply), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/");
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "")]
    [InlineData("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", 201, "abc")]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close", 200, "until-close")]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok")]
    public async Task UpstreamResponseFraming_IsRelayedExactly(string reply, int status, string body)
    {
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(reply), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        var response = await client.ReadResponseAsync();
        if (response.Status == 103) response = await client.ReadResponseAsync();
        Assert.Equal(status, response.Status);
        Assert.Equal(body, response.Body);
    }

    [Fact]
    public async Task Slowloris_ConnectionIsClosedAfterTheHeaderTimeout()
    {
        await using var upstream = await CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address, limits: "\"headerTimeout\": \"1s\""));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        var closed = client.IsClosedByServerAsync(timeoutMs: 10000);
        // the point of the test: a header byte every 400 ms, a head never finished within the 1 s header timeout
        var dribbleInterval = TimeSpan.FromMilliseconds(400);
        for (int i = 0; i < 6 && !closed.IsCompleted; i++)
        {
            await Task.WhenAny(closed, Task.Delay(dribbleInterval));
            try { await client.SendAsync("a"); } catch (IOException) { break; }
        }
        Assert.True(await closed, "the slow client was not disconnected");
        Assert.Equal(0, upstream.Connections);
    }

    [Fact]
    public async Task NoRouteForTheRequest_Is404()
    {
        await using var upstream = await CountingUpstream();
        var config = TestGateway.Config(upstream.Address).Replace("\"match\": { \"pathPrefix\": \"/\" }", "\"match\": { \"pathPrefix\": \"/only\", \"methods\": [\"GET\"] }");
        await using var gateway = await TestGateway.StartAsync(config);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(404, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("POST /only HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(404, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("GET /only/x HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
    }

    [Fact]
    public async Task RoundRobin_SpreadsRequestsOverDestinations()
    {
        int a = 0, b = 0;
        await using var upA = new RawUpstream(async (s, c) => { while (true) { if ((await RawUpstream.ReadHeadAsync(s, c)).Length == 0) return; Interlocked.Increment(ref a); await s.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"u8.ToArray(), c); } });
        await using var upB = new RawUpstream(async (s, c) => { while (true) { if ((await RawUpstream.ReadHeadAsync(s, c)).Length == 0) return; Interlocked.Increment(ref b); await s.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB"u8.ToArray(), c); } });
        var config = TestGateway.Config(upA.Address).Replace($"{{ \"address\": \"{upA.Address}\" }}", $"{{ \"address\": \"{upA.Address}\" }}, {{ \"address\": \"{upB.Address}\" }}");
        await using var gateway = await TestGateway.StartAsync(config);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 10; i++)
        {
            await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        }
        Assert.Equal(5, a);
        Assert.Equal(5, b);
    }

    [Fact]
    public async Task GracefulShutdown_FinishesRequestsInFlight()
    {
        await using var upstream = await GatedUpstream.StartAsync();
        var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address, limits: "\"drainTimeout\": \"10s\""));
        using var http = gateway.CreateClient();
        var inFlight = Enumerable.Range(0, 5).Select(_ => http.GetAsync("/held")).ToArray();
        await upstream.WaitForHeldAsync(5); // all five are at the upstream, waiting for their responses
        using var idle = await RawClient.ConnectAsync(gateway.EndPoint);
        await idle.SendAsync("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(200, (await idle.ReadResponseAsync()).Status);

        var stopping = gateway.Host.StopAsync();
        await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.IsDraining, "the gateway is draining");
        Assert.All(inFlight, r => Assert.False(r.IsCompleted, "a request in flight was answered before its upstream responded"));
        upstream.Release();
        var responses = await Task.WhenAll(inFlight);
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.True(await idle.IsClosedByServerAsync(), "an idle keep-alive connection stayed open during shutdown");
        await stopping;
        await gateway.DisposeAsync();
        await Assert.ThrowsAnyAsync<SocketException>(async () =>
        {
            using var c = new TcpClient();
            await c.ConnectAsync(gateway.EndPoint);
        });
    }
}
