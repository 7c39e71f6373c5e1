using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Observability;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>
/// Issue 19 item 3: slow clients after the head. A body dribbled byte by byte, a client that stops reading its response,
/// and an upstream that never answers must not hold an upstream connection; limits are tiny so the tests are quick.
/// </summary>
public class SlowClientTests
{
    private const int BigBody = 10 * 1024 * 1024;

    /// <summary>
    /// A keep-alive upstream: reads a head and its Content-Length body, then answers by path: /big sends 10 MB, /hang never
    /// answers, anything else "ok:&lt;body length&gt;". Counts the heads it read and signals when a /big response breaks off.
    /// </summary>
    private sealed class ScriptedUpstream : IAsyncDisposable
    {
        private readonly RawUpstream _raw;
        public readonly ConcurrentQueue<string> Heads = new();
        public readonly TaskCompletionSource BigCut = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource SlowHeadSeen = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ScriptedUpstream() => _raw = new RawUpstream(ServeAsync);

        public string Address => _raw.Address;
        public int Connections => _raw.Connections;

        private async Task ServeAsync(NetworkStream stream, CancellationToken cancel)
        {
            while (true)
            {
                var head = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (!head.EndsWith("\r\n\r\n", StringComparison.Ordinal)) return;
                Heads.Enqueue(head);
                if (head.StartsWith("POST /slow", StringComparison.Ordinal)) SlowHeadSeen.TrySetResult();
                int length = 0;
                foreach (var line in head.Split("\r\n"))
                    if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)) length = int.Parse(line[15..].Trim());
                var body = new byte[length];
                int got = 0;
                while (got < length)
                {
                    int n = await stream.ReadAsync(body.AsMemory(got), cancel);
                    if (n == 0) return;
                    got += n;
                }
                if (head.StartsWith("GET /hang", StringComparison.Ordinal))
                {
                    await Task.Delay(Timeout.Infinite, cancel);
                }
                else if (head.StartsWith("GET /big", StringComparison.Ordinal))
                {
                    var chunk = new byte[65536];
                    Array.Fill(chunk, (byte)'x');
                    try
                    {
                        await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {BigBody}\r\n\r\n"), cancel);
                        for (int sent = 0; sent < BigBody; sent += chunk.Length) await stream.WriteAsync(chunk, cancel);
                    }
                    catch (IOException)
                    {
                        BigCut.TrySetResult(); // the gateway closed this upstream connection
                        return;
                    }
                }
                else
                {
                    var text = $"ok:{length}";
                    await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {text.Length}\r\n\r\n{text}"), cancel);
                }
            }
        }

        public ValueTask DisposeAsync() => _raw.DisposeAsync();
    }

    private static string Config(string upstream, string limits, int maxConnections = 16, string route = "") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ],
                          "maxConnectionsPerDestination": {{maxConnections}}, "maxIdleConnectionsPerDestination": {{maxConnections}} } ],
          "routes": [ {{route}} { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ],
          "limits": { {{limits}} }
        }
        """;

    private static double Rejections(TestGateway gateway, string reason) => gateway.Metrics.Rejections.WithLabels(reason).Value;

    private static string Reason(RawResponse r) => JsonDocument.Parse(r.Body).RootElement.GetProperty("reason").GetString()!;

    [Theory]
    [InlineData("Content-Length: 10\r\n", "a")]
    [InlineData("Transfer-Encoding: chunked\r\n", "5\r\nab")]
    public async Task SlowBody_WithinTheBufferSize_Gets408_AndTheUpstreamSeesNoRequest(string framing, string start)
    {
        await using var upstream = new ScriptedUpstream();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address, "\"bodyIdleTimeout\": \"500ms\""));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync($"POST /slow HTTP/1.1\r\nHost: a\r\n{framing}\r\n{start}");

        var response = await client.ReadResponseAsync();
        Assert.Equal(408, response.Status);
        Assert.Equal("request_body_timeout", Reason(response));
        Assert.Equal("close", response.Headers["Connection"]);
        Assert.True(await client.IsClosedByServerAsync());
        Assert.Equal(0, upstream.Connections); // buffered: no upstream connection was ever leased for it
        Assert.Equal(1, Rejections(gateway, "request_body_timeout"));
    }

    [Fact]
    public async Task SlowBody_Streamed_Gets408_AndItsUpstreamConnectionIsReleased()
    {
        await using var upstream = new ScriptedUpstream();
        // requestBufferBytes 0: the body streams, so the slow client holds the only upstream connection until stopped
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address,
            "\"bodyIdleTimeout\": \"500ms\", \"requestBufferBytes\": 0", maxConnections: 1));
        using var slow = await RawClient.ConnectAsync(gateway.EndPoint);
        await slow.SendAsync("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\na");
        await upstream.SlowHeadSeen.Task.WaitAsync(TimeSpan.FromSeconds(10)); // it holds the upstream connection now

        var response = await slow.ReadResponseAsync();
        Assert.Equal(408, response.Status);
        Assert.Equal("request_body_timeout", Reason(response));

        using var http = gateway.CreateClient();
        using var good = await http.GetAsync("/good");
        Assert.Equal(HttpStatusCode.OK, good.StatusCode); // the one connection was given back (discarded, then reopened)
    }

    [Fact]
    public async Task BodyBelowTheMinimumRate_Gets408_EvenThoughBytesKeepComing()
    {
        await using var upstream = new ScriptedUpstream();
        // a byte every 50 ms never trips the 5 s idle timeout; 20 B/s is below the 1000 B/s minimum after 500 ms
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address,
            "\"bodyIdleTimeout\": \"5s\", \"minRequestBodyRate\": 1000, \"minRateGracePeriod\": \"500ms\", \"requestBufferBytes\": 0"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
        using var stop = new CancellationTokenSource();
        var drip = Task.Run(async () =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    await client.SendAsync("a");
                    await Task.Delay(50, stop.Token);
                }
            }
            catch (Exception) { /* closed by the gateway, or stopped */ }
        });
        var response = await client.ReadResponseAsync();
        await stop.CancelAsync();
        await drip;
        Assert.Equal(408, response.Status);
        Assert.Equal("request_body_too_slow", Reason(response));
        Assert.Equal(1, Rejections(gateway, "request_body_too_slow"));
    }

    [Fact]
    public async Task SlowClients_DoNotStarveGoodRequests_AndTheirBufferedBodiesArriveWhole()
    {
        await using var upstream = new ScriptedUpstream();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address, "\"bodyIdleTimeout\": \"30s\"", maxConnections: 2));
        var slow = new List<RawClient>();
        try
        {
            for (int i = 0; i < 8; i++)
            {
                var c = await RawClient.ConnectAsync(gateway.EndPoint);
                slow.Add(c);
                await c.SendAsync("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
                // the gateway answers the expectation when it goes on to the body: the head is routed and past its checks
                Assert.Equal(100, (await c.ReadResponseAsync()).Status);
                await c.SendAsync("abc");
            }

            // eight bodies pending against two upstream connections: good requests still get through
            using var http = gateway.CreateClient();
            for (int i = 0; i < 5; i++)
            {
                using var good = await http.GetAsync("/good");
                Assert.Equal(HttpStatusCode.OK, good.StatusCode);
            }
            Assert.DoesNotContain(upstream.Heads, h => h.StartsWith("POST", StringComparison.Ordinal));

            // the slow clients finish: each body reaches the upstream whole
            foreach (var c in slow)
            {
                await c.SendAsync("defghij");
                var done = await c.ReadResponseAsync();
                Assert.Equal(200, done.Status);
                Assert.Equal("ok:10", done.Body);
            }
        }
        finally
        {
            foreach (var c in slow) c.Dispose();
        }
    }

    [Fact]
    public async Task ClientThatStopsReading_IsCut_AndItsUpstreamConnectionIsFreed()
    {
        await using var upstream = new ScriptedUpstream();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address,
            "\"minResponseRate\": 1000000, \"minRateGracePeriod\": \"500ms\"", maxConnections: 1));

        // a reader at full speed gets the whole 10 MB (the minimum rate does not cut a client that takes the bytes)
        using (var http = gateway.CreateClient())
        {
            var all = await http.GetByteArrayAsync("/big");
            Assert.Equal(BigBody, all.Length);
        }

        // a client that reads the head and then nothing: small receive buffer, so its side fills up quickly
        using var stalled = new TcpClient { ReceiveBufferSize = 4096 };
        await stalled.ConnectAsync(gateway.EndPoint);
        var stream = stalled.GetStream();
        await stream.WriteAsync("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"u8.ToArray());
        var head = new StringBuilder();
        var one = new byte[1];
        while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal) && await stream.ReadAsync(one) == 1) head.Append((char)one[0]);
        Assert.StartsWith("HTTP/1.1 200", head.ToString());

        // the gateway cuts the client and closes the upstream connection it was relaying from
        await upstream.BigCut.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using (var http = gateway.CreateClient())
        {
            using var good = await http.GetAsync("/good");
            Assert.Equal(HttpStatusCode.OK, good.StatusCode); // maxConnectionsPerDestination 1: the slot is free again
        }
        Assert.Equal(1, Rejections(gateway, "response_too_slow"));
    }

    [Fact]
    public async Task RouteRequestTimeout_Gives504_WhenNoResponseHeadCameInTime()
    {
        await using var upstream = new ScriptedUpstream();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address, "\"upstreamResponseTimeout\": \"30s\"",
            route: """{ "id": "hang", "match": { "pathPrefix": "/hang" }, "cluster": "backend", "requestTimeout": "500ms" },"""));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /hang HTTP/1.1\r\nHost: a\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(504, response.Status);
        Assert.Equal("request_timeout", Reason(response));
        Assert.Equal(1, Rejections(gateway, "request_timeout"));

        // the connection stays usable, and other routes have no such timeout
        await client.SendAsync("GET /good HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
    }

    [Theory]
    [InlineData(16)]    // the chunked body outgrows the buffer: its buffered part is sent, the rest streams on
    [InlineData(65536)] // both bodies are buffered whole
    public async Task BufferedAndOverflowingBodies_ArriveWhole_AndPipelinedRequestsAfterThemStillParse(int bufferBytes)
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Address.ToString().TrimEnd('/'),
            limits: $"\"requestBufferBytes\": {bufferBytes}"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                               "a\r\n0123456789\r\na;x=y\r\n0123456789\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n" +
                               "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\nhello world!" +
                               "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
        foreach (long expected in new long[] { 30, 12, 0 })
        {
            var response = await client.ReadResponseAsync();
            Assert.Equal(200, response.Status);
            Assert.Equal(expected, JsonDocument.Parse(response.Body).RootElement.GetProperty("bodyBytes").GetInt64());
        }
    }

    [Fact]
    public void SlowClientLimits_AreBound_Validated_AndDefaulted()
    {
        var defaults = ConfigLoader.Load(Config("http://127.0.0.1:1", ""));
        Assert.True(defaults.IsValid, string.Join("\n", defaults.Errors));
        var l = defaults.Config!.Limits;
        Assert.Equal((TimeSpan.FromSeconds(10), 240L, 240L, TimeSpan.FromSeconds(5), (TimeSpan?)null, 65536),
            (l.BodyIdleTimeout, l.MinRequestBodyRate, l.MinResponseRate, l.MinRateGracePeriod, l.RequestTimeout, l.RequestBufferBytes));

        var bad = ConfigLoader.Load(Config("http://127.0.0.1:1",
            "\"bodyIdleTimeout\": \"100ms\", \"minRequestBodyRate\": -1, \"requestBufferBytes\": 99999999, \"minResponseRate\": \"fast\"",
            route: """{ "id": "r", "match": { "pathPrefix": "/r" }, "cluster": "backend", "requestTimeout": 5 },"""));
        var paths = bad.Errors.Select(e => e.Path).ToHashSet();
        Assert.Contains("$.limits.minRequestBodyRate", paths);
        Assert.Contains("$.limits.requestBufferBytes", paths);
        Assert.Contains("$.limits.minResponseRate", paths);
        Assert.Contains("$.routes[0].requestTimeout", paths);
        // a timeout finer than the heartbeat is refused by the validator (the binder accepted it)
        var fine = ConfigLoader.Load(Config("http://127.0.0.1:1", "\"bodyIdleTimeout\": \"100ms\""));
        Assert.Contains(fine.Errors, e => e.Path == "$.limits.bodyIdleTimeout");
    }
}
