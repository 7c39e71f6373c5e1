using System.Net;
using FastGate.Proxy;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FastGate.Transport;

/// <summary>
/// The native Linux transport (<c>"transport": "native"</c>): <see cref="NativeLoop"/>s, one per core by default,
/// each accepting on its own SO_REUSEPORT socket of every plain listener and running the connections it accepts
/// through the same <see cref="GatewayRuntime.OnConnectionAsync"/> Kestrel's listeners run (one connection state
/// machine, two transports). TLS listeners and the admin listener stay on Kestrel. A hosted service, so the host's
/// start binds it and the host's stop drains it beside Kestrel.
/// </summary>
internal sealed class NativeTransport : IHostedService
{
    /// <summary>Tests run the whole suite on either transport: set from FASTGATE_TEST_TRANSPORT ("native" / "kestrel").</summary>
    internal static string? Override;
    /// <summary>The loops a config that leaves nativeLoops at 0 gets, instead of one per core (the test matrix uses 1: see TestTransport).</summary>
    internal static int DefaultLoopsOverride;
    /// <summary>Tests run the native matrix on either way of waiting: set from FASTGATE_TEST_NATIVE_IO ("epoll" / "io_uring").</summary>
    internal static string? IoOverride;

    /// <summary>A test's way to see the fallback: hosts created on this thread find the native transport unavailable.</summary>
    [ThreadStatic] internal static bool t_unavailableForTest;

    private readonly GatewayRuntime _runtime;
    private readonly NativeLoop[] _loops;
    private readonly List<IPEndPoint> _requested = [];
    private readonly List<IPEndPoint> _bound = [];
    private int _clients;
    private TaskCompletionSource? _drained;
    private bool _started;
    private Configuration.NativeIoKind _io;
    internal ILogger? Logger;

    private NativeTransport(GatewayRuntime runtime, int loops, bool ring)
    {
        _runtime = runtime;
        _loops = new NativeLoop[loops];
        for (int i = 0; i < loops; i++) _loops[i] = new NativeLoop(this, i, ring);
    }

    /// <summary>The transport, or null and why not (not Linux x64, libc or epoll unavailable): the caller falls back to Kestrel.</summary>
    public static NativeTransport? TryCreate(GatewayRuntime runtime, int loops, Configuration.NativeIoKind io, out string? whyNot)
    {
        whyNot = null;
        if (t_unavailableForTest)
        {
            whyNot = "made unavailable by a test";
            return null;
        }
        if (!Libc.IsSupported)
        {
            whyNot = "the native transport needs Linux on x64";
            return null;
        }
        try
        {
            var kind = IoOverride switch { "io_uring" => Configuration.NativeIoKind.IoUring, "epoll" => Configuration.NativeIoKind.Epoll, _ => io };
            return new NativeTransport(runtime, loops > 0 ? loops : Environment.ProcessorCount, kind != Configuration.NativeIoKind.Epoll) { _io = kind };
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or EntryPointNotFoundException)
        {
            whyNot = e.Message;
            return null;
        }
    }

    public int LoopCount => _loops.Length;
    internal NativeLoop Loop(int i) => _loops[i];
    /// <summary>Client connections open on the native listeners.</summary>
    public int ClientConnections => Volatile.Read(ref _clients);

    /// <summary>Adds a plain listener (bound at start); returns its index for <see cref="ListenerEndPoint"/>.</summary>
    public int AddListener(IPEndPoint endPoint)
    {
        _requested.Add(endPoint);
        return _requested.Count - 1;
    }

    /// <summary>The bound address of a listener (the real port when the config said :0); null before start.</summary>
    public IPEndPoint? ListenerEndPoint(int listener) => listener < _bound.Count ? _bound[listener] : null;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (_started) return Task.CompletedTask;
        _started = true;
        for (int l = 0; l < _requested.Count; l++)
        {
            var ep = _requested[l];
            for (int i = 0; i < _loops.Length; i++)
            {
                int fd = BindListener(ep);
                if (i == 0)
                {
                    ep = Libc.LocalEndPoint(fd) ?? ep; // port 0: every other loop binds the port the first one got
                    _bound.Add(ep);
                }
                _loops[i].AddListener(fd, l);
            }
        }
        foreach (var loop in _loops) loop.Start();
        foreach (var loop in _loops) loop.WaitStarted(TimeSpan.FromSeconds(5));
        string io = _loops.Length > 0 && _loops[0].UsesRing ? "io_uring" : "epoll";
        Logger?.LogInformation("native transport: {Loops} event loop(s) on {Io}, {Listeners} listener(s)", _loops.Length, io, _requested.Count);
        if (_loops.Length > 0 && _loops[0].RingFallback is { } why)
        {
            if (_io == Configuration.NativeIoKind.IoUring) Logger?.LogWarning("native transport: io_uring is not available ({Reason}): the loops use epoll", why);
            else Logger?.LogInformation("native transport: io_uring is not available ({Reason}): the loops use epoll", why);
        }
        return Task.CompletedTask;
    }

    private static unsafe int BindListener(IPEndPoint ep)
    {
        bool v6 = ep.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        int fd = Libc.Socket(v6 ? Libc.AF_INET6 : Libc.AF_INET, Libc.SOCK_STREAM | Libc.SOCK_NONBLOCK | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new IOException($"socket failed (errno {Libc.Errno})");
        Libc.SetInt(fd, Libc.SOL_SOCKET, Libc.SO_REUSEADDR, 1);
        Libc.SetInt(fd, Libc.SOL_SOCKET, Libc.SO_REUSEPORT, 1);
        if (v6) Libc.SetInt(fd, Libc.IPPROTO_IPV6, Libc.IPV6_V6ONLY, 0);
        byte* addr = stackalloc byte[28];
        int length = Libc.WriteSockAddr(ep, new Span<byte>(addr, 28));
        // each loop has its own accept queue and SO_REUSEPORT hashes connections over them unevenly: a backlog of
        // 4096 (the kernel caps it at net.core.somaxconn) keeps a burst of connects (wrk opening 1,000 at once) from
        // overflowing one loop's queue while that loop is busy, where 512 let SYNs drop and clients time out
        if (Libc.Bind(fd, addr, length) != 0 || Libc.Listen(fd, 4096) != 0)
        {
            int errno = Libc.Errno;
            Libc.Close(fd);
            throw new IOException($"cannot listen on {ep} (errno {errno})");
        }
        return fd;
    }

    /// <summary>On the accepting loop: the connection runs there, through the shared connection code.</summary>
    internal void OnAccepted(NativeSocket socket, int listener)
    {
        Interlocked.Increment(ref _clients);
        _ = RunAsync(socket);
    }

    private async Task RunAsync(NativeSocket socket)
    {
        try
        {
            await _runtime.OnConnectionAsync(socket).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Logger?.LogDebug(e, "native connection ended with an error");
        }
        finally
        {
            await socket.DisposeAsync().ConfigureAwait(false);
            if (Interlocked.Decrement(ref _clients) == 0) Volatile.Read(ref _drained)?.TrySetResult();
        }
    }

    internal void LogLoopError(Exception e) => Logger?.LogError(e, "native transport: unexpected error on an event loop");

    /// <summary>Stops accepting, waits for the client connections to finish (the host's shutdown timeout), aborts the rest.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (!_started) return;
        var drained = StopAccepting();
        try
        {
            await drained.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            foreach (var loop in _loops) loop.AbortAll();
        }
    }

    /// <summary>
    /// The host is disposed without a graceful stop (as Kestrel's server does on dispose): stops accepting, aborts every
    /// client connection and waits, at most <paramref name="timeout"/>, until each has ended, so that no connection
    /// records a request (metrics, access log) after the runtime is disposed.
    /// </summary>
    public async Task AbortClientsAsync(TimeSpan timeout)
    {
        if (!_started) return;
        var drained = StopAccepting();
        foreach (var loop in _loops) loop.AbortAll();
        try
        {
            await drained.WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Logger?.LogWarning("native transport: {Count} client connection(s) still open {Timeout} after they were aborted", ClientConnections, timeout);
        }
    }

    /// <summary>Closes the listening sockets; the task completes when the last client connection has ended.</summary>
    private Task StopAccepting()
    {
        var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _drained, drained);
        foreach (var loop in _loops) loop.StopListening();
        if (ClientConnections == 0) drained.TrySetResult();
        return drained.Task;
    }

    /// <summary>Ends the loops (after the runtime closed its pools): whatever is still open closes.</summary>
    public void Dispose()
    {
        if (!_started)
        {
            foreach (var loop in _loops) loop.CloseUnstarted();
            return;
        }
        foreach (var loop in _loops) loop.Exit();
        foreach (var loop in _loops) loop.Join(TimeSpan.FromSeconds(5));
    }
}
