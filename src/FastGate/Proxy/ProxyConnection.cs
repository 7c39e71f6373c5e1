using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Routing;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace FastGate.Proxy;

/// <summary>
/// One client connection: parse a request head, route it, forward it over a pooled upstream connection, stream
/// the body both ways by its framing, and repeat while the connection stays alive. Allocates nothing per request
/// in steady state: the heads, buffers and request-id scratch belong to the connection.
/// </summary>
internal sealed partial class ProxyConnection : IDisposable
{
    private enum TimeoutKind : byte { None, KeepAlive, RequestHead, UpstreamResponse }

    private readonly ConnectionContext _context;
    private readonly GatewayRuntime _runtime;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly RequestHead _request = new();
    private readonly ResponseHead _response = new();
    private readonly byte[] _clientIp;
    private readonly byte[] _requestId = new byte[32];
    private int _requestIdLength;

    private long _deadline = long.MaxValue;
    private TimeoutKind _timeoutKind;
    private volatile bool _upstreamTimedOut;
    private UpstreamConnection? _activeUpstream;
    private volatile bool _closeRequested;
    private volatile bool _idle;
    private int _status;

    private static readonly ulong s_idPrefix = (ulong)Random.Shared.NextInt64();
    private static long s_idCounter;

    public ProxyConnection(ConnectionContext context, GatewayRuntime runtime)
    {
        _context = context;
        _runtime = runtime;
        _input = context.Transport.Input;
        _output = context.Transport.Output;
        _clientIp = Encoding.ASCII.GetBytes(context.RemoteEndPoint is IPEndPoint ip ? ip.Address.ToString() : "unknown");
        context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static s => ((ProxyConnection)s!).RequestClose(), this);
    }

    public async Task RunAsync()
    {
        try
        {
            if (_runtime.IsDraining) return;
            while (true)
            {
                var snapshot = _runtime.Current;
                if (!await ReadRequestHeadAsync(snapshot).ConfigureAwait(false)) return;
                long started = Stopwatch.GetTimestamp();
                snapshot = _runtime.Current; // the request is decided by the snapshot current when its head arrived
                var route = snapshot.Router.Match(_request);
                bool keepAlive;
                if (route is null)
                {
                    keepAlive = await RejectAsync(RejectReason.NoRoute, close: _request.HasBody || _request.WantsClose).ConfigureAwait(false);
                }
                else
                {
                    keepAlive = await ForwardAsync(snapshot, route).ConfigureAwait(false);
                    route.Metrics.Record(_status, Stopwatch.GetElapsedTime(started).TotalSeconds);
                }
                if (!keepAlive || _closeRequested) return;
            }
        }
        catch (Exception e) when (e is ConnectionResetException or ConnectionAbortedException or IOException or OperationCanceledException or InvalidOperationException)
        {
            // the client went away, or a timeout aborted it
        }
        finally
        {
            await CompleteClientAsync().ConfigureAwait(false);
        }
    }

    private async ValueTask CompleteClientAsync()
    {
        var up = Interlocked.Exchange(ref _activeUpstream, null);
        if (up is not null) up.Pool.Discard(up);
        try
        {
            await _output.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // the client is gone; nothing to flush to
        }
    }

    /// <summary>Reads until a whole request head is parsed. False: close the connection (after any error response).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> ReadRequestHeadAsync(GatewaySnapshot snapshot)
    {
        SetDeadline(snapshot.KeepAliveTimeoutTicks, TimeoutKind.KeepAlive);
        _idle = true;
        try
        {
            while (true)
            {
                if (_closeRequested && !_input.TryRead(out _)) return false;
                var result = await _input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                if (buffer.IsEmpty)
                {
                    _input.AdvanceTo(buffer.Start);
                    if (result.IsCompleted || _closeRequested) return false;
                    continue;
                }
                if (_timeoutKind == TimeoutKind.KeepAlive)
                {
                    _idle = false;
                    SetDeadline(snapshot.HeaderTimeoutTicks, TimeoutKind.RequestHead);
                }
                var status = HttpRequestParser.TryParse(buffer, snapshot.Limits, _request, out int consumed, out var reason);
                if (status == ParseStatus.Complete)
                {
                    _input.AdvanceTo(buffer.GetPosition(consumed));
                    ClearDeadline();
                    return true;
                }
                if (status == ParseStatus.Error)
                {
                    _input.AdvanceTo(buffer.End);
                    ClearDeadline();
                    await RejectAsync(reason, close: true).ConfigureAwait(false);
                    return false;
                }
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) return false; // the client closed in the middle of a head
            }
        }
        finally
        {
            _idle = false;
        }
    }

    /// <summary>Writes a canned error response. Returns whether the connection stays open.</summary>
    private async ValueTask<bool> RejectAsync(RejectReason reason, bool close)
    {
        GatewayMetrics.CountRejection(reason);
        _status = RejectReasons.StatusCode(reason);
        close |= _closeRequested;
        var w = new HeadWriter(_output);
        CannedResponses.Write(ref w, reason, close);
        w.Commit();
        var flush = await _output.FlushAsync().ConfigureAwait(false);
        return !close && !flush.IsCompleted;
    }

    // ---- timeouts (enforced by the runtime's heartbeat) ----

    private void SetDeadline(long ticks, TimeoutKind kind)
    {
        _timeoutKind = kind;
        Volatile.Write(ref _deadline, Stopwatch.GetTimestamp() + ticks);
    }

    private void ClearDeadline()
    {
        Volatile.Write(ref _deadline, long.MaxValue);
        _timeoutKind = TimeoutKind.None;
    }

    internal void CheckTimeout(long now)
    {
        if (now < Volatile.Read(ref _deadline)) return;
        Volatile.Write(ref _deadline, long.MaxValue);
        switch (_timeoutKind)
        {
            case TimeoutKind.KeepAlive:
            case TimeoutKind.RequestHead:
                _context.Abort(new ConnectionAbortedException("timeout"));
                break;
            case TimeoutKind.UpstreamResponse:
                _upstreamTimedOut = true;
                Volatile.Read(ref _activeUpstream)?.Abort();
                break;
        }
    }

    internal void RequestClose()
    {
        _closeRequested = true;
        if (_idle) _input.CancelPendingRead();
    }

    public void Dispose()
    {
        _request.Dispose();
        _response.Dispose();
    }

    private ReadOnlySpan<byte> NextRequestId()
    {
        if (!_request.RequestId.IsEmpty) return _request[_request.RequestId];
        ulong n = (ulong)Interlocked.Increment(ref s_idCounter);
        WriteHex(_requestId.AsSpan(0, 16), s_idPrefix);
        WriteHex(_requestId.AsSpan(16, 16), n);
        _requestIdLength = 32;
        return _requestId.AsSpan(0, _requestIdLength);
    }

    private static void WriteHex(Span<byte> dest, ulong value)
    {
        for (int i = dest.Length - 1; i >= 0; i--)
        {
            dest[i] = (byte)"0123456789abcdef"[(int)(value & 0xF)];
            value >>= 4;
        }
    }
}
