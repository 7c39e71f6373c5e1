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

    /// <summary>Call when a destination is chosen for the request (each attempt).</summary>
    private void NoteUpstream(ClusterModel cluster, DestinationModel destination)
    {
        _fw.Cluster = cluster.Id;
        _fw.Upstream = destination.Address;
        _fw.UpstreamStart = Stopwatch.GetTimestamp();
        _fw.UpstreamEnd = 0;
    }

    /// <summary>Call when the upstream's final response head has been read (or the exchange failed).</summary>
    private void NoteUpstreamResponse() => _fw.UpstreamEnd = Stopwatch.GetTimestamp();

    /// <summary>
    /// One call per request, after its response (or canned rejection) was written. <paramref name="route"/> is null
    /// when no route matched or the head was refused; <paramref name="reason"/> is why the gateway refused or failed it
    /// (None when the upstream answered).
    /// </summary>
    private void Observe(RouteModel? route, long started, RejectReason reason, string? decision = null)
    {
        var r = _request;
        bool parsed = reason is not (> RejectReason.None and < RejectReason.NoRoute);
        if (!_fw.HasTrace && parsed) ResolveTrace(forward: false, started); // rejected before the rewrite: still give the log a trace id
        long bytesIn = r.Length + (r.Framing == BodyFraming.ContentLength && r.ContentLength > 0 ? r.ContentLength : 0);
        long bytesOut = _output.Written - _fw.BytesOutMark; // head and body as written, chunked framing included
        var record = new RequestRecord
        {
            Route = route?.Metrics,
            Cluster = route is null ? null : _fw.Cluster ?? route.Cluster.Id,
            Upstream = route is null ? null : _fw.Upstream,
            ClientIp = ClientIp,
            Consumer = _exchange.Consumer is { IsConsumer: true } c ? c.Id : null,
            Subject = _exchange.Consumer?.SubjectId,
            Device = _device?.Id,
            Method = parsed ? r[r.MethodRange] : default,
            Host = parsed ? r[r.Host] : default,
            Path = parsed ? r[r.Path] : default,
            Query = parsed ? r[r.Query] : default,
            RequestId = CurrentRequestId(),
            TraceId = _fw.HasTrace ? _traceId : default,
            Status = _exchange.Status,
            Reason = reason != RejectReason.None ? reason : _fw.ObservedReason,
            Decision = decision,
            Rule = _fw.DecisionRule,
            Waf = _exchange.Waf is { } waf ? RecordWaf(route, waf) : null,
            AiModel = _fw.Ai.Model,
            AiProvider = _fw.Ai.Provider,
            AiGuard = _fw.Ai.Guard,
            PromptTokens = _fw.Ai.PromptTokens,
            CompletionTokens = _fw.Ai.CompletionTokens,
            BytesIn = parsed ? bytesIn : 0,
            BytesOut = bytesOut,
            StartTimestamp = started,
            UpstreamStartTimestamp = route is null ? 0 : _fw.UpstreamStart,
            UpstreamEndTimestamp = route is null ? 0 : _fw.UpstreamEnd,
            EndTimestamp = Stopwatch.GetTimestamp(),
        };
        _runtime.Observability.OnRequest(record);
        if (_fw.ServerSpan is not null) EndSpans(record);
        _fw.HasTrace = false;
        _fw.Upstream = _fw.Cluster = null;
        _fw.UpstreamStart = _fw.UpstreamEnd = 0;
        _fw.ObservedReason = RejectReason.None;
        _fw.DecisionRule = null;
    }

    /// <summary>Remembers the reason of a rejection written by <see cref="RejectAsync"/> for <see cref="Observe"/>.</summary>
    private void NoteRejection(RejectReason reason) => _fw.ObservedReason = reason;

    /// <summary>The id <see cref="AssignRequestId"/> fixed for the current request (empty before its head is complete).</summary>
    private ReadOnlySpan<byte> CurrentRequestId() =>
        !_request.RequestId.IsEmpty ? _request[_request.RequestId] : _requestId.AsSpan(0, _fw.RequestIdLength);

    /// <summary>
    /// The request's trace: the incoming traceparent continued, or a new trace. With tracing on, the server span
    /// (and for a <paramref name="forward"/>ed request the upstream span) starts here, and the upstream receives
    /// the upstream span's ids, so its own spans hang under the gateway's.
    /// </summary>
    private void ResolveTrace(bool forward, long started)
    {
        _request.TryGetHeader(TraceContext.TraceParentName, out var incoming);
        _fw.IncomingTraceValid = TraceContext.TryParse(incoming, out var parent);
        if (_runtime.Tracing is { } tracing && StartSpans(tracing, parent, forward, started)) return;
        var next = TraceContext.WriteOutgoing(incoming, _traceParent);
        next.WriteTraceId(_traceId);
        _fw.HasTrace = true;
    }

    private bool StartSpans(GatewayTracing tracing, in TraceParent parent, bool forward, long started)
    {
        // both starts from one pair of clock readings, so the upstream span never starts before the server span
        var now = DateTimeOffset.UtcNow;
        long ticks = Stopwatch.GetTimestamp();
        var serverStart = started == 0 ? now : now - Stopwatch.GetElapsedTime(started, ticks);
        var server = tracing.StartServer(parent, _fw.IncomingTraceValid, serverStart);
        if (server is null) return false; // not sampled (and errors not recorded): the plain trace context
        _fw.ServerSpan = server;
        var clientStart = _fw.UpstreamStart == 0 ? now : now - Stopwatch.GetElapsedTime(_fw.UpstreamStart, ticks);
        _fw.ClientSpan = forward ? GatewayTracing.StartClient(server, clientStart < serverStart ? serverStart : clientStart) : null;
        var next = TraceParent.From(_fw.ClientSpan ?? server);
        next.Format(_traceParent);
        next.WriteTraceId(_traceId);
        _fw.HasTrace = true;
        return true;
    }

    /// <summary>Ends the request's spans with what the access log records (tracing on only: this allocates).</summary>
    private void EndSpans(scoped in RequestRecord record)
    {
        var server = _fw.ServerSpan!;
        var client = _fw.ClientSpan;
        _fw.ServerSpan = _fw.ClientSpan = null;
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
        _fw.DecisionRule = rule?.Id;
        Observe(route, started, _policy.Verdict == Policy.PolicyVerdict.Deny ? RejectReason.PolicyDenied : RejectReason.None,
            _policy.Verdict == Policy.PolicyVerdict.Deny ? null : "policy_respond");
    }
}
