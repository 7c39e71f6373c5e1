using System.Net.Sockets;
using System.Text;
using FastGate.Configuration;
using FastGate.Hosting;
using FastGate.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

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
        Assert.Equal(size, await ReadBodyToEndAsync(stream));
    }

    /// <summary>On io_uring a flush returns once its send is queued, so a Connection: close response towards a slow
    /// reader (4 KB at a time, a millisecond apart) is closed while its last send is in flight: the socket lingers,
    /// and every byte of that send must still go out. (The kernel here takes such a send whole; a short completion
    /// after the close, which lost the last 189 bytes of 32 MB once in CI, is continued by Output.OnSent.)</summary>
    [LinuxFact]
    public async Task On_io_uring_a_response_closed_with_its_last_send_in_flight_arrives_whole()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel" || FastGate.Transport.NativeTransport.IoOverride == "epoll" || !KernelHasIoUring()) return;
        await using var gateway = await StartNativeAsync(Config(loops: 1).Insert(1, "\"nativeIo\": \"io_uring\","));
        var loop = gateway.Host.Native!.Loop(0);
        Assert.True(loop.UsesRing, loop.RingFallback);
        const long size = 4L * 1024 * 1024;
        using var tcp = new TcpClient { ReceiveBufferSize = 4096 };
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        long lingersBefore = loop.Lingers;
        Assert.Equal(size, await ReadBodyToEndAsync(stream, paceUntil: () => loop.Lingers > lingersBefore));
        Assert.Equal(lingersBefore + 1, loop.Lingers); // the case in question: closed with the send in flight
    }

    /// <summary>Reads a response to the end of the connection; the body's length. While <paramref name="paceUntil"/>
    /// is false, in 4 KB reads a millisecond apart (a slow reader), after it at full speed.</summary>
    private static async Task<long> ReadBodyToEndAsync(NetworkStream stream, Func<bool>? paceUntil = null)
    {
        var buffer = new byte[65536];
        var head = new List<byte>();
        long body = 0;
        int n;
        bool pacing = paceUntil is not null;
        while ((n = await stream.ReadAsync(pacing ? buffer.AsMemory(0, 4096) : buffer)) > 0)
        {
            if (pacing && !(pacing = !paceUntil!())) { }
            else if (pacing) await Task.Delay(1);
            int i = 0;
            while (i < n && !(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n')) head.Add(buffer[i++]);
            body += n - i;
        }
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(head.ToArray()));
        return body;
    }

    /// <summary>A body far larger than a buffer streams in 64 KB reads (NativeSocket.Bulk): every byte must arrive
    /// in order, over several keep-alive responses of both sizes on one client and one upstream connection.</summary>
    [LinuxFact]
    public async Task Large_bodies_are_relayed_intact_in_bulk_reads_and_small_ones_after_them_on_the_same_connections()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return;
        var pattern = new byte[3 * 1024 * 1024 + 12345];
        new Random(7).NextBytes(pattern);
        await using var app = await MappedUpstream.StartAsync(a =>
        {
            a.MapGet("/big", () => Results.Bytes(pattern, "application/octet-stream"));
            a.MapGet("/small", () => Results.Text("small"));
        });
        var address = app.Address;
        var config = TestGateway.Config(address.TrimEnd('/')).Insert(1, "\"transport\": \"native\", \"nativeLoops\": 1,");
        await using var gateway = await StartNativeAsync(config);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        foreach (var path in new[] { "/big", "/small", "/big", "/big", "/small" })
        {
            await client.SendAsync($"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            var response = await client.ReadResponseAsync(timeoutMs: 30000);
            Assert.Equal(200, response.Status);
            if (path == "/small") Assert.Equal("small", response.Body);
            else Assert.True(Encoding.Latin1.GetBytes(response.Body).AsSpan().SequenceEqual(pattern), "the large body arrives byte for byte");
        }
        Assert.Equal(1.0, gateway.Metrics.UpstreamConnectionsOpened.WithLabels("backend").Value); // one upstream connection, reused
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

    /// <summary>Whether this kernel lets a process use io_uring with what the ring asks for (Linux 6.1+, not disabled).</summary>
    private static bool KernelHasIoUring()
    {
        if (Environment.OSVersion.Version < new Version(6, 1)) return false;
        try
        {
            return File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim() == "0";
        }
        catch (IOException)
        {
            return true; // the knob is newer than io_uring itself
        }
    }

    [LinuxFact]
    public async Task With_nativeIo_io_uring_the_loops_run_on_a_ring_and_closed_connections_end_their_armed_recvs()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel" || FastGate.Transport.NativeTransport.IoOverride == "epoll") return;
        await using var gateway = await StartNativeAsync(Config(loops: 1).Insert(1, "\"nativeIo\": \"io_uring\","));
        var loop = gateway.Host.Native!.Loop(0);
        if (!KernelHasIoUring())
        {
            Assert.False(loop.UsesRing);
            Assert.NotNull(loop.RingFallback);
            return;
        }
        Assert.True(loop.UsesRing, loop.RingFallback);
        long before = loop.RingEnters;
        var clients = new List<RawClient>();
        for (int i = 0; i < 4; i++) clients.Add(await RawClient.ConnectAsync(gateway.EndPoint));
        for (int round = 0; round < 5; round++)
        {
            foreach (var c in clients) await c.SendAsync("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
            foreach (var c in clients)
            {
                var r = await c.ReadResponseAsync();
                Assert.Equal(200, r.Status);
                Assert.Equal("Hello, World!", r.Body);
            }
        }
        Assert.True(loop.RingEnters > before, "the requests went through io_uring_enter");
        Assert.Equal(4, loop.Accepted);
        foreach (var c in clients) c.Dispose();
        // each client socket had a recv armed on the ring; closing cancels it, and only then the socket is gone
        await Eventually.WaitUntilAsync(() => gateway.Host.Native!.ClientConnections == 0, "every client connection closed");
        int upstreams = (int)gateway.Metrics.UpstreamConnectionsOpened.WithLabels("backend").Value;
        await Eventually.WaitUntilAsync(() => loop.SocketCount == upstreams, $"only the {upstreams} pooled upstream connection(s) left on the loop");
    }

    [LinuxFact]
    public async Task On_io_uring_a_pooled_upstream_connection_the_upstream_closed_is_not_reused()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel" || FastGate.Transport.NativeTransport.IoOverride == "epoll" || !KernelHasIoUring()) return;
        var closeFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int accepted = 0;
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            bool first = Interlocked.Increment(ref accepted) == 1;
            while (!cancel.IsCancellationRequested)
            {
                if ((await RawUpstream.ReadHeadAsync(stream, cancel)).Length == 0) return;
                await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), cancel);
                if (first)
                {
                    await closeFirst.Task.WaitAsync(cancel);
                    stream.Socket.Close(); // the upstream closes its idle keep-alive connection
                    closed.SetResult();
                    return;
                }
            }
        });
        var config = TestGateway.Config(upstream.Address).Insert(1, "\"transport\": \"native\", \"nativeLoops\": 1, \"nativeIo\": \"io_uring\",");
        await using var gateway = await StartNativeAsync(config);
        var loop = gateway.Host.Native!.Loop(0);
        Assert.True(loop.UsesRing, loop.RingFallback);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        await Eventually.WaitUntilAsync(() => loop.SocketCount == 2, "the client and the pooled upstream connection");
        closeFirst.SetResult();
        await closed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        // the recv armed on the idle pooled connection sees the FIN, so the next lease finds it stale and opens another
        await client.SendAsync("GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        Assert.Equal(2, Volatile.Read(ref accepted));
        Assert.Equal(2.0, gateway.Metrics.UpstreamConnectionsOpened.WithLabels("backend").Value);
        await Eventually.WaitUntilAsync(() => loop.SocketCount == 2, "the stale upstream socket closed (its armed recv ended)");
    }

    /// <summary>A host built on this thread as if the native transport could not run here.</summary>
    private static GatewayHost HostWithoutNative(ConfigLoadResult loaded, CapturedLogs logs)
    {
        FastGate.Transport.NativeTransport.t_unavailableForTest = true;
        try
        {
            return GatewayHost.FromConfig(loaded, logs: logs).Host!;
        }
        finally
        {
            FastGate.Transport.NativeTransport.t_unavailableForTest = false;
        }
    }

    [Fact]
    public async Task When_the_native_transport_is_unavailable_the_listeners_run_on_kestrel()
    {
        if (FastGate.Transport.NativeTransport.Override == "kestrel") return; // the matrix's Kestrel pass never tries the native one
        var logs = new CapturedLogs();
        var loaded = ConfigLoader.Load(Config(loops: 2));
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        await using (var host = HostWithoutNative(loaded, logs))
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
    public async Task Under_auto_a_host_without_the_native_transport_runs_on_kestrel_and_says_so_without_a_warning()
    {
        if (FastGate.Transport.NativeTransport.Override is not null) return; // the matrix forces a transport
        var logs = new CapturedLogs();
        var loaded = ConfigLoader.Load(TestGateway.Config("http://127.0.0.1:1"));
        Assert.Equal(TransportKind.Auto, loaded.Config!.Transport);
        await using (var host = HostWithoutNative(loaded, logs))
        {
            await host.StartAsync();
            Assert.Null(host.Native);
            Assert.Equal(0, logs.Count(Microsoft.Extensions.Logging.LogLevel.Warning, "transport native is not available"));
            Assert.Equal(1, logs.Count(Microsoft.Extensions.Logging.LogLevel.Information, "transport auto: the native transport is not available here"));
        }
    }

    [Fact]
    public void The_transport_settings_are_checked()
    {
        var bad = ConfigLoader.Load(Config(loops: 2).Replace("\"native\"", "\"uring\"").Replace("\"nativeLoops\": 2", "\"nativeLoops\": 999"));
        Assert.Contains(bad.Errors, e => e.Path == "$.transport" && e.Message.Contains("auto, kestrel or native"));
        Assert.Contains(bad.Errors, e => e.Path == "$.nativeLoops");
        var badIo = ConfigLoader.Load(Config(loops: 2).Insert(1, "\"nativeIo\": \"uring\","));
        Assert.Contains(badIo.Errors, e => e.Path == "$.nativeIo" && e.Message.Contains("auto, epoll or io_uring"));
        Assert.Equal(NativeIoKind.Auto, ConfigLoader.Load(Config(loops: 2)).Config!.NativeIo);
        Assert.Equal(NativeIoKind.IoUring, ConfigLoader.Load(Config(loops: 2).Insert(1, "\"nativeIo\": \"io_uring\",")).Config!.NativeIo);
        var good = ConfigLoader.Load(Config(loops: 3));
        Assert.Equal(TransportKind.Native, good.Config!.Transport);
        Assert.Equal(3, good.Config.NativeLoops);
        Assert.Equal(TransportKind.Auto, ConfigLoader.Load(TestGateway.Config("http://127.0.0.1:1")).Config!.Transport);
        Assert.Equal(TransportKind.Kestrel, ConfigLoader.Load(Config(loops: 2).Replace("\"native\"", "\"kestrel\"")).Config!.Transport);
    }
}
