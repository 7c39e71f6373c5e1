using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>
/// Issue 19 item 6: a reused upstream connection that resets after the request was written. Only requests that are
/// safe to repeat (GET, HEAD, OPTIONS, TRACE, or any method with an Idempotency-Key) and that can be replayed (no body,
/// or a body held whole in the request buffer) are sent again; everything else gets 502 and reached the upstream once.
/// </summary>
public class RetryTests
{
    /// <summary>
    /// Answers the first request on each connection (keep-alive), and on the second reads the head (and body) and resets
    /// the connection: a kept-alive connection that dies after the request was written. Counts requests by request line.
    /// </summary>
    private sealed class ResettingUpstream : IAsyncDisposable
    {
        private readonly RawUpstream _raw;
        public readonly ConcurrentDictionary<string, int> Seen = new();

        public ResettingUpstream() => _raw = new RawUpstream(async (stream, cancel) =>
        {
            for (int n = 0; ; n++)
            {
                var head = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (!head.EndsWith("\r\n\r\n", StringComparison.Ordinal)) return;
                Seen.AddOrUpdate(head[..head.IndexOf(" HTTP/", StringComparison.Ordinal)], 1, (_, c) => c + 1);
                int length = 0;
                foreach (var line in head.Split("\r\n"))
                    if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)) length = int.Parse(line[15..].Trim());
                var body = new byte[length];
                for (int got = 0; got < length;)
                {
                    int r = await stream.ReadAsync(body.AsMemory(got), cancel);
                    if (r == 0) return;
                    got += r;
                }
                if (n > 0)
                {
                    stream.Socket.LingerState = new LingerOption(true, 0); // RST, not FIN
                    stream.Socket.Close();
                    return;
                }
                var text = $"ok:{Encoding.ASCII.GetString(body)}";
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {text.Length}\r\n\r\n{text}"), cancel);
            }
        });

        public string Address => _raw.Address;
        public int Count(string requestLine) => Seen.GetValueOrDefault(requestLine);
        public ValueTask DisposeAsync() => _raw.DisposeAsync();
    }

    /// <summary>One request on a fresh client connection after a warm-up that leaves one kept-alive upstream connection pooled.</summary>
    private static async Task<RawResponse> SendOnReusedConnectionAsync(TestGateway gateway, string request)
    {
        using (var warm = await RawClient.ConnectAsync(gateway.EndPoint))
        {
            await warm.SendAsync("GET /warm HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(200, (await warm.ReadResponseAsync()).Status);
        }
        // the warm-up's upstream connection goes back to its pool just after the response: wait for it, or the request
        // below may open a fresh connection (which the upstream answers) instead of reusing the one that resets
        var pool = gateway.Host.Runtime.Current.Clusters[0].Destinations[0].Pool;
        await Eventually.WaitUntilAsync(() => pool.IdleConnections == 1, "the warm-up connection pooled");
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        return await client.ReadResponseAsync();
    }

    [Theory]
    [InlineData("POST", "Content-Length: 0\r\n", "")]
    [InlineData("POST", "Content-Length: 3\r\n", "abc")]
    [InlineData("PATCH", "Content-Length: 3\r\n", "abc")]
    [InlineData("DELETE", "", "")]
    public async Task NonIdempotentRequest_WrittenBeforeTheReset_Is502_AndReachedTheUpstreamOnce(string method, string headers, string body)
    {
        await using var upstream = new ResettingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var response = await SendOnReusedConnectionAsync(gateway, $"{method} /order HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}");
        Assert.Equal(502, response.Status);
        Assert.Contains("upstream_reset", response.Body);
        Assert.Equal(1, upstream.Count($"{method} /order"));
    }

    [Theory]
    [InlineData("GET", "", "", "ok:")]
    [InlineData("OPTIONS", "", "", "ok:")]
    [InlineData("POST", "Idempotency-Key: 7f3a\r\nContent-Length: 3\r\n", "abc", "ok:abc")] // buffered body: replayed
    [InlineData("DELETE", "Idempotency-Key: 7f3b\r\n", "", "ok:")]
    public async Task RepeatableRequest_IsRetriedOnce_OnAFreshConnection(string method, string headers, string body, string expected)
    {
        await using var upstream = new ResettingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address));
        var response = await SendOnReusedConnectionAsync(gateway, $"{method} /order HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}");
        Assert.Equal(200, response.Status);
        Assert.Equal(expected, response.Body);
        Assert.Equal(2, upstream.Count($"{method} /order"));
    }

    [Fact]
    public async Task StreamedBody_IsNotRetried_EvenWithAnIdempotencyKey()
    {
        await using var upstream = new ResettingUpstream();
        // requestBufferBytes 0: the body is streamed from the client, so it cannot be sent a second time
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address, limits: "\"requestBufferBytes\": 0"));
        var response = await SendOnReusedConnectionAsync(gateway, "PUT /order HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\nContent-Length: 3\r\n\r\nabc");
        Assert.Equal(502, response.Status);
        Assert.Equal(1, upstream.Count("PUT /order"));
    }
}
