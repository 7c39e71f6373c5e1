using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Policy;
using FastGate.RateLimiting;
using FastGate.Security;
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
    private readonly CountingPipeWriter _output;
    private readonly ConnectionState _state;
    private readonly RequestHead _request;
    private readonly ResponseHead _response;
    // The TCP peer (computed once); the effective client of the current request is the exchange's (the peer, or the
    // client a trusted proxy named in X-Forwarded-For)
    private readonly byte[] _peerIp;
    private readonly ClientAddress _peerAddress;
    private readonly PolicyResult _policy;
    /// <summary>The current request's admission state (Pipeline/Admission): route, client, identities, decision.</summary>
    private readonly Pipeline.Exchange _exchange;
    /// <summary>The current request's forward state (the exchange's): timing, body, try, lease, observability.</summary>
    private readonly ForwardState _fw;
    private readonly byte[] _requestId;

    private long _deadline = long.MaxValue;
    private TimeoutKind _timeoutKind;
    private volatile bool _closeRequested;
    private volatile bool _idle;

    private static ReadOnlySpan<byte> Continue100 => "HTTP/1.1 100 Continue\r\n\r\n"u8;

    private static readonly ulong s_idPrefix = (ulong)Random.Shared.NextInt64();
    private static long s_idCounter;

    public ProxyConnection(ConnectionContext context, GatewayRuntime runtime)
    {
        _context = context;
        _runtime = runtime;
        _input = context.Transport.Input;
        _state = runtime.RentState();
        _request = _state.Request;
        _response = _state.Response;
        _requestId = _state.RequestId;
        _policy = _state.PolicyResult;
        _output = new CountingPipeWriter(context.Transport.Output);
        var remote = context.RemoteEndPoint as IPEndPoint;
        _peerIp = Encoding.ASCII.GetBytes(remote is not null ? remote.Address.ToString() : "unknown");
        _peerAddress = ClientAddress.From(remote?.Address ?? IPAddress.IPv6None);
        _exchange = _state.Exchange;
        _fw = _exchange.Forward;
        _exchange.Begin(_peerIp, _peerAddress, null);
        _exchange.LimiterClock = runtime.Limiters.Time;
        _exchange.IsTls = false; // the state is pooled: set for this connection below
        // TLS listeners: the handshake is over (and a client certificate, if any, validated against the listener's
        // CA) before the first byte reaches here; its fingerprints are computed once for the device lookups
        if (context.Features.Get<Microsoft.AspNetCore.Http.Features.ITlsConnectionFeature>() is { } tls)
        {
            _isTls = true;
            _exchange.IsTls = true;
            if (tls.ClientCertificate is { } certificate) _certificate = ClientCertificateFingerprints.From(certificate);
        }
        context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static s => ((ProxyConnection)s!).RequestClose(), this);
    }

    /// <summary>
    /// The connection loop: only I/O and awaits. Each request: its head, one admission decision (Pipeline/Admission),
    /// then a reply or the forward. The forward's stages are async methods of their own built with
    /// <see cref="ReusableBoxBuilder{TResult}"/>: a suspended stage's box comes from the connection's
    /// <see cref="AsyncBoxCache"/>, so none is allocated per request (the runtime's pooling builder missed under load).
    /// </summary>
    public async Task RunAsync()
    {
        try
        {
            if (_runtime.IsDraining) return;
            while (true)
            {
                // 1. the request head
                var snapshot = _runtime.Current;
                BeginRequest(snapshot);
                HeadStep step;
                RejectReason reason;
                do
                {
                    if (_closeRequested && !HasBufferedInput()) return;
                    var result = await _input.ReadAsync().ConfigureAwait(false);
                    step = OnRequestBytes(result, snapshot, out reason);
                }
                while (step == HeadStep.NeedMore);
                _idle = false;
                ClearDeadline();
                if (step == HeadStep.Closed) return;
                if (step == HeadStep.Rejected)
                {
                    AssignRequestId(trustClient: false);
                    await RejectAsync(reason, close: true).ConfigureAwait(false);
                    Observe(null, 0, reason);
                    return;
                }

                // 2. admission: one synchronous decision by the snapshot current when the head arrived (route → client →
                // block list → CORS preflight → authentication → policy → auth requirements → WAF phase 1 → rate
                // limits); its async steps (a bearer token that missed the cache, a cluster limiter) are awaited here
                // and the decision resumed
                long started = Stopwatch.GetTimestamp();
                snapshot = BeginAdmission();
                var verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
                while (verdict is Pipeline.AdmissionVerdict.NeedsToken or Pipeline.AdmissionVerdict.NeedsLimiter)
                {
                    if (verdict == Pipeline.AdmissionVerdict.NeedsToken) _exchange.CompleteToken(await _exchange.PendingToken.ConfigureAwait(false));
                    else _exchange.CompleteLimit(await _exchange.PendingLimit.ConfigureAwait(false));
                    verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
                }
                if (verdict != Pipeline.AdmissionVerdict.Forward)
                {
                    if (!await ReplyAsync(verdict, _exchange.Route, snapshot.Policy, started).ConfigureAwait(false) || _closeRequested) return;
                    continue;
                }
                var route = _exchange.Route!; // admitted: there is a route
                if (_exchange.Cluster!.Protocol == UpstreamProtocol.H2)
                {
                    // an h2 (gRPC) cluster is reached from HTTP/2 clients only (Proxy/Http2Gateway.cs)
                    _exchange.ReleaseLeases();
                    if (!await ReplyAsync(_exchange.Reject(RejectReason.Http2Required), route, snapshot.Policy, started).ConfigureAwait(false) || _closeRequested) return;
                    continue;
                }

                // 3. a route with "ai": the unified OpenAI-compatible endpoint answers (src/FastGate/Ai); else the forward
                bool keepAlive;
                if (route.Ai is { } ai) keepAlive = await RunAiAsync(snapshot, route, ai, started).ConfigureAwait(false);
                else
                {
                    _boxes.Prime();
                    keepAlive = await ForwardAsync(snapshot, route, started).ConfigureAwait(false);
                    EndForward(route, started);
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
            EndTry(UpstreamOutcome.Abandoned); // a try an exception cut short
            LeaveCluster(); // a request an exception cut short
            await CompleteClientAsync().ConfigureAwait(false);
        }
    }

    /// <summary>The per-connection boxes of the forward's async stages (see <see cref="ReusableBoxBuilder{TResult}"/>).</summary>
    private readonly AsyncBoxCache _boxes = new();

    /// <summary>A new request on this connection: the exchange begins, the keep-alive wait starts.</summary>
    private void BeginRequest(GatewaySnapshot snapshot)
    {
        _fw.Reset();
        if (_wafResponseBody is not null || _wafPrefixActive) DropInspectedBody(); // a request that ended before its inspected body went out
        _fw.BytesOutMark = _output.Written;
        _exchange.Begin(_peerIp, _peerAddress, _device);
        SetDeadline(snapshot.KeepAliveTimeoutTicks, TimeoutKind.KeepAlive);
        _idle = true;
    }

    /// <summary>The head is in: its request id, the snapshot it is decided by, and the connection's device in that snapshot.</summary>
    private GatewaySnapshot BeginAdmission()
    {
        AssignRequestId(trustClient: true);
        var snapshot = _runtime.Current;
        if (_certificate is not null && !ReferenceEquals(_deviceTable, snapshot.Devices))
        {
            // the device of this connection's certificate, looked up again only when a reload changed the list
            _deviceTable = snapshot.Devices;
            _device = _deviceTable.Find(_certificate);
            _exchange.Begin(_peerIp, _peerAddress, _device);
        }
        return snapshot;
    }

    /// <summary>A forwarded request is over: its cluster slot, timers, body buffer and limiter leases go, and it is recorded.</summary>
    private void EndForward(RouteModel route, long started)
    {
        LeaveCluster();
        EndRequestTiming();
        TrimBodyBuffer(all: false);
        _exchange.ReleaseLeases();
        route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
        Observe(route, started, RejectReason.None);
    }

    /// <summary>Writes the admission's answer (policy reply, preflight, or a canned rejection), records it; false: close.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> ReplyAsync(Pipeline.AdmissionVerdict verdict, RouteModel? route, CompiledPolicy policy, long started)
    {
        bool stays;
        RejectReason why;
        if (verdict == Pipeline.AdmissionVerdict.PolicyReply)
        {
            stays = await RespondFromPolicyAsync(policy).ConfigureAwait(false);
            why = RejectReason.None;
        }
        else if (verdict == Pipeline.AdmissionVerdict.RateLimited)
        {
            stays = await RejectRateLimitedAsync(_exchange.RateLimitedBy!, _exchange.RateLimitRejection).ConfigureAwait(false);
            why = RejectReason.RateLimited;
        }
        else if (verdict == Pipeline.AdmissionVerdict.Preflight)
        {
            stays = await AnswerPreflightAsync(route!.Cors!, _exchange.CorsAllowed).ConfigureAwait(false);
            why = _exchange.CorsAllowed ? RejectReason.None : RejectReason.CorsRejected;
        }
        else
        {
            why = _exchange.Reason;
            stays = await RejectAsync(why, close: CloseAfterReply).ConfigureAwait(false);
        }
        route?.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
        if (verdict == Pipeline.AdmissionVerdict.PolicyReply) ObservePolicyResponse(route, started, policy);
        else Observe(route, started, why);
        return stays;
    }

    private enum HeadStep : byte { NeedMore, Complete, Rejected, Closed }

    /// <summary>The effective client's address text: what rules, rate-limit keys, the anomaly detector and the log see.</summary>
    private ReadOnlySpan<byte> ClientIp => _exchange.ClientIp;

    private bool HasBufferedInput()
    {
        if (!_input.TryRead(out var result)) return false;
        bool any = !result.Buffer.IsEmpty;
        _input.AdvanceTo(result.Buffer.Start, any ? result.Buffer.End : result.Buffer.Start);
        return any;
    }

    /// <summary>Parses what has arrived of a request head and advances the pipe accordingly.</summary>
    private HeadStep OnRequestBytes(in ReadResult result, GatewaySnapshot snapshot, out RejectReason reason)
    {
        reason = RejectReason.None;
        var buffer = result.Buffer;
        if (buffer.IsEmpty)
        {
            _input.AdvanceTo(buffer.Start);
            return result.IsCompleted || _closeRequested ? HeadStep.Closed : HeadStep.NeedMore;
        }
        if (_timeoutKind == TimeoutKind.KeepAlive)
        {
            _idle = false;
            SetDeadline(snapshot.HeaderTimeoutTicks, TimeoutKind.RequestHead);
        }
        var status = HttpRequestParser.TryParse(buffer, snapshot.Limits, _request, out int consumed, out reason);
        if (status == ParseStatus.Complete)
        {
            _input.AdvanceTo(buffer.GetPosition(consumed));
            return HeadStep.Complete;
        }
        if (status == ParseStatus.Error)
        {
            _input.AdvanceTo(buffer.End);
            return HeadStep.Rejected;
        }
        _input.AdvanceTo(buffer.Start, buffer.End);
        return result.IsCompleted ? HeadStep.Closed : HeadStep.NeedMore; // closed in the middle of a head
    }

    private async ValueTask CompleteClientAsync()
    {
        _exchange.ReleaseLeases(); // a client that went away mid-request gives its concurrency slots back
        var up = Interlocked.Exchange(ref _fw.ActiveUpstream, null);
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

    // ---- token quotas: the limiters (and keys) this request is to be charged on, and the usage read from its response ----

    /// <summary>Charges the tokens the response reported to every token quota the request passed.</summary>
    private void ChargeTokens(RouteModel route)
    {
        _fw.Usage.Complete();
        long tokens = _fw.Usage.Tokens;
        if (tokens > 0)
        {
            long now = _runtime.Limiters.Time.GetTimestamp();
            for (int i = 0; i < _exchange.TokenChargeCount; i++)
            {
                ref var c = ref _exchange.TokenCharges[i];
                c.Limiter.Limiter.Charge(c.Key.AsSpan(0, c.Length), tokens, now);
            }
            route.Metrics.RecordTokens(tokens);
        }
        _exchange.TokenChargeCount = 0;
    }

    /// <summary>204 with the profile's preflight headers for an allowed origin; the reject status and no CORS headers otherwise.</summary>
    private async ValueTask<bool> AnswerPreflightAsync(CorsModel cors, bool allowed)
    {
        _request.TryGetHeader("origin"u8, out var origin);
        _exchange.Status = allowed ? 204 : cors.PreflightRejectStatus;
        if (!allowed) _runtime.Metrics.CountRejection(RejectReason.CorsRejected);
        bool close = CloseAfterReply;
        var w = new HeadWriter(_output);
        w.WriteStatusLine(_exchange.Status);
        w.Write(DateHeader.Line);
        w.WriteHeader("X-Request-Id: "u8, CurrentRequestId());
        w.Write(CorsModel.VaryLine);
        if (allowed)
        {
            w.WriteHeader("Access-Control-Allow-Origin: "u8, origin);
            w.Write(cors.PreflightGrantLines);
        }
        if (!allowed) w.Write("Content-Length: 0\r\n"u8); // a 204 carries no Content-Length (RFC 9110 8.6)
        if (close) w.Write("Connection: close\r\n"u8);
        w.Write("\r\n"u8);
        w.Commit();
        var flush = await _output.FlushAsync().ConfigureAwait(false);
        return !close && !flush.IsCompleted;
    }

    /// <summary>The limiter's rejection (429 by default, 503 when its store is unavailable) with its headers.</summary>
    private async ValueTask<bool> RejectRateLimitedAsync(CompiledLimiter limiter, RateLimitDecision decision)
    {
        _runtime.Metrics.CountRejection(RejectReason.RateLimited);
        _exchange.Status = decision.StatusCode;
        bool close = CloseAfterReply;
        var body = RateLimitResponses.BodyFor(decision);
        int need = RateLimitHeaders.MaxLength(limiter.Definition);
        if (need > _exchange.ResponseLines.Length) Array.Resize(ref _exchange.ResponseLines, need);
        int headers = Math.Max(0, RateLimitHeaders.Write(_exchange.ResponseLines, decision, limiter.Definition));
        var w = new HeadWriter(_output);
        w.WriteStatusLine(_exchange.Status);
        w.Write("Content-Type: application/json\r\nContent-Length: "u8);
        w.WriteNumber(body.Length);
        w.Write("\r\n"u8);
        w.Write(_exchange.ResponseLines.AsSpan(0, headers));
        w.Write(DateHeader.Line);
        w.WriteHeader("X-Request-Id: "u8, CurrentRequestId());
        if (close) w.Write("Connection: close\r\n"u8);
        w.Write("\r\n"u8);
        if (_request.Method != Http.HttpMethod.Head) w.Write(body);
        w.Commit();
        var flush = await _output.FlushAsync().ConfigureAwait(false);
        return !close && !flush.IsCompleted;
    }

    /// <summary>
    /// A reply written without reading the request body must close the connection (the unread body would be parsed
    /// as the next request); so must a client that asked to close, or a gateway that is draining.
    /// </summary>
    private bool CloseAfterReply => _request.HasBody || _request.WantsClose || _closeRequested;

    // TLS: whether the connection is encrypted, its client certificate's fingerprints, and the allowlisted device they
    // belong to in _deviceTable (the snapshot's list it was looked up in)
    private readonly bool _isTls;
    private readonly ClientCertificateFingerprints? _certificate;
    private DeviceTable? _deviceTable;
    private DeviceModel? _device;

    /// <summary>Writes the deciding rule's pre-encoded deny/respond response (or the default deny).</summary>
    private async ValueTask<bool> RespondFromPolicyAsync(CompiledPolicy policy)
    {
        var rule = _policy.DecidingRule >= 0 ? policy.Rules[_policy.DecidingRule] : null;
        _exchange.Status = rule?.Status ?? 403;
        if (_policy.Verdict == PolicyVerdict.Deny) _runtime.Metrics.CountRejection(RejectReason.PolicyDenied);
        bool close = CloseAfterReply;
        var w = new HeadWriter(_output);
        w.Write(rule?.ResponseHead ?? policy.DefaultDenyResponseHead);
        w.Write(DateHeader.Line);
        w.WriteHeader("X-Request-Id: "u8, CurrentRequestId());
        if (close) w.Write("Connection: close\r\n"u8);
        w.Write("\r\n"u8);
        if (_request.Method != Http.HttpMethod.Head) w.Write(rule?.ResponseBody ?? policy.DefaultDenyResponseBody);
        w.Commit();
        var flush = await _output.FlushAsync().ConfigureAwait(false);
        return !close && !flush.IsCompleted;
    }

    /// <summary>Writes a canned error response. Returns whether the connection stays open.</summary>
    private async ValueTask<bool> RejectAsync(RejectReason reason, bool close)
    {
        _runtime.Metrics.CountRejection(reason);
        NoteRejection(reason);
        _exchange.Status = RejectReasons.StatusCode(reason);
        close |= _closeRequested;
        var w = new HeadWriter(_output);
        CannedResponses.Write(ref w, reason, close, requestId: CurrentRequestId());
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
        CheckRequestTimeouts(now); // after the head: body, response and total request timeouts (ProxyConnection.Timeouts.cs)
        if (now < Volatile.Read(ref _deadline)) return;
        Volatile.Write(ref _deadline, long.MaxValue);
        switch (_timeoutKind)
        {
            case TimeoutKind.KeepAlive:
            case TimeoutKind.RequestHead:
                _context.Abort(new ConnectionAbortedException("timeout"));
                break;
            case TimeoutKind.UpstreamResponse:
                _fw.UpstreamTimedOut = true;
                Volatile.Read(ref _fw.ActiveUpstream)?.Abort();
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
        TrimBodyBuffer(all: true);
        _runtime.ReturnState(_state);
    }

    /// <summary>
    /// Fixes the request's id once, before anything is written for it: the client's valid X-Request-Id (when
    /// <paramref name="trustClient"/>; a refused head's is not), otherwise a new one. The forwarded head, the response
    /// (relayed or written by the gateway) and the access log all use it (<see cref="CurrentRequestId"/>).
    /// </summary>
    private void AssignRequestId(bool trustClient)
    {
        if (!trustClient) _request.RequestId = default;
        if (!_request.RequestId.IsEmpty) return;
        ulong n = (ulong)Interlocked.Increment(ref s_idCounter);
        WriteHex(_requestId.AsSpan(0, 16), s_idPrefix);
        WriteHex(_requestId.AsSpan(16, 16), n);
        _fw.RequestIdLength = 32;
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
