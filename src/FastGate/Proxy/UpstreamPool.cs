using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using FastGate.Http;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Prometheus;

namespace FastGate.Proxy;

/// <summary>
/// Keep-alive connections to one destination. Idle connections sit in a fixed array of slots taken and returned
/// with Interlocked operations (no locks); the number of open connections is bounded, and idle ones expire.
/// </summary>
public sealed partial class UpstreamPool
{
    private readonly UpstreamConnection?[] _idle;
    private readonly SocketConnectionContextFactory _factory;
    private readonly Counter.Child _opened;
    private readonly int _maxConnections;
    private readonly long _idleTimeoutTicks;
    private readonly TlsFailureCounters? _tlsFailures;
    private int _open;

    internal UpstreamPool(EndPoint endPoint, SocketConnectionContextFactory factory, int maxConnections, int maxIdle,
        TimeSpan idleTimeout, Counter.Child opened, Observability.GatewayMetrics metrics, UpstreamTlsModel? tls = null, string cluster = "")
    {
        EndPoint = endPoint;
        Tls = tls;
        if (tls is not null) _tlsFailures = new TlsFailureCounters(cluster, metrics);
        _factory = factory;
        _maxConnections = maxConnections;
        _idle = new UpstreamConnection?[maxIdle];
        _idleTimeoutTicks = (long)(idleTimeout.TotalSeconds * Stopwatch.Frequency);
        _opened = opened;
    }

    public EndPoint EndPoint { get; }
    /// <summary>The TLS settings of an https:// destination, or null for http://.</summary>
    public UpstreamTlsModel? Tls { get; }
    public int OpenConnections => Volatile.Read(ref _open);

    public int IdleConnections
    {
        get
        {
            int n = 0;
            for (int i = 0; i < _idle.Length; i++) if (Volatile.Read(ref _idle[i]) is not null) n++;
            return n + LoopIdleConnections();
        }
    }

    /// <summary>Takes an idle connection that still looks alive, or returns null.</summary>
    public UpstreamConnection? TryRentIdle()
    {
        var idle = SlotsForCaller(); // on a native loop: that loop's slots (UpstreamPool.Native.cs)
        for (int i = 0; i < idle.Length; i++)
        {
            if (Volatile.Read(ref idle[i]) is null) continue;
            var conn = Interlocked.Exchange(ref idle[i], null);
            if (conn is null) continue;
            if (!conn.IsStale()) return conn;
            Discard(conn);
        }
        return null;
    }

    public async ValueTask<(UpstreamConnection? Connection, RejectReason Error)> ConnectAsync(TimeSpan timeout)
    {
        if (Interlocked.Increment(ref _open) > _maxConnections)
        {
            Interlocked.Decrement(ref _open);
            return (null, RejectReason.UpstreamUnavailable);
        }
        if (ConnectsOnLoop) return await ConnectOnLoopAsync(timeout).ConfigureAwait(false);
        var socket = EndPoint is DnsEndPoint
            ? new Socket(SocketType.Stream, ProtocolType.Tcp)
            : new Socket(EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.NoDelay = true;
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await socket.ConnectAsync(EndPoint, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            socket.Dispose();
            Interlocked.Decrement(ref _open);
            return (null, e is OperationCanceledException ? RejectReason.UpstreamConnectTimeout : RejectReason.UpstreamConnectFailed);
        }
        if (Tls is null)
        {
            _opened.Inc();
            return (new UpstreamConnection(_factory.Create(socket), this), RejectReason.None);
        }
        // https://: one handshake per pooled connection, within the same connect timeout
        var ssl = new SslStream(new NetworkStream(socket, ownsSocket: true), leaveInnerStreamOpen: false);
        var check = new TlsCheck();
        try
        {
            await ssl.AuthenticateAsClientAsync(Tls.CreateOptions(check), cts.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            Interlocked.Decrement(ref _open);
            bool timedOut = e is OperationCanceledException;
            _tlsFailures!.Count(check.FailureKind(timedOut));
            return (null, timedOut ? RejectReason.UpstreamConnectTimeout : RejectReason.UpstreamTlsFailed);
        }
        _opened.Inc();
        return (new UpstreamConnection(socket, ssl, this), RejectReason.None);
    }

    /// <summary>Gives a healthy connection back for reuse, or closes it when every idle slot is taken.</summary>
    public void Return(UpstreamConnection conn)
    {
        // bytes already waiting after a complete response (a body after a HEAD, 204 or 304) would be read as the
        // next request's response: such a connection is closed, never pooled (TryRentIdle checks again on lease)
        if (conn.IsStale())
        {
            Discard(conn);
            return;
        }
        conn.Reused = true;
        conn.IdleSince = Stopwatch.GetTimestamp();
        var idle = SlotsFor(conn);
        for (int i = 0; i < idle.Length; i++)
        {
            if (Volatile.Read(ref idle[i]) is null && Interlocked.CompareExchange(ref idle[i], conn, null) is null) return;
        }
        Discard(conn);
    }

    public void Discard(UpstreamConnection conn)
    {
        Interlocked.Decrement(ref _open);
        _ = conn.CloseAsync();
    }

    /// <summary>Closes idle connections older than the idle timeout (called by the heartbeat).</summary>
    internal void EvictIdle(long now)
    {
        EvictIdle(_idle, now);
        ForEachLoopSlots(now, static (pool, slots, now) => pool.EvictIdle(slots, now));
    }

    private void EvictIdle(UpstreamConnection?[] idle, long now)
    {
        for (int i = 0; i < idle.Length; i++)
        {
            var conn = Volatile.Read(ref idle[i]);
            if (conn is null || now - conn.IdleSince < _idleTimeoutTicks) continue;
            if (Interlocked.CompareExchange(ref idle[i], null, conn) == conn) Discard(conn);
        }
    }

    internal void CloseAll()
    {
        CloseAll(_idle, 0);
        ForEachLoopSlots(0, static (pool, slots, _) => pool.CloseAll(slots, 0));
    }

    private void CloseAll(UpstreamConnection?[] idle, long unused)
    {
        for (int i = 0; i < idle.Length; i++)
        {
            var conn = Interlocked.Exchange(ref idle[i], null);
            if (conn is not null) Discard(conn);
        }
    }
}
