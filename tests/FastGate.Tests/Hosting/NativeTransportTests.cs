using System.Net.Sockets;
using System.Text;
using FastGate.Configuration;
using FastGate.Hosting;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

/// <summary>
/// The native transport itself (issue 13): several event loops, a connection and its upstream connection on one
/// loop, EPOLLOUT backpressure towards a slow reader, many connections accepted at once, and the Kestrel fallback.
/// (The rest of the suite runs against it with FASTGATE_TEST_TRANSPORT=native.)
/// </summary>
public sealed class NativeTransportTests : IAsyncLifetime
{
    private DemoUpstreamServer _upstream = null!;

    public async Task InitializeAsync() => _upstream = await DemoUpstreamServer.StartAsync();
    public async Task DisposeAsync() => await _upstream.DisposeAsync();

    private string Config(int loops) => TestGateway.Config(_upstream.Address.ToString().TrimEnd('/'))
        .Insert(1, $"\"transport\": \"native\", \"nativeLoops\": {loops},");

    private static async Task<TestGateway> StartNativeAsync(string config)
    {
        var gateway = await TestGateway.StartAsync(config);
        Assert.NotNull(gateway.Host.Native); // the test is about the native transport, whatever the matrix says
        return gateway;
    }

    [LinuxFact]
    public async Task Connections_are_spread_over_the_loops_and_each_is_served()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return;
        await using var gateway = await StartNativeAsync(Config(loops: 2));
        var native = gateway.Host.Native!;
        Assert.Equal(2, native.LoopCount);
        var clients = new List<RawClient>();
        for (int i = 0; i < 40; i++)
        {
            var c = await RawClient.ConnectAsync(gateway.EndPoint);
            clients.Add(c);
            await c.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
            var r = await c.ReadResponseAsync();
            Assert.Equal(200, r.Status);
            Assert.Equal("Hello, World!", r.Body);
        }
        // SO_REUSEPORT spreads connections by their address hash: with 40 of them both loops take some
        Assert.Equal(40, native.Loop(0).Accepted + native.Loop(1).Accepted);
        Assert.True(native.Loop(0).Accepted > 0 && native.Loop(1).Accepted > 0, $"{native.Loop(0).Accepted} / {native.Loop(1).Accepted}");
        foreach (var c in clients) c.Dispose();
    }

    [LinuxFact]
    public async Task A_connection_and_the_upstream_connection_it_uses_live_on_one_loop()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return;
        await using var gateway = await StartNativeAsync(Config(loops: 2));
        var native = gateway.Host.Native!;
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 5; i++)
        {
            await client.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        }
        int home = native.Loop(0).Accepted == 1 ? 0 : 1;
        Assert.Equal(1, native.Loop(home).Accepted);
        // the client connection and the one kept-alive upstream connection it reused five times, both on its loop
        Assert.Equal(2, native.Loop(home).SocketCount);
        Assert.Equal(0, native.Loop(1 - home).SocketCount);
        Assert.Equal(1.0, gateway.Metrics.UpstreamConnectionsOpened.WithLabels("backend").Value);
    }

    [LinuxFact]
    public async Task A_slow_reader_gets_the_whole_large_response_through_EPOLLOUT_backpressure()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return;
        await using var gateway = await StartNativeAsync(Config(loops: 1));
        var native = gateway.Host.Native!;
        const long size = 32L * 1024 * 1024;
        using var tcp = new TcpClient { ReceiveBufferSize = 4096 };
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        // not reading: the kernel's buffers fill, and the gateway's flush waits for EPOLLOUT
        await Eventually.WaitUntilAsync(() => native.Loop(0).FlushWaits > 0, "a flush waiting for EPOLLOUT", TimeSpan.FromSeconds(20));
        var buffer = new byte[65536];
        var head = new List<byte>();
        long body = 0;
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            int i = 0;
            while (i < n && !(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n')) head.Add(buffer[i++]);
            body += n - i;
        }
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(head.ToArray()));
        Assert.Equal(size, body);
    }

    [LinuxFact]
    public async Task Many_connections_opened_at_once_are_all_accepted_and_served()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return;
        await using var gateway = await StartNativeAsync(Config(loops: 2));
        var native = gateway.Host.Native!;
        const int count = 300;
        var tasks = new Task<int>[count];
        for (int i = 0; i < count; i++)
        {
            tasks[i] = Task.Run(async () =>
            {
                using var c = await RawClient.ConnectAsync(gateway.EndPoint);
                await c.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
                return (await c.ReadResponseAsync(timeoutMs: 30000)).Status;
            });
        }
        var statuses = await Task.WhenAll(tasks);
        Assert.All(statuses, s => Assert.Equal(200, s));
        Assert.Equal(count, native.Loop(0).Accepted + native.Loop(1).Accepted);
        await Eventually.WaitUntilAsync(() => native.ClientConnections == 0, "every connection closed");
    }

    [Fact]
    public async Task When_the_native_transport_is_unavailable_the_listeners_run_on_kestrel()
    {
        var logs = new CapturedLogs();
        var loaded = ConfigLoader.Load(Config(loops: 2));
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        FastGate.Transport.NativeTransport.t_unavailableForTest = true;
        GatewayHost host;
        try
        {
            host = GatewayHost.FromConfig(loaded, logs: logs).Host!;
        }
        finally
        {
            FastGate.Transport.NativeTransport.t_unavailableForTest = false;
        }
        await using (host)
        {
            await host.StartAsync();
            Assert.Null(host.Native);
            using var client = await RawClient.ConnectAsync(host.ListenerEndPoints[0]);
            await client.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
            Assert.Equal(1, logs.Count(Microsoft.Extensions.Logging.LogLevel.Warning, "transport native is not available"));
        }
    }

    [Fact]
    public void The_transport_settings_are_checked()
    {
        var bad = ConfigLoader.Load(Config(loops: 2).Replace("\"native\"", "\"uring\"").Replace("\"nativeLoops\": 2", "\"nativeLoops\": 999"));
        Assert.Contains(bad.Errors, e => e.Path == "$.transport");
        Assert.Contains(bad.Errors, e => e.Path == "$.nativeLoops");
        var good = ConfigLoader.Load(Config(loops: 3));
        Assert.Equal(TransportKind.Native, good.Config!.Transport);
        Assert.Equal(3, good.Config.NativeLoops);
        Assert.Equal(TransportKind.Kestrel, ConfigLoader.Load(TestGateway.Config("http://127.0.0.1:1")).Config!.Transport);
    }
}
