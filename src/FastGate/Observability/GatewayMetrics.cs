using FastGate.Http;
using Prometheus;

namespace FastGate.Observability;

/// <summary>
/// The gateway's one table of metrics. Labelled children are resolved when a route is compiled (or on the first
/// request with a new status code), so the request path only increments.
/// </summary>
public static class GatewayMetrics
{
    // Must run before the first metric is created: configures prometheus-net's default collectors so the exposition
    // passes `promtool check metrics` (tests/FastGate.Tests/Observability/MetricsTests.cs).
    private static readonly bool s_defaultsConfigured = ConfigureDefaultCollectors();

    /// <summary>
    /// Keeps process metrics and the .NET System.Runtime meters, but drops the EventCounter adapter (it duplicates the
    /// System.Runtime meters and exports a gauge named *_total) and the System.Runtime instruments named *.count,
    /// which are gauges whose exported name ends in _count (promtool reads that suffix as a histogram or summary part).
    /// </summary>
    private static bool ConfigureDefaultCollectors()
    {
        Metrics.SuppressDefaultMetrics(new SuppressDefaultMetricOptions { SuppressEventCounters = true });
        Metrics.ConfigureMeterAdapter(o => o.InstrumentFilterPredicate = i => !i.Name.EndsWith(".count", StringComparison.Ordinal));
        return true;
    }

    private static readonly double[] DurationBuckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    public static readonly Counter Requests = Metrics.CreateCounter("fastgate_requests_total",
        "Requests answered, by route and status code.", new CounterConfiguration { LabelNames = ["route", "code"] });

    public static readonly Histogram RequestDuration = Metrics.CreateHistogram("fastgate_request_duration_seconds",
        "Time from a complete request head to the end of the response, by route.",
        new HistogramConfiguration { LabelNames = ["route"], Buckets = DurationBuckets });

    public static readonly Counter Rejections = Metrics.CreateCounter("fastgate_rejections_total",
        "Requests refused by the gateway itself, by reason.", new CounterConfiguration { LabelNames = ["reason"] });

    public static readonly Gauge ActiveConnections = Metrics.CreateGauge("fastgate_active_connections",
        "Open client connections.");

    public static readonly Counter UpstreamConnectionsOpened = Metrics.CreateCounter("fastgate_upstream_connections_opened_total",
        "Connections opened to upstream destinations, by cluster.", new CounterConfiguration { LabelNames = ["cluster"] });

    public static readonly Counter ConfigReloads = Metrics.CreateCounter("fastgate_config_reloads_total",
        "Configuration reloads, by result (success, failure).", new CounterConfiguration { LabelNames = ["result"] });

    public static readonly Gauge ConfigInfo = Metrics.CreateGauge("fastgate_config_info",
        "The configuration in force (value 1), labelled with its version.", new GaugeConfiguration { LabelNames = ["version"] });

    public static readonly Gauge ConfigLoadedAt = Metrics.CreateGauge("fastgate_config_loaded_timestamp_seconds",
        "Unix time when the configuration in force was loaded.");

    public static readonly Counter RateLimitDecisions = Metrics.CreateCounter("fastgate_ratelimit_decisions_total",
        "Rate limiter decisions, by limiter and result (allowed, rejected).", new CounterConfiguration { LabelNames = ["limiter", "result"] });

    public static readonly Gauge RateLimitKeys = Metrics.CreateGauge("fastgate_ratelimit_keys",
        "Keys held in each limiter's bounded key table.", new GaugeConfiguration { LabelNames = ["limiter"] });

    public static readonly Gauge RateLimitOverflow = Metrics.CreateGauge("fastgate_ratelimit_overflow_hits",
        "Requests counted in the shared overflow bucket because the key table was full (cumulative).", new GaugeConfiguration { LabelNames = ["limiter"] });

    public static readonly Counter RateLimitStoreErrors = Metrics.CreateCounter("fastgate_ratelimit_store_errors_total",
        "Cluster rate-limit decisions and refills that needed the shared store and could not use it (a failed or timed-out call, or the store known to be down), by limiter and store; each follows the limiter's onStoreFailure.",
        new CounterConfiguration { LabelNames = ["limiter", "store"] });

    public static readonly Counter RequestBytes = Metrics.CreateCounter("fastgate_request_bytes_total",
        "Request bytes received from clients (head and body), by route.", new CounterConfiguration { LabelNames = ["route"] });

    public static readonly Counter ResponseBytes = Metrics.CreateCounter("fastgate_response_bytes_total",
        "Response bytes sent to clients (head and body), by route.", new CounterConfiguration { LabelNames = ["route"] });

    public static readonly Counter UpstreamErrors = Metrics.CreateCounter("fastgate_upstream_errors_total",
        "Failed upstream exchanges, by cluster and kind (connect, timeout, reset, malformed, unavailable, tls).",
        new CounterConfiguration { LabelNames = ["cluster", "kind"] });

    public static readonly Counter UpstreamTlsFailures = Metrics.CreateCounter("fastgate_upstream_tls_failures_total",
        "Failed TLS handshakes with https:// destinations, by cluster and error (certificate_untrusted, certificate_name_mismatch, certificate_missing, handshake, timeout).",
        new CounterConfiguration { LabelNames = ["cluster", "error"] });

    public static readonly Counter LlmTokens = Metrics.CreateCounter("fastgate_llm_tokens_total",
        "Tokens LLM responses reported in their usage, charged to token quotas (rateLimits with unit tokens), by route.",
        new CounterConfiguration { LabelNames = ["route"] });

    public static readonly Counter TlsCertificateReloads = Metrics.CreateCounter("fastgate_tls_certificate_reloads_total",
        "Listener certificate reloads after a file change, by listener and result (ok, error: the old certificate stays).",
        new CounterConfiguration { LabelNames = ["listener", "result"] });

    public static readonly Gauge TlsCertificateExpiry = Metrics.CreateGauge("fastgate_tls_certificate_expiry_timestamp_seconds",
        "Unix time at which the certificate a listener serves expires.", new GaugeConfiguration { LabelNames = ["listener"] });

    public static readonly Counter TlsHandshakeFailures = Metrics.CreateCounter("fastgate_tls_handshake_failures_total",
        "TLS handshakes that did not complete (not TLS, an old protocol, a refused client certificate, a timeout), by listener.",
        new CounterConfiguration { LabelNames = ["listener"] });

    public static readonly Counter TlsClientCertificateRejections = Metrics.CreateCounter("fastgate_tls_client_certificate_rejections_total",
        "TLS handshakes refused because of the client certificate, by listener and reason (missing, untrusted).",
        new CounterConfiguration { LabelNames = ["listener", "reason"] });

    public static readonly Counter UpstreamResponses = Metrics.CreateCounter("fastgate_upstream_responses_total",
        "Upstream exchanges that returned a response (any status), by cluster.", new CounterConfiguration { LabelNames = ["cluster"] });

    public static readonly Gauge ConfigLastReloadSuccess = Metrics.CreateGauge("fastgate_config_last_reload_success",
        "1 when the last configuration reload succeeded (or none was tried), 0 when it failed.");

    public static readonly Counter AlertsFired = Metrics.CreateCounter("fastgate_alerts_fired_total",
        "Alerts that started firing, by rule and severity.", new CounterConfiguration { LabelNames = ["rule", "severity"] });

    public static readonly Gauge AlertsActive = Metrics.CreateGauge("fastgate_alerts_active",
        "Alerts firing now (rule instances).");

    public static readonly Counter AlertNotifications = Metrics.CreateCounter("fastgate_alert_notifications_total",
        "Alert notifications, by notifier and outcome (sent, failed, dropped, suppressed).",
        new CounterConfiguration { LabelNames = ["notifier", "outcome"] });

    public static readonly Counter AnomaliesDetected = Metrics.CreateCounter("fastgate_anomalies_detected_total",
        "Anomalous intervals of a tracked identity, by feature (request_rate, error_count, auth_failures, distinct_paths).",
        new CounterConfiguration { LabelNames = ["feature"] });

    public static readonly Gauge AnomalyTrackedIdentities = Metrics.CreateGauge("fastgate_anomaly_tracked_identities",
        "Client identities the anomaly detector currently models.");

    public static readonly Gauge BlockedIdentities = Metrics.CreateGauge("fastgate_blocked_identities",
        "Client identities temporarily blocked by the anomaly detector.");

    public static readonly Counter AccessLogWritten = Metrics.CreateCounter("fastgate_access_log_written_total",
        "Access log entries written.");

    public static readonly Counter AccessLogDropped = Metrics.CreateCounter("fastgate_access_log_dropped_total",
        "Access log entries dropped because the buffer was full (the writer fell behind) or the write failed.");

    public static readonly Gauge PolicyReportMatches = Metrics.CreateGauge("fastgate_policy_report_matches",
        "Requests a report-mode rule matched since the configuration in force was loaded (not enforced), by rule.",
        new GaugeConfiguration { LabelNames = ["rule"] });

    public static readonly Gauge UpstreamConnections = Metrics.CreateGauge("fastgate_upstream_connections",
        "Pooled upstream connections per destination, by state (open: all, idle: waiting in the pool).",
        new GaugeConfiguration { LabelNames = ["cluster", "destination", "state"] });

    public static readonly Counter AllocatedBytes = Metrics.CreateCounter("dotnet_gc_allocated_bytes_total",
        "Bytes allocated on the managed heap since the process started (GC.GetTotalAllocatedBytes).");

    private static readonly Counter.Child[] s_rejectionChildren = CreateRejectionChildren();

    static GatewayMetrics()
    {
        Metrics.DefaultRegistry.AddBeforeCollectCallback(() => AllocatedBytes.IncTo(GC.GetTotalAllocatedBytes(precise: false)));
    }

    private static Counter.Child[] CreateRejectionChildren()
    {
        var children = new Counter.Child[RejectReasons.Count];
        for (int i = 0; i < children.Length; i++) children[i] = Rejections.WithLabels(RejectReasons.Name((RejectReason)i));
        return children;
    }

    public static void CountRejection(RejectReason reason) => s_rejectionChildren[(int)reason].Inc();

    /// <summary>The upstream error kind of a reject reason, or null when it is not an upstream failure.</summary>
    public static string? UpstreamErrorKind(RejectReason reason) => reason switch
    {
        RejectReason.UpstreamConnectFailed => "connect",
        RejectReason.UpstreamConnectTimeout or RejectReason.UpstreamResponseTimeout => "timeout",
        RejectReason.UpstreamReset => "reset",
        RejectReason.UpstreamMalformedResponse => "malformed",
        RejectReason.UpstreamUnavailable => "unavailable",
        RejectReason.UpstreamTlsFailed => "tls",
        _ => null,
    };

    public static void SetConfigInForce(string? previousVersion, string version, DateTimeOffset loadedAt)
    {
        if (previousVersion is not null && previousVersion != version) ConfigInfo.RemoveLabelled(previousVersion);
        ConfigInfo.WithLabels(version).Set(1);
        ConfigLoadedAt.Set(loadedAt.ToUnixTimeMilliseconds() / 1000.0);
    }

    /// <summary>Forces the static metrics into the registry so a scrape shows them before the first request.</summary>
    public static void EnsureRegistered()
    {
        _ = s_defaultsConfigured;
        _ = s_rejectionChildren.Length;
        AccessLogDropped.Inc(0);
        AccessLogWritten.Inc(0);
        AlertsActive.Set(AlertsActive.Value);
        ConfigReloads.WithLabels("success");
        ConfigReloads.WithLabels("failure");
        if (ConfigReloads.WithLabels("success").Value + ConfigReloads.WithLabels("failure").Value == 0) ConfigLastReloadSuccess.Set(1);
    }
}

/// <summary>Pre-resolved metric children of one route.</summary>
public sealed class RouteMetrics
{
    private readonly string _route;
    private readonly Counter.Child?[] _byStatus = new Counter.Child?[600];
    private readonly Histogram.Child _duration;
    private readonly Counter.Child _bytesIn;
    private readonly Counter.Child _bytesOut;

    public RouteMetrics(string route)
    {
        _route = route;
        _duration = GatewayMetrics.RequestDuration.WithLabels(route);
        _bytesIn = GatewayMetrics.RequestBytes.WithLabels(route);
        _bytesOut = GatewayMetrics.ResponseBytes.WithLabels(route);
    }

    public string Route => _route;

    private Counter.Child? _tokens;
    /// <summary>Tokens charged on this route (token quotas), resolved on first use.</summary>
    public void RecordTokens(long tokens) => (_tokens ??= GatewayMetrics.LlmTokens.WithLabels(_route)).Inc(tokens);

    /// <summary>The alert counters of this route in the observability hub that last saw it (bound on first use).</summary>
    internal TrafficCounters? Traffic;
    internal object? TrafficOwner;
    /// <summary>The cluster counters and metric children, cached by the cluster id's reference.</summary>
    internal string? ClusterId;
    internal ClusterObservation? Cluster;

    public void RecordBytes(long bytesIn, long bytesOut)
    {
        if (bytesIn > 0) _bytesIn.Inc(bytesIn);
        if (bytesOut > 0) _bytesOut.Inc(bytesOut);
    }

    public void Record(int status, double seconds)
    {
        if ((uint)status >= 600) status = 599;
        var child = _byStatus[status] ??= GatewayMetrics.Requests.WithLabels(_route, StatusLabel(status));
        child.Inc();
        _duration.Observe(seconds);
    }

    private static string StatusLabel(int status) => status.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Per-cluster state the hub resolves once per (route, cluster): alert counters and upstream-error children.</summary>
internal sealed class ClusterObservation
{
    private readonly Counter.Child[] _errors;
    private readonly Counter.Child _responses;

    public ClusterObservation(string cluster, TrafficCounters traffic)
    {
        Traffic = traffic;
        _responses = GatewayMetrics.UpstreamResponses.WithLabels(cluster);
        _errors = new Counter.Child[RejectReasons.Count];
        for (int i = 0; i < _errors.Length; i++)
        {
            var kind = GatewayMetrics.UpstreamErrorKind((RejectReason)i);
            if (kind is not null) _errors[i] = GatewayMetrics.UpstreamErrors.WithLabels(cluster, kind);
        }
    }

    public TrafficCounters Traffic { get; }

    public void CountUpstreamError(RejectReason reason) => _errors[(int)reason]?.Inc();

    public void CountUpstreamResponse() => _responses.Inc();
}
