using System.Diagnostics;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Routing;

namespace FastGate.Proxy;

// The connection's side of observability: what one request reports to the hub (access log, alert counters,
// anomaly detector) and the W3C trace context it sends upstream (HeadRewriter writes it). Kept in its own file so
// the request loop only carries one-line calls: NoteUpstream, NoteUpstreamResponse, NoteRejection, Observe,
// ObservePolicyResponse.
internal sealed partial class ProxyConnection
{
    private readonly byte[] _traceId = new byte[TraceContext.TraceIdHexLength];
    private readonly byte[] _traceParent = new byte[TraceContext.TraceParentLength];
    private bool _hasTrace;
    private bool _incomingTraceValid;
    private string? _obsUpstream;
    private string? _obsCluster;
    private long _upstreamStart, _upstreamEnd;
    private RejectReason _obsReason;
    /// <summary>The client output's byte count when the current request began (bytes_out is the difference).</summary>
    private long _bytesOutMark;
    private string? _obsDecisionRule;
    /// <summary>On an AI route: how the AI stage ended (model, provider, tokens) for the access log; default otherwise.</summary>
    private Ai.AiOutcome _obsAi;
    /// <summary>With tracing on: the request's server span and its upstream (client) span, or null.</summary>
    private Activity? _serverSpan, _clientSpan;
    /// <summary>When the forwarded request's head was complete (the server span's start).</summary>
    private long _spanStart;

    /// <summary>Call when a destination is chosen for the request (each attempt).</summary>
    private void NoteUpstream(ClusterModel cluster, DestinationModel destination)
    {
        _obsCluster = cluster.Id;
        _obsUpstream = destination.Address;
        _upstreamStart = Stopwatch.GetTimestamp();
        _upstreamEnd = 0;
    }

    /// <summary>Call when the upstream's final response head has been read (or the exchange failed).</summary>
    private void NoteUpstreamResponse() => _upstreamEnd = Stopwatch.GetTimestamp();

    /// <summary>
    /// One call per request, after its response (or canned rejection) was written. <paramref name="route"/> is null
    /// when no route matched or the head was refused; <paramref name="reason"/> is why the gateway refused or failed it
    /// (None when the upstream answered).
    /// </summary>
    private void Observe(RouteModel? route, long started, RejectReason reason, string? decision = null)
    {
        var r = _request;
        bool parsed = reason is not (> RejectReason.None and < RejectReason.NoRoute);
        if (!_hasTrace && parsed) ResolveTrace(forward: false, started); // rejected before the rewrite: still give the log a trace id
        long bytesIn = r.Length + (r.Framing == BodyFraming.ContentLength && r.ContentLength > 0 ? r.ContentLength : 0);
        long bytesOut = _output.Written - _bytesOutMark; // head and body as written, chunked framing included
        var record = new RequestRecord
        {
            Route = route?.Metrics,
            Cluster = route is null ? null : _obsCluster ?? route.Cluster.Id,
            Upstream = route is null ? null : _obsUpstream,
            ClientIp = ClientIp,
            Consumer = _exchange.Consumer is { IsConsumer: true } c ? c.Id : null,
            Subject = _exchange.Consumer?.SubjectId,
            Device = _device?.Id,
            Method = parsed ? r[r.MethodRange] : default,
            Host = parsed ? r[r.Host] : default,
            Path = parsed ? r[r.Path] : default,
            Query = parsed ? r[r.Query] : default,
            RequestId = CurrentRequestId(),
            TraceId = _hasTrace ? _traceId : default,
            Status = _exchange.Status,
            Reason = reason != RejectReason.None ? reason : _obsReason,
            Decision = decision,
            Rule = _obsDecisionRule,
            Waf = _exchange.Waf is { } waf ? RecordWaf(route, waf) : null,
            AiModel = _obsAi.Model,
            AiProvider = _obsAi.Provider,
            PromptTokens = _obsAi.PromptTokens,
            CompletionTokens = _obsAi.CompletionTokens,
            BytesIn = parsed ? bytesIn : 0,
            BytesOut = bytesOut,
            StartTimestamp = started,
            UpstreamStartTimestamp = route is null ? 0 : _upstreamStart,
            UpstreamEndTimestamp = route is null ? 0 : _upstreamEnd,
            EndTimestamp = Stopwatch.GetTimestamp(),
        };
        _runtime.Observability.OnRequest(record);
        if (_serverSpan is not null) EndSpans(record);
        _hasTrace = false;
        _obsUpstream = _obsCluster = null;
        _upstreamStart = _upstreamEnd = 0;
        _obsReason = RejectReason.None;
        _obsDecisionRule = null;
        _obsAi = default;
    }

    /// <summary>Remembers the reason of a rejection written by <see cref="RejectAsync"/> for <see cref="Observe"/>.</summary>
    private void NoteRejection(RejectReason reason) => _obsReason = reason;

    /// <summary>The id <see cref="AssignRequestId"/> fixed for the current request (empty before its head is complete).</summary>
    private ReadOnlySpan<byte> CurrentRequestId() =>
        !_request.RequestId.IsEmpty ? _request[_request.RequestId] : _requestId.AsSpan(0, _requestIdLength);

    /// <summary>
    /// The request's trace: the incoming traceparent continued, or a new trace. With tracing on, the server span
    /// (and for a <paramref name="forward"/>ed request the upstream span) starts here, and the upstream receives
    /// the upstream span's ids, so its own spans hang under the gateway's.
    /// </summary>
    private void ResolveTrace(bool forward, long started)
    {
        _request.TryGetHeader(TraceContext.TraceParentName, out var incoming);
        _incomingTraceValid = TraceContext.TryParse(incoming, out var parent);
        if (_runtime.Tracing is { } tracing && StartSpans(tracing, parent, forward, started)) return;
        var next = TraceContext.WriteOutgoing(incoming, _traceParent);
        next.WriteTraceId(_traceId);
        _hasTrace = true;
    }

    private bool StartSpans(GatewayTracing tracing, in TraceParent parent, bool forward, long started)
    {
        // both starts from one pair of clock readings, so the upstream span never starts before the server span
        var now = DateTimeOffset.UtcNow;
        long ticks = Stopwatch.GetTimestamp();
        var serverStart = started == 0 ? now : now - Stopwatch.GetElapsedTime(started, ticks);
        var server = tracing.StartServer(parent, _incomingTraceValid, serverStart);
        if (server is null) return false; // not sampled (and errors not recorded): the plain trace context
        _serverSpan = server;
        var clientStart = _upstreamStart == 0 ? now : now - Stopwatch.GetElapsedTime(_upstreamStart, ticks);
        _clientSpan = forward ? GatewayTracing.StartClient(server, clientStart < serverStart ? serverStart : clientStart) : null;
        var next = TraceParent.From(_clientSpan ?? server);
        next.Format(_traceParent);
        next.WriteTraceId(_traceId);
        _hasTrace = true;
        return true;
    }

    /// <summary>Ends the request's spans with what the access log records (tracing on only: this allocates).</summary>
    private void EndSpans(scoped in RequestRecord record)
    {
        var server = _serverSpan!;
        var client = _clientSpan;
        _serverSpan = _clientSpan = null;
        var now = DateTimeOffset.UtcNow;
        long ticks = Stopwatch.GetTimestamp();
        var reason = record.Reason;
        bool error = record.Status >= 500 || (reason != RejectReason.None && reason != RejectReason.NoRoute);
        if (record.Route is { } route) server.SetTag("fastgate.route", route.RouteId);
        if (record.Cluster is { } cluster) server.SetTag("fastgate.cluster", cluster);
        if (record.Consumer is { } consumer) server.SetTag("fastgate.consumer", consumer);
        if (record.Subject is { } subject) server.SetTag("fastgate.subject", subject);
        if (!record.Method.IsEmpty)
        {
            var method = System.Text.Encoding.ASCII.GetString(record.Method);
            server.DisplayName = method;
            server.SetTag("http.request.method", method);
            server.SetTag("url.path", System.Text.Encoding.ASCII.GetString(record.Path));
            server.SetTag("server.address", System.Text.Encoding.ASCII.GetString(record.Host));
        }
        server.SetTag("client.address", System.Text.Encoding.ASCII.GetString(record.ClientIp));
        server.SetTag("fastgate.request_id", System.Text.Encoding.ASCII.GetString(record.RequestId));
        server.SetTag("fastgate.decision", record.Decision ?? (reason == RejectReason.None ? "forward" : RejectReasons.Name(reason)));
        if (record.Rule is { } rule) server.SetTag("fastgate.rule", rule);
        if (record.Status > 0) server.SetTag("http.response.status_code", record.Status);
        if (client is not null)
        {
            client.DisplayName = "upstream " + (record.Cluster ?? "");
            if (record.Upstream is { } destination) client.SetTag("server.address", destination);
            if (record.Cluster is { } c) client.SetTag("fastgate.cluster", c);
            var upstreamError = GatewayMetrics.UpstreamErrorKind(reason);
            if (upstreamError is not null) client.SetStatus(ActivityStatusCode.Error, RejectReasons.Name(reason));
            else if (record.Status > 0) client.SetTag("http.response.status_code", record.Status);
            client.SetEndTime(record.UpstreamEndTimestamp != 0 ? (now - Stopwatch.GetElapsedTime(record.UpstreamEndTimestamp, ticks)).UtcDateTime : now.UtcDateTime);
        }
        if (error)
        {
            server.SetStatus(ActivityStatusCode.Error, reason != RejectReason.None ? RejectReasons.Name(reason) : null);
            if (_runtime.Tracing!.AlwaysSampleErrors)
            {
                GatewayTracing.Keep(server);
                if (client is not null) GatewayTracing.Keep(client);
            }
        }
        // both ends from one clock reading, so the upstream span always lies within the server span
        server.SetEndTime(now.UtcDateTime);
        client?.Stop();
        server.Stop();
    }

    /// <summary>After a policy verdict other than allow (deny or a configured response) was written.</summary>
    private void ObservePolicyResponse(RouteModel? route, long started, Policy.CompiledPolicy policy)
    {
        var rule = _policy.DecidingRule >= 0 ? policy.Rules[_policy.DecidingRule] : null;
        _obsDecisionRule = rule?.Id;
        Observe(route, started, _policy.Verdict == Policy.PolicyVerdict.Deny ? RejectReason.PolicyDenied : RejectReason.None,
            _policy.Verdict == Policy.PolicyVerdict.Deny ? null : "policy_respond");
    }
}
