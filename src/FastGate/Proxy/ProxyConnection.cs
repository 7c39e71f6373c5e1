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
    private readonly byte[] _requestId;
    private int _requestIdLength;

    private long _deadline = long.MaxValue;
    private TimeoutKind _timeoutKind;
    private volatile bool _upstreamTimedOut;
    private UpstreamConnection? _activeUpstream;
    private volatile bool _closeRequested;
    private volatile bool _idle;
    private long _responseBytes;

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
        _exchange.Begin(_peerIp, _peerAddress, null);
        // TLS listeners: the handshake is over (and a client certificate, if any, validated against the listener's
        // CA) before the first byte reaches here; its fingerprints are computed once for the device lookups
        if (context.Features.Get<Microsoft.AspNetCore.Http.Features.ITlsConnectionFeature>() is { } tls)
        {
            _isTls = true;
            if (tls.ClientCertificate is { } certificate) _certificate = ClientCertificateFingerprints.From(certificate);
        }
        context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static s => ((ProxyConnection)s!).RequestClose(), this);
    }

    /// <summary>
    /// The connection loop. Every per-request await lives in this one method, so its state machine is allocated
    /// once per connection and reused by every request on it (nested async methods would box per request).
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
                _requestIdLength = 0;
                _bytesOutMark = _output.Written;
                _exchange.Begin(_peerIp, _peerAddress, _device);
                SetDeadline(snapshot.KeepAliveTimeoutTicks, TimeoutKind.KeepAlive);
                _idle = true;
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

                // 2. admission: one synchronous decision (Pipeline/Admission) by the snapshot current when the head
                // arrived: route → client → block list → CORS preflight → authentication → policy → auth requirements
                long started = Stopwatch.GetTimestamp();
                AssignRequestId(trustClient: true);
                snapshot = _runtime.Current;
                var policy = snapshot.Policy;
                if (_certificate is not null && !ReferenceEquals(_deviceTable, snapshot.Devices))
                {
                    // the device of this connection's certificate, looked up again only when a reload changed the list
                    _deviceTable = snapshot.Devices;
                    _device = _deviceTable.Find(_certificate);
                    _exchange.Begin(_peerIp, _peerAddress, _device);
                }
                var verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
                if (verdict == Pipeline.AdmissionVerdict.NeedsToken)
                {
                    // a bearer token that missed the validated-token cache (keys may be fetched once)
                    _exchange.CompleteToken(await _exchange.PendingToken.ConfigureAwait(false));
                    verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
                }
                if (verdict != Pipeline.AdmissionVerdict.Forward)
                {
                    if (!await ReplyAsync(verdict, _exchange.Route, policy, started).ConfigureAwait(false) || _closeRequested) return;
                    continue;
                }
                var route = _exchange.Route!; // admitted: there is a route
                DecorateResponse(route);
                var cluster = _exchange.Cluster!;
                if (cluster.Protocol == UpstreamProtocol.H2)
                {
                    // an h2 (gRPC) cluster is reached from HTTP/2 clients only (Proxy/Http2Gateway.cs)
                    bool stays = await RejectAsync(RejectReason.Http2Required, close: CloseAfterReply).ConfigureAwait(false);
                    route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
                    Observe(route, started, RejectReason.Http2Required);
                    if (!stays || _closeRequested) return;
                    continue;
                }

                // 2c. rate limits: the route's, then those of every matched rule (local limiters complete synchronously)
                if (route.Limiters.Length > 0 || HasRuleLimiters(snapshot))
                {
                    var limited = await AdmitLimitsAsync(snapshot, route, started).ConfigureAwait(false);
                    if (limited != LimitOutcome.Admitted)
                    {
                        if (limited == LimitOutcome.RepliedClose || _closeRequested) return;
                        continue;
                    }
                }

                // 2d. a route with "ai": the unified OpenAI-compatible endpoint answers (src/FastGate/Ai) instead of the forward
                if (route.Ai is { } ai)
                {
                    if (!await RunAiAsync(snapshot, route, ai, started).ConfigureAwait(false) || _closeRequested) return;
                    continue;
                }

                // 3. forward: the small body read first, lease, send, relay, retry once when safe. Inline: as its own
                // async method its pooled state machine box missed the pool under load (240 B/request measured)
                var request = _request;
                if (request.ExpectContinue && request.HasBody)
                {
                    // The gateway answers the expectation itself (and drops Expect upstream), so the body comes at once.
                    _output.Write(Continue100);
                    await _output.FlushAsync().ConfigureAwait(false);
                }
                bool keepAlive;
                // slow clients: the route's total timeout, body timing; a small body is read before the lease (3e)
                BeginRequestTiming(snapshot, route, started);
                ResetBodyBuffer();
                if (request.HasBody) StartBodyTiming();
                var resilience = cluster.Resilience;
                DestinationModel? previous = null; // the destination the last try failed on: the next goes elsewhere
                for (int attempt = 0; ; attempt++)
                {
                    if (attempt == 0 && !EnterCluster(resilience))
                    {
                        keepAlive = await RejectAsync(RejectReason.CircuitOpen, close: CloseAfterReply).ConfigureAwait(false);
                        break;
                    }
                    if (attempt == 0 && ShouldBufferBody(snapshot))
                    {
                        var buffered = await BufferBodyAsync(snapshot).ConfigureAwait(false);
                        if (buffered != CopyResult.Done)
                        {
                            keepAlive = await RejectBodyAsync(buffered).ConfigureAwait(false);
                            break;
                        }
                        if (_bodyComplete) StopBodyTiming();
                    }
                    if (attempt == 0 && _exchange.WafBodyPending && InspectBody())
                    {
                        keepAlive = await RejectAsync(RejectReason.WafBlocked, close: CloseAfterReply).ConfigureAwait(false);
                        break;
                    }
                    // 3a. lease an upstream connection
                    var destination = PickDestination(cluster, avoid: previous);
                    NoteUpstream(cluster, destination);
                    var upstream = destination.Pool.TryRentIdle();
                    if (upstream is null)
                    {
                        if (!resilience.TryEnterPending())
                        {
                            keepAlive = await RejectAsync(RejectReason.CircuitOpen, close: CloseAfterReply).ConfigureAwait(false);
                            break;
                        }
                        var (connection, error) = await destination.Pool.ConnectAsync(snapshot.UpstreamConnectTimeout).ConfigureAwait(false);
                        resilience.ExitPending();
                        if (connection is null)
                        {
                            EndTry(ConnectOutcome(error));
                            // never sent: any method may go to another destination. A certificate the gateway refuses
                            // is refused again by the same destination, so it is retried only where another one exists.
                            if ((error != RejectReason.UpstreamTlsFailed || cluster.Destinations.Length > 1)
                                && TryRetry(resilience, attempt, RetryReason.Connect))
                            {
                                previous = destination;
                                continue;
                            }
                            keepAlive = await RejectAsync(error, close: CloseAfterReply).ConfigureAwait(false);
                            break;
                        }
                        upstream = connection;
                    }
                    _upstreamTimedOut = false;
                    Volatile.Write(ref _activeUpstream, upstream);
                    if (StopReason != RejectReason.None)
                    {
                        // the request timed out while it waited for the connection: nothing was sent on it
                        EndTry(UpstreamOutcome.Abandoned);
                        ReleaseUpstream(upstream, reuse: upstream.Reused);
                        keepAlive = await RejectAsync(StopReason, close: true).ConfigureAwait(false);
                        break;
                    }

                    // 3b. the request: rewritten head, then the body by its framing
                    WriteUpstreamHead(upstream.Output, destination);
                    // the buffered body (or its buffered part, then the rest streamed), or the body streamed
                    var sent = await SendBodyAsync(upstream.Output, snapshot).ConfigureAwait(false);
                    StopBodyTiming();
                    if (sent != CopyResult.Done)
                    {
                        EndTry(sent == CopyResult.DestinationFailed && !upstream.Reused ? UpstreamOutcome.Reset : UpstreamOutcome.Abandoned);
                        ReleaseUpstream(upstream, reuse: false);
                        if (sent == CopyResult.DestinationFailed && CanRetry(upstream, attempt)) continue; // stale keep-alive
                        keepAlive = await RejectBodyAsync(sent).ConfigureAwait(false);
                        break;
                    }

                    // 3c. the response head (interim 1xx heads relayed)
                    SetDeadline(resilience.PerTryTimeoutTicks > 0 ? Math.Min(resilience.PerTryTimeoutTicks, snapshot.UpstreamResponseTimeoutTicks) : snapshot.UpstreamResponseTimeoutTicks,
                        TimeoutKind.UpstreamResponse);
                    ResponseStep responseStep;
                    RejectReason responseError;
                    bool anyResponseBytes = false;
                    do
                    {
                        ReadResult result;
                        try
                        {
                            result = await upstream.Input.ReadAsync().ConfigureAwait(false);
                        }
                        catch (Exception e) when (e is not OutOfMemoryException)
                        {
                            responseError = _upstreamTimedOut ? RejectReason.UpstreamResponseTimeout
                                : anyResponseBytes ? RejectReason.UpstreamMalformedResponse : RejectReason.UpstreamReset;
                            responseStep = ResponseStep.Failed;
                            break;
                        }
                        responseStep = OnResponseBytes(result, upstream, snapshot.Limits, ref anyResponseBytes, out responseError);
                        if (responseStep == ResponseStep.Interim)
                        {
                            WriteResponseHead(close: false, interim: true);
                            await _output.FlushAsync().ConfigureAwait(false);
                        }
                    }
                    while (responseStep is ResponseStep.NeedMore or ResponseStep.Interim);
                    ClearDeadline();
                    NoteUpstreamResponse();
                    if (responseStep == ResponseStep.Failed)
                    {
                        ReleaseUpstream(upstream, reuse: false);
                        EndTry(ResponseFailureOutcome(StopReason == RejectReason.RequestTimeout ? StopReason : responseError, upstream.Reused));
                        if (StopReason == RejectReason.RequestTimeout) responseError = RejectReason.RequestTimeout;
                        else if (responseError == RejectReason.UpstreamReset && CanRetry(upstream, attempt)) continue; // a stale keep-alive connection
                        else if (RetryAfterFailure(resilience, attempt, responseError))
                        {
                            previous = destination;
                            continue;
                        }
                        EndRequestDeadline();
                        keepAlive = await RejectAsync(responseError, close: request.WantsClose).ConfigureAwait(false);
                        break;
                    }

                    // 3d. relay the response (the try ends with its head: a client abort mid-body is not the destination's)
                    var response = _response;
                    EndTry(response.StatusCode >= 500 ? UpstreamOutcome.ServerError : UpstreamOutcome.Success);
                    if (RetryAfterStatus(resilience, attempt, response))
                    {
                        ReleaseUpstream(upstream, reuse: false); // its unread body goes with the connection
                        previous = destination;
                        continue;
                    }
                    EndRequestDeadline(); // the response head is in: the total request timeout no longer applies
                    _exchange.Status = response.StatusCode;
                    if (response.StatusCode == 101)
                    {
                        WriteResponseHead(close: false, interim: false);
                        await TunnelAsync(upstream).ConfigureAwait(false);
                        keepAlive = false;
                        break;
                    }
                    bool close = request.WantsClose || response.Framing == BodyFraming.ReadToClose || _closeRequested || _runtime.IsDraining;
                    WriteResponseHead(close, interim: false);
                    bool scanUsage = _exchange.TokenChargeCount > 0;
                    if (scanUsage) _usage.Reset();
                    CopyResult copied;
                    if (response.Framing is BodyFraming.ContentLength or BodyFraming.None)
                    {
                        // Inline for the same reason as above: the common response must not box a state machine.
                        long remaining = response.Framing == BodyFraming.None ? 0 : response.ContentLength;
                        copied = CopyResult.Done;
                        do
                        {
                            if (remaining > 0)
                            {
                                ReadResult result;
                                try
                                {
                                    result = await upstream.Input.ReadAsync().ConfigureAwait(false);
                                }
                                catch (Exception e) when (e is not OutOfMemoryException)
                                {
                                    copied = CopyResult.SourceFailed;
                                    break;
                                }
                                long before = remaining;
                                if (!MoveBody(result, upstream.Input, _output, ref remaining, ref _usage, scanUsage))
                                {
                                    copied = CopyResult.SourceEnded;
                                    break;
                                }
                                _responseBytes = before - remaining;
                            }
                            var flush = await FlushClient(_responseBytes).ConfigureAwait(false);
                            _clientFlushPending = false;
                            _responseBytes = 0;
                            if (flush.IsCompleted)
                            {
                                copied = CopyResult.DestinationFailed;
                                break;
                            }
                        }
                        while (remaining > 0);
                    }
                    else
                    {
                        copied = response.Framing == BodyFraming.Chunked
                            ? await CopyChunkedAsync(upstream.Input, _output, long.MaxValue, snapshot.Limits.MaxHeaderBytes, RejectReason.UpstreamMalformedResponse, scanUsage).ConfigureAwait(false)
                            : await CopyToEndAsync(upstream.Input, _output, timeClient: true).ConfigureAwait(false);
                    }
                    bool reusable = copied == CopyResult.Done && response.Framing != BodyFraming.ReadToClose && !response.ConnectionClose && !response.AnnouncedBodyIgnored
                                    && (response.IsHttp11 || response.ConnectionKeepAlive) && request.IsHttp11;
                    ReleaseUpstream(upstream, reusable);
                    if (scanUsage) ChargeTokens(route);
                    // After a failure with the head already out, the only honest signal left is to close.
                    keepAlive = !close && (copied == CopyResult.Done || response.Framing == BodyFraming.ReadToClose);
                    break;
                }
                LeaveCluster();
                EndRequestTiming();
                TrimBodyBuffer(all: false);
                ReleaseLeases();
                route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
                Observe(route, started, RejectReason.None);
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

    /// <summary>Response lines of an admitted request: HSTS on TLS, the CORS grant for an allowed origin (Vary for every origin).</summary>
    private void DecorateResponse(RouteModel route)
    {
        _exchange.ResponseLinesLength = 0;
        if (_isTls && route.HstsLine is { } hsts) AppendExtraHeaders(hsts);
        if (route.Cors is not { } cors || !_request.TryGetHeader("origin"u8, out var origin)) return;
        AppendExtraHeaders(CorsModel.VaryLine);
        if (!cors.IsAllowed(origin)) return;
        AppendExtraHeaders("Access-Control-Allow-Origin: "u8);
        AppendExtraHeaders(origin);
        AppendExtraHeaders("\r\n"u8);
        AppendExtraHeaders(cors.ResponseGrantLines);
    }

    private enum LimitOutcome : byte { Admitted, RepliedKeepAlive, RepliedClose }

    /// <summary>The request's rate limits (route's, then each matched rule's); over a limit the 429 (or 503) is written here.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<LimitOutcome> AdmitLimitsAsync(GatewaySnapshot snapshot, RouteModel route, long started)
    {
        long now = _runtime.Limiters.Time.GetTimestamp();
        CompiledLimiter? rejectedBy = null;
        RateLimitDecision rejection = default;
        for (int set = -1; set < _policy.MatchedCount && rejectedBy is null; set++)
        {
            var limiters = set < 0 ? route.Limiters : snapshot.RuleLimiters[_policy.Matched[set]];
            foreach (var limiter in limiters)
            {
                int keyLength = limiter.BuildKey(_keyBuffer, _request, ClientIp, route.IdBytes, _exchange.Consumer, _device);
                // a token quota only checks here (cost 0: refused while in debt); the response pays
                long cost = limiter.CountsTokens ? 0 : 1;
                var pending = keyLength >= 0
                    ? limiter.Limiter.AcquireAsync(_keyBuffer.AsSpan(0, keyLength), cost, now)
                    : limiter.Limiter.AcquireWithoutKeyAsync(cost);
                var decision = pending.IsCompletedSuccessfully ? pending.Result : await pending.ConfigureAwait(false);
                if (!decision.IsAllowed)
                {
                    limiter.Rejected.Inc();
                    rejectedBy = limiter;
                    rejection = decision;
                    break;
                }
                limiter.Allowed.Inc();
                if (limiter.IsConcurrency) AddLease(limiter, decision);
                if (limiter.CountsTokens && keyLength >= 0) AddTokenCharge(limiter, _keyBuffer.AsSpan(0, keyLength));
                if (limiter.Definition.QuotaHeaders) AppendQuotaHeaders(limiter, decision);
            }
        }
        if (rejectedBy is null) return LimitOutcome.Admitted;
        ReleaseLeases();
        bool stays = await RejectRateLimitedAsync(rejectedBy, rejection).ConfigureAwait(false);
        route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
        Observe(route, started, RejectReason.RateLimited);
        return stays ? LimitOutcome.RepliedKeepAlive : LimitOutcome.RepliedClose;
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
        ReleaseLeases(); // a client that went away mid-request gives its concurrency slots back
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

    // ---- rate limiting and CORS state (per connection, reused); _exchange.ResponseLines are added to the client response ----
    private readonly byte[] _keyBuffer = new byte[512];

    private bool HasRuleLimiters(GatewaySnapshot snapshot)
    {
        foreach (int i in _policy.Matched)
            if (snapshot.RuleLimiters[i].Length > 0) return true;
        return false;
    }

    private void AddLease(CompiledLimiter limiter, in RateLimitDecision decision)
    {
        if (_exchange.LeaseCount == _exchange.Leases.Length) Array.Resize(ref _exchange.Leases, _exchange.Leases.Length * 2);
        _exchange.Leases[_exchange.LeaseCount++] = (limiter.Limiter, decision);
    }

    // ---- token quotas: the limiters (and keys) this request is to be charged on, and the usage read from its response ----
    private UsageScanner _usage;

    private void AddTokenCharge(CompiledLimiter limiter, ReadOnlySpan<byte> key)
    {
        if (_exchange.TokenChargeCount == _exchange.TokenCharges.Length) Array.Resize(ref _exchange.TokenCharges, _exchange.TokenChargeCount + 2);
        ref var slot = ref _exchange.TokenCharges[_exchange.TokenChargeCount++];
        if (slot.Key is null || slot.Key.Length < key.Length) slot.Key = new byte[Math.Max(64, key.Length)];
        key.CopyTo(slot.Key);
        slot.Limiter = limiter;
        slot.Length = key.Length;
    }

    /// <summary>Charges the tokens the response reported to every token quota the request passed.</summary>
    private void ChargeTokens(RouteModel route)
    {
        _usage.Complete();
        long tokens = _usage.Tokens;
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

    private void ReleaseLeases()
    {
        for (int i = 0; i < _exchange.LeaseCount; i++)
        {
            _exchange.Leases[i].Limiter.Release(_exchange.Leases[i].Decision);
            _exchange.Leases[i] = default;
        }
        _exchange.LeaseCount = 0;
    }

    private void AppendExtraHeaders(ReadOnlySpan<byte> bytes)
    {
        if (_exchange.ResponseLinesLength + bytes.Length > _exchange.ResponseLines.Length) Array.Resize(ref _exchange.ResponseLines, Math.Max(_exchange.ResponseLines.Length * 2, _exchange.ResponseLinesLength + bytes.Length));
        bytes.CopyTo(_exchange.ResponseLines.AsSpan(_exchange.ResponseLinesLength));
        _exchange.ResponseLinesLength += bytes.Length;
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

    private void AppendQuotaHeaders(CompiledLimiter limiter, in RateLimitDecision decision)
    {
        int need = RateLimitHeaders.MaxLength(limiter.Definition);
        if (_exchange.ResponseLinesLength + need > _exchange.ResponseLines.Length) Array.Resize(ref _exchange.ResponseLines, Math.Max(_exchange.ResponseLines.Length * 2, _exchange.ResponseLinesLength + need));
        int written = RateLimitHeaders.Write(_exchange.ResponseLines.AsSpan(_exchange.ResponseLinesLength), decision, limiter.Definition);
        if (written > 0) _exchange.ResponseLinesLength += written;
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
        _requestIdLength = 32;
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
