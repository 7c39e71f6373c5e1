using System.Net.Sockets;
using System.Text;
using FastGate.Http;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>
/// Upstreams that break the protocol, scripted byte by byte: what the gateway relays to the client must stay
/// well-framed, and a connection the upstream poisoned must not carry another request.
/// </summary>
public class HostileUpstreamTests
{
    private static RawUpstream Replying(string reply, TaskCompletionSource<bool>? closedAfterReply = null) => new(async (stream, cancel) =>
    {
        await RawUpstream.ReadHeadAsync(stream, cancel);
        await stream.WriteAsync(Encoding.Latin1.GetBytes(reply), cancel);
        if (closedAfterReply is null) return;
        // the gateway drops the connection (read returns 0) rather than keeping it for the next request
        var one = new byte[1];
        closedAfterReply.TrySetResult(await stream.ReadAsync(one, cancel) == 0);
    });

    private static Task<string> RawExchangeAsync(TestGateway gateway, string request, string endMarker) =>
        RawExchangeAsync(gateway, request, text => text.Contains(endMarker, StringComparison.Ordinal));

    /// <summary>Sends raw bytes and reads until <paramref name="done"/> holds, the gateway closes, or 10 s pass.</summary>
    private static async Task<string> RawExchangeAsync(TestGateway gateway, string request, Func<string, bool> done)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.Latin1.GetBytes(request));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var text = new StringBuilder();
        var buffer = new byte[8192];
        while (!done(text.ToString()))
        {
            int n;
            try { n = await stream.ReadAsync(buffer, cts.Token); }
            catch (Exception e) when (e is IOException or OperationCanceledException) { break; }
            if (n == 0) break;
            text.Append(Encoding.Latin1.GetString(buffer, 0, n));
        }
        return text.ToString();
    }

    [Fact]
    public async Task UnsolicitedSwitchingProtocols_Is502_AndTheUpstreamConnectionIsDropped()
    {
        var closed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = Replying("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw-bytes", closed);
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(502, response.Status);
        Assert.Contains("upstream_protocol_violation", response.Body, StringComparison.Ordinal);
        Assert.True(await closed.Task.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task EndlessInterimResponses_AreCutOffWith502()
    {
        var reply = string.Concat(Enumerable.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", 20_000))
                    + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        await using var upstream = Replying(reply);
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        int interim = 0;
        RawResponse response;
        while ((response = await client.ReadResponseAsync()).Status is >= 100 and < 200) interim++;
        Assert.Equal(502, response.Status);
        Assert.Contains("upstream_protocol_violation", response.Body, StringComparison.Ordinal);
        Assert.True(interim <= 8, $"{interim} interim responses relayed");
    }

    [Fact]
    public async Task InterimResponses_AreNotRelayedToAnHttp10Client()
    {
        await using var upstream = Replying("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.0\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("ok", response.Body);
    }

    [Theory]
    [InlineData("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n", false)]
    [InlineData("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n", false)]
    [InlineData("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n", true)]
    public async Task ContentLengthOnBodilessStatus_IsDroppedFor204_AndKeptFor304(string reply, bool kept)
    {
        await using var upstream = Replying(reply);
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var text = await RawExchangeAsync(gateway, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
        Assert.Contains("X-A: 1\r\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Transfer-Encoding", text, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(kept, text.Contains("Content-Length: 5\r\n", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ContentLengthOnInterimResponse_IsDropped()
    {
        await using var upstream = Replying("HTTP/1.1 103 Early Hints\r\nContent-Length: 7\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var text = await RawExchangeAsync(gateway, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\nok");
        var interim = text[..text.IndexOf("\r\n\r\n", StringComparison.Ordinal)];
        Assert.StartsWith("HTTP/1.1 103", interim, StringComparison.Ordinal);
        Assert.DoesNotContain("Content-Length", interim, StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5 , 5\r\nContent-Length: 5\r\n\r\nhello")]
    public async Task RepeatedContentLength_IsCollapsedToOneLine(string reply)
    {
        await using var upstream = Replying(reply);
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var text = await RawExchangeAsync(gateway, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "hello");
        int count = 0;
        foreach (var line in text.Split("\r\n"))
        {
            if (!line.StartsWith("Content-Length", StringComparison.OrdinalIgnoreCase)) continue;
            count++;
            Assert.Equal("Content-Length: 5", line);
        }
        Assert.Equal(1, count);
        Assert.EndsWith("\r\n\r\nhello", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RepeatedContentLengthInARequest_IsCollapsedUpstream()
    {
        var head = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            head.TrySetResult(await RawUpstream.ReadHeadAsync(stream, cancel));
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        var sent = await head.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var lengths = sent.Split("\r\n").Where(l => l.StartsWith("Content-Length", StringComparison.OrdinalIgnoreCase)).ToArray();
        Assert.Equal(["Content-Length: 2"], lengths);
    }

    private const string ForbiddenTrailers =
        "Content-Length: 10\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nSet-Cookie: session=stolen\r\nAuthorization: Bearer x\r\n"
        + "X-Consumer-Id: admin\r\nX_Consumer_Id: admin\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=b\r\nContent-Type: text/evil\r\nCache-Control: no-store\r\nTrailer: X-Ok\r\nConnection: close\r\nX-Ok: 1\r\nX-Checksum: abc\r\n\r\n";

    [Fact]
    public async Task ResponseTrailersWithForbiddenFields_AreRelayedWithoutThem()
    {
        await using var upstream = Replying("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + ForbiddenTrailers);
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var text = await RawExchangeAsync(gateway, "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            t => t.IndexOf("\r\n0\r\n", StringComparison.Ordinal) is int end and >= 0 && t.IndexOf("\r\n\r\n", end, StringComparison.Ordinal) >= 0);
        var trailers = text[(text.IndexOf("\r\n0\r\n", StringComparison.Ordinal) + 5)..];
        Assert.Equal("X-Ok: 1\r\nX-Checksum: abc\r\n\r\n", trailers);
    }

    [Fact]
    public async Task RequestTrailersWithForbiddenFields_AreForwardedWithoutThem()
    {
        var body = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            var got = new StringBuilder();
            var buffer = new byte[4096];
            while (!got.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                int n = await stream.ReadAsync(buffer, cancel);
                if (n == 0) break;
                got.Append(Encoding.Latin1.GetString(buffer, 0, n));
            }
            body.TrySetResult(got.ToString());
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), cancel);
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + ForbiddenTrailers);
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        Assert.Equal("3\r\nabc\r\n0\r\nX-Ok: 1\r\nX-Checksum: abc\r\n\r\n", await body.Task.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task ResponseChunkLineOverTheBound_ClosesTheClientConnection_WithoutRelayingIt()
    {
        var extension = new string('e', 50_000);
        await using var upstream = Replying("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=" + extension + "\r\nd\r\n0\r\n\r\n");
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        // a keep-alive request: only the gateway closing the connection ends the read
        var text = await RawExchangeAsync(gateway, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\r\n0\r\n\r\n", text, StringComparison.Ordinal);
        Assert.True(text.Length < ChunkedReader.MaxChunkLineBytes + 1024, $"{text.Length} bytes relayed");
    }

    /// <summary>
    /// The upstream answers HEAD with a head that announces 5 bytes, then sends them late: only once the next
    /// request arrives on the same connection, in front of that request's real response (the worst timing: after
    /// the gateway checked the idle connection). The next request must still get its own response.
    /// </summary>
    [Theory]
    [InlineData("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")]
    [InlineData("HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")]
    public async Task LateBodyAfterABodilessResponse_DoesNotPoisonTheNextRequest(string method, string head)
    {
        const string poison = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            bool first = true;
            while (true)
            {
                var request = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (request.Length == 0) return;
                if (request.StartsWith(method + " /first", StringComparison.Ordinal))
                {
                    await stream.WriteAsync(Encoding.Latin1.GetBytes(head), cancel);
                    first = false;
                    continue;
                }
                // a later request on the connection that answered /first: the late "body" goes out first
                var late = first ? "" : poison;
                await stream.WriteAsync(Encoding.Latin1.GetBytes(late + "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"), cancel);
            }
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(method + " /first HTTP/1.1\r\nHost: a\r\n\r\n");
        var firstResponse = await client.ReadResponseAsync(headRequest: method == "HEAD");
        Assert.True(firstResponse.Status is 200 or 204);
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync("GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            var next = await client.ReadResponseAsync();
            Assert.Equal(200, next.Status);
            Assert.Equal("real", next.Body);
        }
    }

    /// <summary>Bytes already waiting on a connection when its response ends (a body after a 304) retire it.</summary>
    [Fact]
    public async Task BytesBufferedAfterABodilessResponse_RetireTheConnection()
    {
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            while (true)
            {
                var request = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (request.Length == 0) return;
                var reply = request.StartsWith("GET /first", StringComparison.Ordinal)
                    ? "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
                    : "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal";
                await stream.WriteAsync(Encoding.Latin1.GetBytes(reply), cancel);
            }
        });
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(304, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        var next = await client.ReadResponseAsync();
        Assert.Equal("real", next.Body);
    }
}
