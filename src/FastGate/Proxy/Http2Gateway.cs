using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Observability;
using FastGate.RateLimiting;
using FastGate.Routing;
using FastGate.Security;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace FastGate.Proxy;

/// <summary>What the HTTP/2 path knows of one client connection (set by <see cref="Hosting.Http2Dispatch"/>).</summary>
internal sealed class Http2ConnectionInfo(byte[] peerIp, Policy.ClientAddress peerAddress, bool isTls, ClientCertificateFingerprints? certificate)
{
    public byte[] PeerIp { get; } = peerIp;
    public Policy.ClientAddress PeerAddress { get; } = peerAddress;
    public bool IsTls { get; } = isTls;
    public ClientCertificateFingerprints? Certificate { get; } = certificate;
}

/// <summary>
/// The HTTP/2 request path (docs/http2.md). Kestrel's HTTP/2 serves the framing (HPACK, flow control, stream limits,
/// its rapid-reset and CONTINUATION defences); each stream then comes here as an ASP.NET Core request and is:
/// <list type="number">
/// <item>written out as the HTTP/1.1 head it stands for (pseudo-headers as the request line and Host) and parsed by
/// the same strict <see cref="HttpRequestParser"/> and <see cref="RequestCanonicalizer"/> as an HTTP/1.1 request, so
/// routing, policy, authentication and the forwarded head see one canonical request whatever the protocol;</item>
/// <item>decided by the same <see cref="Pipeline.Admission.Decide"/> (then the same rate limits and WAF body phase);</item>
/// <item>answered, when the gateway answers, with the bytes the HTTP/1.1 path writes (canned rejections, policy
/// responses, preflights, 429s) turned into an HTTP/2 response, or for a gRPC request as a trailers-only gRPC
/// status;</item>
/// <item>forwarded with the head <see cref="HeadRewriter"/> writes for HTTP/1.1 (forwarded headers, identities, hop-by-hop
/// and spoofed names removed), over the cluster's <see cref="Http2Upstream"/>: request and response bodies relayed as
/// they flow, trailers relayed.</item>
/// </list>
/// Unlike the HTTP/1.1 loop it allocates per request (HttpContext, HttpRequestMessage); its cost is measured in
/// docs/performance.md. Not on this path: retries to another destination and tracing spans (the traceparent is
/// forwarded as sent).
/// </summary>
internal sealed class Http2Gateway(GatewayRuntime runtime)
{
    private static readonly ulong s_idPrefix = (ulong)Random.Shared.NextInt64();
    private static long s_idCounter;

    private readonly GatewayRuntime _runtime = runtime;

    public async Task HandleAsync(HttpContext ctx, Http2ConnectionInfo connection)
    {
        long started = Stopwatch.GetTimestamp();
        var snapshot = _runtime.Current;
        var state = _runtime.RentState();
        var call = new Http2Call(this, ctx, connection, state, started);
        try
        {
            await call.RunAsync(snapshot).ConfigureAwait(false);
        }
        finally
        {
            call.Dispose();
            _runtime.ReturnState(state);
        }
    }

    internal GatewayRuntime Runtime => _runtime;

    internal static int NewRequestId(Span<byte> dest)
    {
        ulong n = (ulong)Interlocked.Increment(ref s_idCounter);
        WriteHex(dest[..16], s_idPrefix);
        WriteHex(dest.Slice(16, 16), n);
        return 32;
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

/// <summary>One HTTP/2 stream through the gateway.</summary>
internal sealed class Http2Call : IDisposable
{
    private readonly Http2Gateway _gateway;
    private readonly GatewayRuntime _runtime;
    private readonly HttpContext _ctx;
    private readonly Http2ConnectionInfo _connection;
    private readonly RequestHead _request;
    private readonly Pipeline.Exchange _exchange;
    private readonly long _started;
    private readonly byte[] _requestId = new byte[32];
    private int _requestIdLength;
    private byte[] _head = [];
    private DeviceModel? _device;
    private bool _isGrpc;
    private string? _obsCluster, _obsUpstream, _obsRule;
    private long _upstreamStart, _upstreamEnd, _bytesOut, _bytesIn;
    private RejectReason _obsReason;
    private string? _obsDecision;
    private DestinationModel? _tryDestination;

    public Http2Call(Http2Gateway gateway, HttpContext ctx, Http2ConnectionInfo connection, ConnectionState state, long started)
    {
        _gateway = gateway;
        _runtime = gateway.Runtime;
        _ctx = ctx;
        _connection = connection;
        _request = state.Request;
        _exchange = state.Exchange;
        _started = started;
    }

    public async Task RunAsync(GatewaySnapshot snapshot)
    {
        var headers = _ctx.Request.Headers;
        _isGrpc = headers.ContentType.Count > 0 && headers.ContentType[0]!.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase);
        // 1. the HTTP/1.1 head this stream stands for, parsed and canonicalised as on the HTTP/1.1 path
        var reason = ParseHead(snapshot);
        if (reason != RejectReason.None)
        {
            _requestIdLength = Http2Gateway.NewRequestId(_requestId);
            await RejectAsync(reason).ConfigureAwait(false);
            Observe(null, reason, parsed: false);
            return;
        }
        // the client's valid X-Request-Id (as the parser accepted it), else a new one: as on the HTTP/1.1 path
        _clientRequestId = !_request.RequestId.IsEmpty;
        if (!_clientRequestId) _requestIdLength = Http2Gateway.NewRequestId(_requestId);

        // 2. admission: the one decision (Pipeline/Admission), by the snapshot current now
        snapshot = _runtime.Current;
        if (_connection.Certificate is { } certificate) _device = snapshot.Devices.Find(certificate);
        _exchange.Begin(_connection.PeerIp, _connection.PeerAddress, _device);
        _exchange.IsTls = _connection.IsTls; // the state is pooled: set for this stream
        _exchange.LimiterClock = _runtime.Limiters.Time;
        var verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
        while (verdict is Pipeline.AdmissionVerdict.NeedsToken or Pipeline.AdmissionVerdict.NeedsLimiter)
        {
            if (verdict == Pipeline.AdmissionVerdict.NeedsToken) _exchange.CompleteToken(await _exchange.PendingToken.ConfigureAwait(false));
            else _exchange.CompleteLimit(await _exchange.PendingLimit.ConfigureAwait(false));
            verdict = Pipeline.Admission.Decide(snapshot, _exchange, _runtime.Observability);
        }
        if (verdict == Pipeline.AdmissionVerdict.RateLimited)
        {
            await RejectRateLimitedAsync(_exchange.Route!).ConfigureAwait(false);
            return;
        }
        if (verdict != Pipeline.AdmissionVerdict.Forward)
        {
            await ReplyAsync(verdict, snapshot).ConfigureAwait(false);
            return;
        }
        var route = _exchange.Route!;
        var cluster = _exchange.Cluster!;
        try
        {
            if (route.Ai is not null)
            {
                // the unified AI endpoint speaks HTTP/1.1 only (src/FastGate/Ai)
                await RejectAsync(RejectReason.UnsupportedHttpVersion).ConfigureAwait(false);
                Finish(route, RejectReason.UnsupportedHttpVersion);
                return;
            }
            var resilience = cluster.Resilience;
            if (!resilience.TryEnter())
            {
                await RejectAsync(RejectReason.CircuitOpen).ConfigureAwait(false);
                Finish(route, RejectReason.CircuitOpen);
                return;
            }
            try
            {
                var outcome = await ForwardAsync(snapshot, route, cluster).ConfigureAwait(false);
                Finish(route, outcome);
            }
            finally
            {
                resilience.Exit();
            }
        }
        finally
        {
            EndTry(UpstreamOutcome.Abandoned);
            _exchange.ReleaseLeases();
        }
    }

    private void Finish(RouteModel route, RejectReason reason)
    {
        route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(_started).TotalSeconds);
        Observe(route, reason, parsed: true);
    }

    // ---- 1. the head ----

    /// <summary>
    /// Writes the stream's head as HTTP/1.1 ("METHOD :path HTTP/1.1", then the fields, Host from :authority) and
    /// parses it with the HTTP/1.1 parser and limits. A value with CR, LF or NUL (which would forge a field there) is
    /// refused; so are the connection-specific fields HTTP/2 forbids (RFC 9113 8.2.2) should one get past Kestrel. A
    /// stream that may carry a body and names no length gets "Transfer-Encoding: chunked" (the body's framing there).
    /// </summary>
    private RejectReason ParseHead(GatewaySnapshot snapshot)
    {
        var req = _ctx.Request;
        var rawTarget = _ctx.Features.Get<IHttpRequestFeature>()?.RawTarget ?? "";
        int size = req.Method.Length + rawTarget.Length + 64;
        foreach (var h in req.Headers)
            foreach (var v in h.Value) size += h.Key.Length + (v?.Length ?? 0) + 4;
        int limit = snapshot.Limits.MaxHeadBytes + 64;
        if (size > limit + 4096) return RejectReason.HeadersTooLarge; // the parser would say so too; do not build it
        _head = ArrayPool<byte>.Shared.Rent(size);
        int n = 0;
        if (!Append(req.Method, ref n) || !Append(" ", ref n) || !Append(rawTarget, ref n) || !Append(" HTTP/1.1", ref n) || !Crlf(ref n))
            return RejectReason.InvalidRequestLine;
        bool hasLength = false;
        foreach (var h in req.Headers)
        {
            var name = h.Key;
            if (name.Length == 0 || name[0] == ':') continue;
            if (IsConnectionSpecific(name)) return RejectReason.InvalidHeaderName;
            if (name.Equals("content-length", StringComparison.OrdinalIgnoreCase)) hasLength = true;
            foreach (var v in h.Value)
            {
                if (!ValidName(name)) return RejectReason.InvalidHeaderName;
                if (!Append(name, ref n) || !Append(": ", ref n) || !Append(v ?? "", ref n) || !Crlf(ref n))
                    return RejectReason.InvalidHeaderValue;
            }
        }
        bool mayHaveBody = _ctx.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true;
        if (mayHaveBody && !hasLength && (!Append("Transfer-Encoding: chunked", ref n) || !Crlf(ref n))) return RejectReason.InvalidHeaderValue;
        if (!Crlf(ref n)) return RejectReason.InvalidHeaderValue;
        var status = HttpRequestParser.TryParse(_head.AsSpan(0, n), snapshot.Limits, _request, out _, out var reason);
        return status == ParseStatus.Complete ? RejectReason.None : reason == RejectReason.None ? RejectReason.InvalidRequestLine : reason;
    }

    private bool Crlf(ref int n)
    {
        if (n + 2 > _head.Length) return false;
        _head[n++] = (byte)'\r';
        _head[n++] = (byte)'\n';
        return true;
    }

    /// <summary>Appends text that must not hold CR, LF or NUL (they would end the line or forge a field).</summary>
    private bool Append(string s, ref int n)
    {
        if (n + s.Length > _head.Length) return false;
        foreach (char c in s)
        {
            if (c is '\r' or '\n' or '\0' || c > 0xFF) return false;
            _head[n++] = (byte)c;
        }
        return true;
    }

    private static bool ValidName(string name)
    {
        foreach (char c in name)
            if (c <= ' ' || c >= 0x7F || c == ':') return false;
        return true;
    }

    private static bool IsConnectionSpecific(string name) =>
        name.Equals("connection", StringComparison.OrdinalIgnoreCase) || name.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)
        || name.Equals("proxy-connection", StringComparison.OrdinalIgnoreCase) || name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase)
        || name.Equals("upgrade", StringComparison.OrdinalIgnoreCase);

    // ---- 2. the gateway's own answers ----

    private async Task ReplyAsync(Pipeline.AdmissionVerdict verdict, GatewaySnapshot snapshot)
    {
        var route = _exchange.Route;
        var policy = snapshot.Policy;
        var bytes = new Http1Bytes();
        RejectReason why = RejectReason.None;
        if (verdict == Pipeline.AdmissionVerdict.PolicyReply)
        {
            var rule = _exchange.Policy.DecidingRule >= 0 ? policy.Rules[_exchange.Policy.DecidingRule] : null;
            _exchange.Status = rule?.Status ?? 403;
            if (_exchange.Policy.Verdict == Policy.PolicyVerdict.Deny)
            {
                _runtime.Metrics.CountRejection(RejectReason.PolicyDenied);
                why = RejectReason.PolicyDenied;
            }
            else _obsDecision = "policy_respond";
            _obsRule = rule?.Id;
            var w = bytes.Writer();
            w.Write(rule?.ResponseHead ?? policy.DefaultDenyResponseHead);
            w.WriteHeader("X-Request-Id: "u8, RequestId);
            w.Write("\r\n"u8);
            if (_request.Method != Http.HttpMethod.Head) w.Write(rule?.ResponseBody ?? policy.DefaultDenyResponseBody);
            w.Commit();
        }
        else if (verdict == Pipeline.AdmissionVerdict.Preflight)
        {
            var cors = route!.Cors!;
            bool allowed = _exchange.CorsAllowed;
            _request.TryGetHeader("origin"u8, out var origin);
            _exchange.Status = allowed ? 204 : cors.PreflightRejectStatus;
            if (!allowed)
            {
                _runtime.Metrics.CountRejection(RejectReason.CorsRejected);
                why = RejectReason.CorsRejected;
            }
            var w = bytes.Writer();
            w.WriteStatusLine(_exchange.Status);
            w.WriteHeader("X-Request-Id: "u8, RequestId);
            w.Write(CorsModel.VaryLine);
            if (allowed)
            {
                w.WriteHeader("Access-Control-Allow-Origin: "u8, origin);
                w.Write(cors.PreflightGrantLines);
            }
            if (!allowed) w.Write("Content-Length: 0\r\n"u8);
            w.Write("\r\n"u8);
            w.Commit();
        }
        else
        {
            why = _exchange.Reason;
            await RejectAsync(why).ConfigureAwait(false);
            route?.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(_started).TotalSeconds);
            Observe(route, why, parsed: true);
            return;
        }
        await SendHttp1Async(bytes, grpcReason: why).ConfigureAwait(false);
        route?.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(_started).TotalSeconds);
        Observe(route, why, parsed: true);
    }

    /// <summary>The canned response of <paramref name="reason"/> (the HTTP/1.1 path's bytes), or its gRPC status.</summary>
    private Task RejectAsync(RejectReason reason)
    {
        _runtime.Metrics.CountRejection(reason);
        _obsReason = reason;
        _exchange.Status = RejectReasons.StatusCode(reason);
        var bytes = new Http1Bytes();
        var w = bytes.Writer();
        CannedResponses.Write(ref w, reason, close: false, requestId: RequestId);
        w.Commit();
        return SendHttp1Async(bytes, reason);
    }

    /// <summary>
    /// Sends a response the gateway wrote as HTTP/1.1 bytes as this stream's response: the status, the fields (less
    /// the ones HTTP/2 does not carry) and the body. A gRPC request gets the gRPC form instead: 200, application/grpc
    /// and grpc-status / grpc-message in a trailers-only response (gRPC over HTTP/2, "Responses").
    /// </summary>
    private async Task SendHttp1Async(Http1Bytes bytes, RejectReason grpcReason)
    {
        if (_ctx.Response.HasStarted) { _ctx.Abort(); return; }
        var data = bytes.ToArray();
        int headEnd = data.AsSpan().IndexOf("\r\n\r\n"u8);
        if (headEnd < 0) headEnd = data.Length;
        var head = data.AsSpan(0, headEnd);
        var response = _ctx.Response;
        if (_isGrpc)
        {
            response.StatusCode = 200;
            response.ContentType = "application/grpc";
            response.Headers["grpc-status"] = GrpcWire.StatusFor(_exchange.Status).ToString(System.Globalization.CultureInfo.InvariantCulture);
            response.Headers["grpc-message"] = GrpcWire.EncodeMessage(grpcReason != RejectReason.None ? RejectReasons.Name(grpcReason) : CannedResponses.StatusText(_exchange.Status));
            foreach (var (name, value) in Http1Bytes.Fields(head))
            {
                if (name.Equals("X-Request-Id", StringComparison.OrdinalIgnoreCase) || name.StartsWith("RateLimit", StringComparison.OrdinalIgnoreCase)
                    || name.Equals("Retry-After", StringComparison.OrdinalIgnoreCase) || name.Equals("WWW-Authenticate", StringComparison.OrdinalIgnoreCase))
                    response.Headers.Append(name, value);
            }
            await response.CompleteAsync().ConfigureAwait(false);
            return;
        }
        response.StatusCode = Http1Bytes.Status(head);
        foreach (var (name, value) in Http1Bytes.Fields(head))
        {
            if (IsHopByHopName(name) || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) || name.Equals("Date", StringComparison.OrdinalIgnoreCase)) continue;
            response.Headers.Append(name, value);
        }
        int bodyStart = Math.Min(data.Length, headEnd + 4);
        if (data.Length > bodyStart && _request.Method != Http.HttpMethod.Head)
        {
            response.ContentLength = data.Length - bodyStart;
            await response.Body.WriteAsync(data.AsMemory(bodyStart)).ConfigureAwait(false);
            _bytesOut += data.Length - bodyStart;
        }
        await response.CompleteAsync().ConfigureAwait(false);
    }

    // ---- 2c. over a rate limit (Decide's limits stage refused; the leases it took are released) ----

    private async Task RejectRateLimitedAsync(RouteModel route)
    {
        var rejectedBy = _exchange.RateLimitedBy!;
        var rejection = _exchange.RateLimitRejection;
        _runtime.Metrics.CountRejection(RejectReason.RateLimited);
        _exchange.Status = rejection.StatusCode;
        var body = RateLimitResponses.BodyFor(rejection);
        int max = RateLimitHeaders.MaxLength(rejectedBy.Definition);
        var lines = new byte[max];
        int headerLength = Math.Max(0, RateLimitHeaders.Write(lines, rejection, rejectedBy.Definition));
        var bytes = new Http1Bytes();
        var w = bytes.Writer();
        w.WriteStatusLine(_exchange.Status);
        w.Write("Content-Type: application/json\r\nContent-Length: "u8);
        w.WriteNumber(body.Length);
        w.Write("\r\n"u8);
        w.Write(lines.AsSpan(0, headerLength));
        w.WriteHeader("X-Request-Id: "u8, RequestId);
        w.Write("\r\n"u8);
        w.Write(body);
        w.Commit();
        await SendHttp1Async(bytes, RejectReason.RateLimited).ConfigureAwait(false);
        route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(_started).TotalSeconds);
        Observe(route, RejectReason.RateLimited, parsed: true);
    }

    // ---- 3. forward ----

    private async Task<RejectReason> ForwardAsync(GatewaySnapshot snapshot, RouteModel route, ClusterModel cluster)
    {
        var upstream = cluster.Http2!;
        var body = _ctx.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (body is { IsReadOnly: false }) body.MaxRequestBodySize = snapshot.Config.Limits.MaxBodyBytes;
        if (_request.Framing == BodyFraming.ContentLength && _request.ContentLength > snapshot.Config.Limits.MaxBodyBytes)
        {
            await RejectAsync(RejectReason.BodyTooLarge).ConfigureAwait(false);
            return RejectReason.BodyTooLarge;
        }
        // gRPC streams may idle between messages: Kestrel's minimum body rate does not apply (the deadline does)
        if (_isGrpc && _ctx.Features.Get<Microsoft.AspNetCore.Server.Kestrel.Core.Features.IHttpMinRequestBodyDataRateFeature>() is { } rate) rate.MinDataRate = null;

        // the WAF's phase 2 on the first requestBufferBytes of the body (all of it when it fits), before the upstream
        byte[]? prefix = null;
        int prefixLength = 0;
        bool bodyEnded = !_request.HasBody;
        if (_exchange.WafBodyPending)
        {
            (prefix, prefixLength, bodyEnded) = await ReadPrefixAsync(snapshot.RequestBufferBytes).ConfigureAwait(false);
            _exchange.WafBodyPending = false;
            if (Waf.WafStep.InspectBody(route.Waf!, _exchange.Waf!, prefix.AsSpan(0, prefixLength)))
            {
                ArrayPool<byte>.Shared.Return(prefix);
                await RejectAsync(RejectReason.WafBlocked).ConfigureAwait(false);
                return RejectReason.WafBlocked;
            }
        }

        // 3a. destination, and the head the HTTP/1.1 path would send it
        var destination = cluster.Pick(_exchange, null);
        _tryDestination = destination;
        _obsCluster = cluster.Id;
        _obsUpstream = destination.Address;
        _upstreamStart = Stopwatch.GetTimestamp();
        var message = BuildUpstreamRequest(destination, upstream, prefix, prefixLength, bodyEnded);

        // deadlines: the response head within upstreamResponseTimeout (the per-try timeout when shorter); a gRPC call
        // within its grpc-timeout; the route's requestTimeout for the whole exchange
        long headTicks = cluster.Resilience.PerTryTimeoutTicks > 0 ? Math.Min(cluster.Resilience.PerTryTimeoutTicks, snapshot.UpstreamResponseTimeoutTicks) : snapshot.UpstreamResponseTimeoutTicks;
        var headTimeout = TimeSpan.FromSeconds((double)headTicks / Stopwatch.Frequency);
        TimeSpan? deadline = null;
        if (_isGrpc && _request.TryGetHeader("grpc-timeout"u8, out var grpcTimeout))
        {
            if (!GrpcWire.TryParseTimeout(grpcTimeout, out var t))
            {
                EndTry(UpstreamOutcome.Abandoned);
                await RejectAsync(RejectReason.InvalidHeaderValue).ConfigureAwait(false);
                return RejectReason.InvalidHeaderValue;
            }
            deadline = t;
        }
        if (route.RequestTimeoutTicks > 0 && TimeSpan.FromSeconds((double)route.RequestTimeoutTicks / Stopwatch.Frequency) is var total && (deadline is null || total < deadline)) deadline = total;
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(_ctx.RequestAborted);
        var start = Stopwatch.GetTimestamp();
        // as on the HTTP/1.1 path, the response-head timeout starts once the request is sent: while a body still
        // streams (a client-streaming call) only the deadline runs, and Kestrel's minimum body rate (not for gRPC)
        _pending = new PendingHead(cancel, headTimeout, deadline, start);
        if (message.Content is null) _pending.BodySent();
        else if (deadline is { } d0) cancel.CancelAfter(d0);

        HttpResponseMessage response;
        try
        {
            response = await upstream.Invoker.SendAsync(message, cancel.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or Microsoft.AspNetCore.Http.BadHttpRequestException)
        {
            _upstreamEnd = Stopwatch.GetTimestamp();
            var why = FailureReason(e, deadline, start, headTimeout);
            EndTry(why switch
            {
                RejectReason.UpstreamConnectFailed or RejectReason.UpstreamTlsFailed => UpstreamOutcome.ConnectFailed,
                RejectReason.UpstreamResponseTimeout or RejectReason.UpstreamConnectTimeout => UpstreamOutcome.Timeout,
                RejectReason.UpstreamReset => UpstreamOutcome.Reset,
                _ => UpstreamOutcome.Abandoned,
            });
            if (_ctx.RequestAborted.IsCancellationRequested) return RejectReason.None; // the client went away
            await RejectAsync(why).ConfigureAwait(false);
            return why;
        }
        _upstreamEnd = Stopwatch.GetTimestamp();
        _pending.HeadReceived();
        using (response)
        {
            int status = (int)response.StatusCode;
            EndTry(status >= 500 ? UpstreamOutcome.ServerError : UpstreamOutcome.Success);
            _exchange.Status = status;
            // after the head: the call's deadline (or none: a stream may last; Kestrel's keep-alive pings and the
            // client's own RST_STREAM end it), and for a plain response each body read within upstreamResponseTimeout
            if (deadline is { } d) cancel.CancelAfter(d - Stopwatch.GetElapsedTime(start) is var left && left > TimeSpan.Zero ? left : TimeSpan.FromTicks(1));
            else cancel.CancelAfter(Timeout.InfiniteTimeSpan);
            Stream? source = null;
            byte[]? inspected = null;
            int inspectedLength = 0;
            if (route.Waf is { InspectResponses: true } profile && _exchange.Waf is { ResponseInspected: false } tx && !_isGrpc)
            {
                // the response phases before any of the response goes out, as on the HTTP/1.1 path
                RejectReason refused;
                (refused, source, inspected, inspectedLength) = await InspectResponseAsync(profile, tx, response, cancel, headTimeout).ConfigureAwait(false);
                if (refused != RejectReason.None)
                {
                    if (inspected is not null) ArrayPool<byte>.Shared.Return(inspected);
                    await RejectAsync(refused).ConfigureAwait(false);
                    return refused;
                }
            }
            WriteResponseHead(response, snapshot);
            return await RelayBodyAsync(response, cancel, readTimeout: _isGrpc ? null : headTimeout, deadline, source, inspected, inspectedLength).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Phase 3 on the upstream's status and headers, phase 4 on the first responseBodyLimit bytes of a body of a listed
    /// type (read here, each read within the response timeout; they go out first). None: relay the response.
    /// </summary>
    private async Task<(RejectReason Refused, Stream? Source, byte[]? Inspected, int Length)> InspectResponseAsync(Waf.WafProfile profile, Waf.WafTransaction tx,
        HttpResponseMessage response, CancellationTokenSource cancel, TimeSpan readTimeout)
    {
        bool block = profile.Mode == Waf.WafMode.Block;
        var headers = new List<(string, string)>();
        foreach (var h in response.Headers) foreach (var v in h.Value) headers.Add((h.Key, v));
        foreach (var h in response.Content.Headers) foreach (var v in h.Value) headers.Add((h.Key, v));
        var protocol = response.Version.Major >= 2 ? "HTTP/2.0" : response.Version.Minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
        if (tx.EvaluateResponseHeaders((int)response.StatusCode, protocol, headers)) return (block ? RejectReason.WafBlocked : RejectReason.None, null, null, 0);
        var type = response.Content.Headers.ContentType?.MediaType;
        bool read = type is not null && profile.ReadsResponseBody(System.Text.Encoding.Latin1.GetBytes(type)) && response.Content.Headers.ContentLength is not 0;
        if (!read) return (tx.EvaluateResponseBody(default, hasBody: false) && block ? RejectReason.WafBlocked : RejectReason.None, null, null, 0);
        int limit = profile.ResponseBodyLimit;
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(response.Content.Headers.ContentLength ?? limit, limit));
        int n = 0;
        Stream source;
        try
        {
            // the inspected part within one response timeout in all (as on the HTTP/1.1 path), not one per read
            cancel.CancelAfter(readTimeout);
            source = await response.Content.ReadAsStreamAsync(cancel.Token).ConfigureAwait(false);
            while (n < buffer.Length && n < limit)
            {
                int got = await source.ReadAsync(buffer.AsMemory(n, Math.Min(buffer.Length, limit) - n), cancel.Token).ConfigureAwait(false);
                if (got == 0) break;
                n += got;
            }
            cancel.CancelAfter(Timeout.InfiniteTimeSpan);
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return (e is OperationCanceledException ? RejectReason.UpstreamResponseTimeout : RejectReason.UpstreamMalformedResponse, null, null, 0);
        }
        if (tx.EvaluateResponseBody(buffer.AsSpan(0, n), hasBody: true) && block)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return (RejectReason.WafBlocked, null, null, 0);
        }
        return (RejectReason.None, source, buffer, n);
    }

    private RejectReason FailureReason(Exception e, TimeSpan? deadline, long start, TimeSpan headTimeout)
    {
        if (e is Microsoft.AspNetCore.Http.BadHttpRequestException bad) return bad.StatusCode == 413 ? RejectReason.BodyTooLarge : RejectReason.UnexpectedEndOfBody;
        if (e is OperationCanceledException)
        {
            var elapsed = Stopwatch.GetElapsedTime(start);
            return deadline is { } d && elapsed >= d ? RejectReason.RequestTimeout : RejectReason.UpstreamResponseTimeout;
        }
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is Microsoft.AspNetCore.Http.BadHttpRequestException b) return b.StatusCode == 413 ? RejectReason.BodyTooLarge : RejectReason.UnexpectedEndOfBody;
            if (inner is System.Security.Authentication.AuthenticationException) return RejectReason.UpstreamTlsFailed;
            if (inner is TimeoutException) return RejectReason.UpstreamConnectTimeout;
        }
        if (e is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError } or HttpRequestException { HttpRequestError: HttpRequestError.NameResolutionError })
            return RejectReason.UpstreamConnectFailed;
        if (e is HttpRequestException { HttpRequestError: HttpRequestError.SecureConnectionError }) return RejectReason.UpstreamTlsFailed;
        if (e is HttpRequestException { HttpRequestError: HttpRequestError.InvalidResponse or HttpRequestError.ResponseEnded }) return RejectReason.UpstreamMalformedResponse;
        return RejectReason.UpstreamReset;
    }

    private async Task<(byte[] Buffer, int Length, bool Ended)> ReadPrefixAsync(int max)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, max));
        int n = 0;
        var stream = _ctx.Request.Body;
        while (n < max)
        {
            int read = await stream.ReadAsync(buffer.AsMemory(n, max - n), _ctx.RequestAborted).ConfigureAwait(false);
            if (read == 0) return (buffer, n, true);
            n += read;
        }
        return (buffer, n, false);
    }

    /// <summary>
    /// The upstream request: HeadRewriter's HTTP/1.1 head for this exchange and destination (the same forwarded
    /// headers, identity rules and removals as the HTTP/1.1 path), carried by an HttpRequestMessage.
    /// </summary>
    private HttpRequestMessage BuildUpstreamRequest(DestinationModel destination, Http2Upstream upstream, byte[]? prefix, int prefixLength, bool bodyEnded)
    {
        var bytes = new Http1Bytes();
        HeadRewriter.WriteUpstreamRequest(bytes.Pipe, _exchange, destination, RequestId, _connection.IsTls);
        bytes.Flush();
        var head = bytes.ToArray();
        int lineEnd = head.AsSpan().IndexOf("\r\n"u8);
        var line = head.AsSpan(0, lineEnd);
        int sp1 = line.IndexOf((byte)' ');
        int sp2 = line.LastIndexOf((byte)' ');
        string method = Encoding.ASCII.GetString(line[..sp1]);
        string target = Encoding.ASCII.GetString(line[(sp1 + 1)..sp2]);
        var message = new HttpRequestMessage(new System.Net.Http.HttpMethod(method), new Uri(upstream.BaseUri(destination), target == "*" ? "/" : target))
        {
            Version = upstream.Version,
            VersionPolicy = upstream.VersionPolicy,
        };
        bool hasBody = _request.HasBody || prefixLength > 0;
        HttpContent? content = hasBody
            ? new ForwardedBody(_ctx, prefix, prefixLength, bodyEnded, _request.Framing == BodyFraming.ContentLength ? _request.ContentLength : null, this)
            : null;
        List<(string, string)>? contentFields = null;
        foreach (var (name, value) in Http1Bytes.Fields(head.AsSpan(lineEnd + 2)))
        {
            if (name.Equals("Host", StringComparison.OrdinalIgnoreCase))
            {
                message.Headers.Host = value;
                continue;
            }
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) || name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)
                || name.Equals("Connection", StringComparison.OrdinalIgnoreCase)) continue;
            if (!message.Headers.TryAddWithoutValidation(name, value)) (contentFields ??= []).Add((name, value));
        }
        if (contentFields is not null)
        {
            content ??= new ByteArrayContent([]);
            foreach (var (name, value) in contentFields) content.Headers.TryAddWithoutValidation(name, value);
        }
        // gRPC needs "te: trailers" (the one TE value HTTP/2 allows; HeadRewriter drops TE as hop-by-hop)
        if (_isGrpc && upstream.Version == HttpVersion.Version20) message.Headers.TryAddWithoutValidation("TE", "trailers");
        message.Content = content;
        if (prefix is not null && content is null) ArrayPool<byte>.Shared.Return(prefix);
        return message;
    }

    private void WriteResponseHead(HttpResponseMessage upstream, GatewaySnapshot snapshot)
    {
        var response = _ctx.Response;
        response.StatusCode = (int)upstream.StatusCode;
        var policy = snapshot.Policy;
        bool edits = HasResponseEdits(policy);
        bool hasRequestId = false;
        foreach (var h in upstream.Headers)
        {
            if (IsHopByHopName(h.Key) || (edits && IsEdited(policy, h.Key))) continue;
            if (h.Key.Equals("X-Request-Id", StringComparison.OrdinalIgnoreCase)) hasRequestId = true;
            response.Headers.Append(h.Key, h.Value.ToArray());
        }
        foreach (var h in upstream.Content.Headers)
        {
            if (edits && IsEdited(policy, h.Key)) continue;
            if (h.Key.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                if (upstream.Content.Headers.ContentLength is { } length && (int)upstream.StatusCode != 204) response.ContentLength = length;
                continue;
            }
            response.Headers.Append(h.Key, h.Value.ToArray());
        }
        if (edits)
        {
            foreach (int i in _exchange.Policy.Matched)
                foreach (var (name, value) in Http1Bytes.Fields(policy.Rules[i].SetResponseHeaderLines)) response.Headers.Append(name, value);
        }
        foreach (var (name, value) in Http1Bytes.Fields(_exchange.ResponseLines.AsSpan(0, _exchange.ResponseLinesLength))) response.Headers.Append(name, value);
        if (!hasRequestId) response.Headers["X-Request-Id"] = Encoding.ASCII.GetString(RequestId);
    }

    private bool HasResponseEdits(Policy.CompiledPolicy policy)
    {
        foreach (int i in _exchange.Policy.Matched)
            if (policy.Rules[i].HasResponseHeaderActions) return true;
        return false;
    }

    private bool IsEdited(Policy.CompiledPolicy policy, string name)
    {
        Span<byte> n = stackalloc byte[Math.Min(256, name.Length)];
        if (name.Length > 256) return false;
        Encoding.ASCII.GetBytes(name, n);
        foreach (int i in _exchange.Policy.Matched)
        {
            var rule = policy.Rules[i];
            foreach (var s in rule.SetResponseHeaderNames) if (Ascii.EqualsIgnoreCase(s, n)) return true;
            foreach (var s in rule.RemoveResponseHeaderNames) if (Ascii.EqualsIgnoreCase(s, n)) return true;
        }
        return false;
    }

    /// <summary>Relays the response body as it arrives (each read flushed: gRPC streams flow), then its trailers.</summary>
    private async Task<RejectReason> RelayBodyAsync(HttpResponseMessage upstream, CancellationTokenSource cancel, TimeSpan? readTimeout, TimeSpan? deadline,
        Stream? opened = null, byte[]? inspected = null, int inspectedLength = 0)
    {
        var response = _ctx.Response;
        var buffer = ArrayPool<byte>.Shared.Rent(16384);
        try
        {
            var source = opened ?? await upstream.Content.ReadAsStreamAsync(cancel.Token).ConfigureAwait(false);
            await response.StartAsync(cancel.Token).ConfigureAwait(false);
            if (inspected is not null)
            {
                // what the WAF's phase 4 read goes first
                await response.Body.WriteAsync(inspected.AsMemory(0, inspectedLength), cancel.Token).ConfigureAwait(false);
                _bytesOut += inspectedLength;
                ArrayPool<byte>.Shared.Return(inspected);
                inspected = null;
            }
            while (true)
            {
                if (readTimeout is { } t && deadline is null) cancel.CancelAfter(t);
                int n = await source.ReadAsync(buffer, cancel.Token).ConfigureAwait(false);
                if (n == 0) break;
                await response.Body.WriteAsync(buffer.AsMemory(0, n), cancel.Token).ConfigureAwait(false);
                _bytesOut += n;
            }
            if (upstream.TrailingHeaders.Any() && response.SupportsTrailers())
            {
                foreach (var h in upstream.TrailingHeaders) response.AppendTrailer(h.Key, h.Value.ToArray());
            }
            await response.CompleteAsync().ConfigureAwait(false);
            return RejectReason.None;
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or Microsoft.AspNetCore.Connections.ConnectionResetException
                                       or Microsoft.AspNetCore.Connections.ConnectionAbortedException)
        {
            // the head is out: the honest signal left is to reset the stream (RST_STREAM), as the HTTP/1.1 path closes
            _ctx.Abort();
            return _ctx.RequestAborted.IsCancellationRequested && e is not OperationCanceledException ? RejectReason.None
                : e is OperationCanceledException ? (deadline is not null ? RejectReason.RequestTimeout : RejectReason.UpstreamResponseTimeout)
                : RejectReason.UpstreamReset;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            if (inspected is not null) ArrayPool<byte>.Shared.Return(inspected);
        }
    }

    private void EndTry(UpstreamOutcome outcome)
    {
        var d = _tryDestination;
        if (d is null) return;
        _tryDestination = null;
        d.Report(outcome);
    }

    internal void CountBytesIn(int n) => _bytesIn += n;

    private PendingHead? _pending;

    /// <summary>The request body reached its end upstream: the response-head timeout starts now.</summary>
    internal void BodySent() => _pending?.BodySent();

    /// <summary>Starts the response-head timer when the request is sent, unless the head already came.</summary>
    private sealed class PendingHead(CancellationTokenSource cancel, TimeSpan headTimeout, TimeSpan? deadline, long start)
    {
        private int _state; // 0 waiting, 1 body sent (timer on), 2 head received

        public void BodySent()
        {
            if (Interlocked.CompareExchange(ref _state, 1, 0) != 0) return;
            var limit = headTimeout;
            if (deadline is { } d && d - Stopwatch.GetElapsedTime(start) is var left && left < limit) limit = left > TimeSpan.Zero ? left : TimeSpan.FromTicks(1);
            try { cancel.CancelAfter(limit); }
            catch (ObjectDisposedException) { } // the exchange is over
        }

        public void HeadReceived() => Interlocked.Exchange(ref _state, 2);
    }

    private static bool IsHopByHopName(string name) =>
        name.Equals("Connection", StringComparison.OrdinalIgnoreCase) || name.Equals("Keep-Alive", StringComparison.OrdinalIgnoreCase)
        || name.Equals("Proxy-Connection", StringComparison.OrdinalIgnoreCase) || name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)
        || name.Equals("Upgrade", StringComparison.OrdinalIgnoreCase) || name.Equals("TE", StringComparison.OrdinalIgnoreCase)
        || name.Equals("Trailer", StringComparison.OrdinalIgnoreCase);

    private bool _clientRequestId;
    private ReadOnlySpan<byte> RequestId => _clientRequestId ? _request[_request.RequestId] : _requestId.AsSpan(0, _requestIdLength);

    // ---- 4. record ----

    private void Observe(RouteModel? route, RejectReason reason, bool parsed)
    {
        var r = _request;
        Span<byte> traceId = stackalloc byte[TraceContext.TraceIdHexLength];
        bool hasTrace = false;
        if (parsed)
        {
            Span<byte> traceParent = stackalloc byte[TraceContext.TraceParentLength];
            r.TryGetHeader(TraceContext.TraceParentName, out var incoming);
            TraceContext.WriteOutgoing(incoming, traceParent).WriteTraceId(traceId);
            hasTrace = true;
        }
        var record = new RequestRecord
        {
            Route = route?.Metrics,
            Cluster = route is null ? null : _obsCluster ?? route.Cluster.Id,
            Upstream = route is null ? null : _obsUpstream,
            ClientIp = parsed ? _exchange.ClientIp : _connection.PeerIp,
            Consumer = parsed && _exchange.Consumer is { IsConsumer: true } c ? c.Id : null,
            Subject = parsed ? _exchange.Consumer?.SubjectId : null,
            Device = _device?.Id,
            Method = parsed ? r[r.MethodRange] : default,
            Host = parsed ? r[r.Host] : default,
            Path = parsed ? r[r.Path] : default,
            Query = parsed ? r[r.Query] : default,
            RequestId = RequestId,
            TraceId = hasTrace ? traceId : default,
            Status = _exchange.Status,
            Reason = reason != RejectReason.None ? reason : _obsReason,
            Decision = _obsDecision,
            Rule = _obsRule,
            Waf = parsed && _exchange.Waf is { } waf && route?.Waf is { } profile ? RecordWaf(profile, waf) : null,
            BytesIn = _bytesIn,
            BytesOut = _bytesOut,
            StartTimestamp = _started,
            UpstreamStartTimestamp = route is null ? 0 : _upstreamStart,
            UpstreamEndTimestamp = route is null ? 0 : _upstreamEnd,
            EndTimestamp = Stopwatch.GetTimestamp(),
        };
        _runtime.Observability.OnRequest(record);
    }

    private static string RecordWaf(Waf.WafProfile profile, Waf.WafTransaction tx)
    {
        profile.Record(tx);
        return Waf.WafProfile.Summary(tx);
    }

    public void Dispose()
    {
        if (_head.Length > 0) ArrayPool<byte>.Shared.Return(_head);
        _head = [];
    }

    /// <summary>The client's request body, sent upstream as it arrives (each read flushed, so client streams flow).</summary>
    private sealed class ForwardedBody(HttpContext ctx, byte[]? prefix, int prefixLength, bool prefixIsAll, long? length, Http2Call call) : HttpContent
    {
        private byte[]? _prefix = prefix;

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            try
            {
                if (_prefix is not null)
                {
                    if (prefixLength > 0)
                    {
                        await stream.WriteAsync(_prefix.AsMemory(0, prefixLength), cancellationToken).ConfigureAwait(false);
                        call.CountBytesIn(prefixLength);
                    }
                    ArrayPool<byte>.Shared.Return(_prefix);
                    _prefix = null;
                    if (prefixIsAll)
                    {
                        call.BodySent();
                        return;
                    }
                }
                var buffer = ArrayPool<byte>.Shared.Rent(16384);
                try
                {
                    var body = ctx.Request.Body;
                    while (true)
                    {
                        int n = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                        if (n == 0) break;
                        call.CountBytesIn(n);
                        await stream.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
                    }
                    call.BodySent();
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
            finally
            {
                if (_prefix is not null)
                {
                    ArrayPool<byte>.Shared.Return(_prefix);
                    _prefix = null;
                }
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long value)
        {
            value = length ?? 0;
            return length is not null;
        }
    }
}

/// <summary>gRPC's side of the HTTP/2 path: the status of a gateway rejection, the grpc-timeout header.</summary>
public static class GrpcWire
{
    /// <summary>The gRPC status for the HTTP status the gateway would have answered (gRPC's HTTP-to-status mapping, sharpened for the gateway's own answers).</summary>
    public static int StatusFor(int httpStatus) => httpStatus switch
    {
        400 => 13, // INTERNAL: a malformed request (gRPC's mapping)
        401 => 16, // UNAUTHENTICATED
        403 => 7, // PERMISSION_DENIED
        404 => 12, // UNIMPLEMENTED
        408 => 4, // DEADLINE_EXCEEDED
        413 => 8, // RESOURCE_EXHAUSTED
        429 => 8, // RESOURCE_EXHAUSTED
        431 => 8,
        502 => 14, // UNAVAILABLE
        503 => 14,
        504 => 4, // DEADLINE_EXCEEDED
        505 => 12,
        _ => 2, // UNKNOWN
    };

    /// <summary>grpc-message is percent-encoded (gRPC over HTTP/2, "Responses").</summary>
    public static string EncodeMessage(string message)
    {
        var sb = new StringBuilder(message.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%') sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>grpc-timeout: 1 to 8 digits and a unit (H, M, S, m, u, n).</summary>
    public static bool TryParseTimeout(ReadOnlySpan<byte> value, out TimeSpan timeout)
    {
        timeout = default;
        if (value.Length < 2 || value.Length > 9) return false;
        long n = 0;
        for (int i = 0; i < value.Length - 1; i++)
        {
            if (value[i] is < (byte)'0' or > (byte)'9') return false;
            n = n * 10 + (value[i] - '0');
        }
        timeout = value[^1] switch
        {
            (byte)'H' => TimeSpan.FromHours(n),
            (byte)'M' => TimeSpan.FromMinutes(n),
            (byte)'S' => TimeSpan.FromSeconds(n),
            (byte)'m' => TimeSpan.FromMilliseconds(n),
            (byte)'u' => TimeSpan.FromTicks(n * 10),
            (byte)'n' => TimeSpan.FromTicks(n / 100),
            _ => TimeSpan.MinValue,
        };
        if (timeout == TimeSpan.MinValue) return false;
        if (timeout <= TimeSpan.Zero) timeout = TimeSpan.FromTicks(1);
        return true;
    }
}

/// <summary>HTTP/1.1 bytes written by the gateway's writers (HeadWriter over a pipe), read back as status and fields.</summary>
internal sealed class Http1Bytes
{
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 0, useSynchronizationContext: false));

    public PipeWriter Pipe => _pipe.Writer;
    public HeadWriter Writer() => new(_pipe.Writer);
    public void Flush() => _pipe.Writer.FlushAsync().AsTask().GetAwaiter().GetResult(); // no reader waits: completes at once

    public byte[] ToArray()
    {
        Flush();
        _pipe.Writer.Complete();
        _pipe.Reader.TryRead(out var result);
        var bytes = result.Buffer.ToArray();
        _pipe.Reader.AdvanceTo(result.Buffer.End);
        _pipe.Reader.Complete();
        return bytes;
    }

    /// <summary>The status of "HTTP/1.1 NNN ...".</summary>
    public static int Status(ReadOnlySpan<byte> head) =>
        head.Length >= 12 ? (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0') : 502;

    /// <summary>The "Name: value" lines of a head or a block of lines (a status or request line, if any, is skipped).</summary>
    public static List<(string Name, string Value)> Fields(ReadOnlySpan<byte> lines)
    {
        var fields = new List<(string, string)>();
        while (!lines.IsEmpty)
        {
            int end = lines.IndexOf("\r\n"u8);
            var line = end < 0 ? lines : lines[..end];
            lines = end < 0 ? default : lines[(end + 2)..];
            int colon = line.IndexOf((byte)':');
            if (colon <= 0 || line.IndexOf((byte)' ') is >= 0 and var sp && sp < colon) continue; // a start line
            fields.Add((Encoding.ASCII.GetString(line[..colon]), Encoding.Latin1.GetString(line[(colon + 1)..].Trim((byte)' '))));
        }
        return fields;
    }
}
