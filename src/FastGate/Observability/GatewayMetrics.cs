using FastGate.Http;
using Prometheus;

namespace FastGate.Observability;

/// <summary>
/// The gateway's one table of metrics, in a prometheus-net registry of its own: one instance per
/// <see cref="Proxy.GatewayRuntime"/>, so two gateways in one process never share a counter. The admin /metrics
/// endpoint exports this registry followed by prometheus-net's default registry, which holds only the process-wide
/// collectors (process metrics, the .NET System.Runtime meters, prometheus-net's own). Labelled children are resolved
/// when a route is compiled (or on the first request with a new status code), so the request path only increments.
/// </summary>
public sealed class GatewayMetrics
{
    // Must run before the default registry is first collected: configures prometheus-net's default collectors so the
    // exposition passes `promtool check metrics` (tests/FastGate.Tests/Observability/MetricsTests.cs).
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

    /// <summary>The process-wide collectors every gateway's /metrics exports after its own registry.</summary>
    public static CollectorRegistry ProcessRegistry
    {
        get
        {
            _ = s_defaultsConfigured;
            return Metrics.DefaultRegistry;
        }
    }

    private static readonly double[] DurationBuckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private readonly Counter.Child[] _rejectionChildren;

    public GatewayMetrics()
    {
        _ = s_defaultsConfigured;
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);

        Requests = f.CreateCounter("fastgate_requests_total",
            "Requests answered, by route and status code.", new CounterConfiguration { LabelNames = ["route", "code"] });
        RequestDuration = f.CreateHistogram("fastgate_request_duration_seconds",
            "Time from a complete request head to the end of the response, by route.",
            new HistogramConfiguration { LabelNames = ["route"], Buckets = DurationBuckets });
        Rejections = f.CreateCounter("fastgate_rejections_total",
            "Requests refused by the gateway itself, by reason.", new CounterConfiguration { LabelNames = ["reason"] });
        ActiveConnections = f.CreateGauge("fastgate_active_connections",
            "Open client connections.");
        UpstreamConnectionsOpened = f.CreateCounter("fastgate_upstream_connections_opened_total",
            "Connections opened to upstream destinations, by cluster.", new CounterConfiguration { LabelNames = ["cluster"] });
        ConfigReloads = f.CreateCounter("fastgate_config_reloads_total",
            "Configuration reloads, by result (success, failure).", new CounterConfiguration { LabelNames = ["result"] });
        ConfigInfo = f.CreateGauge("fastgate_config_info",
            "The configuration in force (value 1), labelled with its version.", new GaugeConfiguration { LabelNames = ["version"] });
        ConfigLoadedAt = f.CreateGauge("fastgate_config_loaded_timestamp_seconds",
            "Unix time when the configuration in force was loaded.");
        RateLimitDecisions = f.CreateCounter("fastgate_ratelimit_decisions_total",
            "Rate limiter decisions, by limiter and result (allowed, rejected).", new CounterConfiguration { LabelNames = ["limiter", "result"] });
        RateLimitKeys = f.CreateGauge("fastgate_ratelimit_keys",
            "Keys held in each limiter's bounded key table.", new GaugeConfiguration { LabelNames = ["limiter"] });
        RateLimitOverflow = f.CreateGauge("fastgate_ratelimit_overflow_hits",
            "Requests counted in the shared overflow bucket because the key table was full (cumulative).", new GaugeConfiguration { LabelNames = ["limiter"] });
        RateLimitStoreCalls = f.CreateGauge("fastgate_ratelimit_store_calls",
            "Cluster limiters: calls to the shared store (Redis) so far (cumulative), by limiter; divided by the admitted requests it is the store cost per request.",
            new GaugeConfiguration { LabelNames = ["limiter"] });
        RateLimitStoreErrors = f.CreateCounter("fastgate_ratelimit_store_errors_total",
            "Cluster rate-limit decisions and refills that needed the shared store and could not use it (a failed or timed-out call, or the store known to be down), by limiter and store; each follows the limiter's onStoreFailure.",
            new CounterConfiguration { LabelNames = ["limiter", "store"] });
        WafRequests = f.CreateCounter("fastgate_waf_requests_total",
            "Requests inspected by a WAF profile, by outcome (blocked; detected: would have been blocked, detect mode; passed).",
            new CounterConfiguration { LabelNames = ["profile", "outcome"] });
        WafRuleMatches = f.CreateCounter("fastgate_waf_rule_matches_total",
            "WAF rule matches (logged rules), by profile, rule id (bounded by the profile's rule set) and the request's outcome.",
            new CounterConfiguration { LabelNames = ["profile", "rule", "action"] });
        RequestBytes = f.CreateCounter("fastgate_request_bytes_total",
            "Request bytes received from clients (head and body), by route.", new CounterConfiguration { LabelNames = ["route"] });
        ResponseBytes = f.CreateCounter("fastgate_response_bytes_total",
            "Response bytes sent to clients (head and body), by route.", new CounterConfiguration { LabelNames = ["route"] });
        UpstreamErrors = f.CreateCounter("fastgate_upstream_errors_total",
            "Failed upstream exchanges, by cluster and kind (connect, timeout, reset, malformed, unavailable, tls).",
            new CounterConfiguration { LabelNames = ["cluster", "kind"] });
        UpstreamRetries = f.CreateCounter("fastgate_upstream_retries_total",
            "Tries sent to another destination after a failed one, by cluster and reason (connect, reset, timeout, status).",
            new CounterConfiguration { LabelNames = ["cluster", "reason"] });
        RetryBudgetExhausted = f.CreateCounter("fastgate_retry_budget_exhausted_total",
            "Retries not made because the cluster's retry budget was spent (the failure went to the client), by cluster.",
            new CounterConfiguration { LabelNames = ["cluster"] });
        CircuitBreakerRejections = f.CreateCounter("fastgate_circuit_breaker_rejections_total",
            "Requests refused with 503 circuit_open, by cluster and limit (concurrent, pending).",
            new CounterConfiguration { LabelNames = ["cluster", "limit"] });
        UpstreamTlsFailures = f.CreateCounter("fastgate_upstream_tls_failures_total",
            "Failed TLS handshakes with https:// destinations, by cluster and error (certificate_untrusted, certificate_name_mismatch, certificate_missing, handshake, timeout).",
            new CounterConfiguration { LabelNames = ["cluster", "error"] });
        LlmTokens = f.CreateCounter("fastgate_llm_tokens_total",
            "Tokens LLM responses reported in their usage, charged to token quotas (rateLimits with unit tokens), by route.",
            new CounterConfiguration { LabelNames = ["route"] });
        TlsCertificateReloads = f.CreateCounter("fastgate_tls_certificate_reloads_total",
            "Listener certificate reloads after a file change, by listener and result (ok, error: the old certificate stays).",
            new CounterConfiguration { LabelNames = ["listener", "result"] });
        TlsCertificateExpiry = f.CreateGauge("fastgate_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate a listener serves expires.", new GaugeConfiguration { LabelNames = ["listener"] });
        TlsHandshakeFailures = f.CreateCounter("fastgate_tls_handshake_failures_total",
            "TLS handshakes that did not complete (not TLS, an old protocol, a refused client certificate, a timeout), by listener.",
            new CounterConfiguration { LabelNames = ["listener"] });
        TlsClientCertificateRejections = f.CreateCounter("fastgate_tls_client_certificate_rejections_total",
            "TLS handshakes refused because of the client certificate, by listener and reason (missing, untrusted).",
            new CounterConfiguration { LabelNames = ["listener", "reason"] });
        UpstreamResponses = f.CreateCounter("fastgate_upstream_responses_total",
            "Upstream exchanges that returned a response (any status), by cluster.", new CounterConfiguration { LabelNames = ["cluster"] });
        ConfigLastReloadSuccess = f.CreateGauge("fastgate_config_last_reload_success",
            "1 when the last configuration reload succeeded (or none was tried), 0 when it failed.");
        AlertsFired = f.CreateCounter("fastgate_alerts_fired_total",
            "Alerts that started firing, by rule and severity.", new CounterConfiguration { LabelNames = ["rule", "severity"] });
        AlertsActive = f.CreateGauge("fastgate_alerts_active",
            "Alerts firing now (rule instances).");
        AlertNotifications = f.CreateCounter("fastgate_alert_notifications_total",
            "Alert notifications, by notifier and outcome (sent, failed, dropped, suppressed).",
            new CounterConfiguration { LabelNames = ["notifier", "outcome"] });
        AnomaliesDetected = f.CreateCounter("fastgate_anomalies_detected_total",
            "Anomalous intervals of a tracked identity, by feature (request_rate, error_count, auth_failures, distinct_paths).",
            new CounterConfiguration { LabelNames = ["feature"] });
        AnomalyTrackedIdentities = f.CreateGauge("fastgate_anomaly_tracked_identities",
            "Client identities the anomaly detector currently models.");
        ClusterStoreUp = f.CreateGauge("fastgate_cluster_store_up",
            "Cluster mode: 1 while the shared store (Redis) is available, 0 during an outage (cluster features follow onStoreFailure).");
        ClusterStoreTransitions = f.CreateCounter("fastgate_cluster_store_transitions_total",
            "Cluster mode: changes of the shared store's state (down, up), one per outage each way.", new CounterConfiguration { LabelNames = ["state"] });
        ClusterMembers = f.CreateGauge("fastgate_cluster_members",
            "Cluster mode: members seen in the shared store at the last heartbeat (this one included).");
        ClusterConfigVersions = f.CreateGauge("fastgate_cluster_config_versions",
            "Cluster mode: distinct config versions among the members at the last heartbeat (1 when all agree).");
        ClusterBlockEvents = f.CreateCounter("fastgate_cluster_block_events_total",
            "Cluster mode: block list changes sent to or received from the other members (direction sent|received, kind block|unblock), and reconciliations (kind reconcile).",
            new CounterConfiguration { LabelNames = ["direction", "kind"] });
        BlockedIdentities = f.CreateGauge("fastgate_blocked_identities",
            "Client identities temporarily blocked by the anomaly detector.");
        AccessLogWritten = f.CreateCounter("fastgate_access_log_written_total",
            "Access log entries written.");
        AccessLogDropped = f.CreateCounter("fastgate_access_log_dropped_total",
            "Access log entries dropped because the buffer was full (the writer fell behind) or the write failed.");
        PolicyReportMatches = f.CreateGauge("fastgate_policy_report_matches",
            "Requests a report-mode rule matched since the configuration in force was loaded (not enforced), by rule.",
            new GaugeConfiguration { LabelNames = ["rule"] });
        UpstreamConnections = f.CreateGauge("fastgate_upstream_connections",
            "Pooled upstream connections per destination, by state (open: all, idle: waiting in the pool).",
            new GaugeConfiguration { LabelNames = ["cluster", "destination", "state"] });
        // health and balancing (src/FastGate/Traffic, docs/traffic-management.md)
        DestinationState = f.CreateGauge("fastgate_upstream_destination_state",
            "Each destination's health state (1 for the state it is in: healthy, unhealthy, ejected; 0 for the others).",
            new GaugeConfiguration { LabelNames = ["cluster", "destination", "state"] });
        DestinationEjections = f.CreateCounter("fastgate_upstream_ejections_total",
            "Ejections of a destination by outlier detection, by cluster and destination.", new CounterConfiguration { LabelNames = ["cluster", "destination"] });
        HealthChecks = f.CreateCounter("fastgate_upstream_health_checks_total",
            "Active health check probes, by cluster, destination and result (success, failure).",
            new CounterConfiguration { LabelNames = ["cluster", "destination", "result"] });
        AllocatedBytes = f.CreateCounter("dotnet_gc_allocated_bytes_total",
            "Bytes allocated on the managed heap since the process started (GC.GetTotalAllocatedBytes).");
        JwtValidations = f.CreateCounter("fastgate_jwt_validations_total",
            "Bearer token validations (cache misses) by issuer and result.", "issuer", "result");
        JwtCacheHits = f.CreateCounter("fastgate_jwt_cache_hits_total", "Bearer tokens found in the validated-token cache.");

        _rejectionChildren = new Counter.Child[RejectReasons.Count];
        for (int i = 0; i < _rejectionChildren.Length; i++) _rejectionChildren[i] = Rejections.WithLabels(RejectReasons.Name((RejectReason)i));
        Registry.AddBeforeCollectCallback(() => AllocatedBytes.IncTo(GC.GetTotalAllocatedBytes(precise: false)));
        // Series a scrape shows before the first request.
        AccessLogDropped.Inc(0);
        AccessLogWritten.Inc(0);
        AlertsActive.Set(0);
        ConfigReloads.WithLabels("success");
        ConfigReloads.WithLabels("failure");
        ConfigLastReloadSuccess.Set(1);
    }

    /// <summary>This gateway's registry: what its admin /metrics endpoint exports (then <see cref="ProcessRegistry"/>).</summary>
    public CollectorRegistry Registry { get; }

    public Counter Requests { get; }
    public Histogram RequestDuration { get; }
    public Counter Rejections { get; }
    public Gauge ActiveConnections { get; }
    public Counter UpstreamConnectionsOpened { get; }
    public Counter ConfigReloads { get; }
    public Gauge ConfigInfo { get; }
    public Gauge ConfigLoadedAt { get; }
    public Counter RateLimitDecisions { get; }
    public Gauge RateLimitKeys { get; }
    public Gauge RateLimitOverflow { get; }
    public Counter RateLimitStoreErrors { get; }
    public Gauge RateLimitStoreCalls { get; }
    public Counter WafRequests { get; }
    public Counter WafRuleMatches { get; }
    public Counter RequestBytes { get; }
    public Counter ResponseBytes { get; }
    public Counter UpstreamErrors { get; }
    public Counter UpstreamTlsFailures { get; }
    public Counter UpstreamRetries { get; }
    public Counter RetryBudgetExhausted { get; }
    public Counter CircuitBreakerRejections { get; }
    public Counter LlmTokens { get; }
    public Counter TlsCertificateReloads { get; }
    public Gauge TlsCertificateExpiry { get; }
    public Counter TlsHandshakeFailures { get; }
    public Counter TlsClientCertificateRejections { get; }
    public Counter UpstreamResponses { get; }
    public Gauge ConfigLastReloadSuccess { get; }
    public Counter AlertsFired { get; }
    public Gauge AlertsActive { get; }
    public Counter AlertNotifications { get; }
    public Counter AnomaliesDetected { get; }
    public Gauge AnomalyTrackedIdentities { get; }
    public Gauge BlockedIdentities { get; }
    public Gauge ClusterStoreUp { get; }
    public Counter ClusterStoreTransitions { get; }
    public Gauge ClusterMembers { get; }
    public Gauge ClusterConfigVersions { get; }
    public Counter ClusterBlockEvents { get; }
    public Counter AccessLogWritten { get; }
    public Counter AccessLogDropped { get; }
    public Gauge PolicyReportMatches { get; }
    public Gauge UpstreamConnections { get; }
    public Gauge DestinationState { get; }
    public Counter DestinationEjections { get; }
    public Counter HealthChecks { get; }
    public Counter AllocatedBytes { get; }
    private Counter? _jwksFetches;
    /// <summary>Registered with the first JWT key source (as before: a gateway without jwtIssuers does not list it).
    /// prometheus-net returns the same counter for the same name, so a race here is harmless.</summary>
    public Counter JwksFetches => _jwksFetches ??= Metrics.WithCustomRegistry(Registry).CreateCounter("fastgate_jwks_fetches_total",
        "Key set (JWKS / discovery) fetches by issuer and result.", "issuer", "result");
    public Counter JwtValidations { get; }
    public Counter JwtCacheHits { get; }

    /// <summary>Counts a request the gateway refused (pre-resolved child: no allocation).</summary>
    public void CountRejection(RejectReason reason) => _rejectionChildren[(int)reason].Inc();

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

    public void SetConfigInForce(string? previousVersion, string version, DateTimeOffset loadedAt)
    {
        if (previousVersion is not null && previousVersion != version) ConfigInfo.RemoveLabelled(previousVersion);
        ConfigInfo.WithLabels(version).Set(1);
        ConfigLoadedAt.Set(loadedAt.ToUnixTimeMilliseconds() / 1000.0);
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
    private readonly Counter _requests;
    private readonly Counter _tokenCounter;

    /// <summary>The route's id (its metric label).</summary>
    public string RouteId => _route;

    /// <param name="metrics">The metrics of the runtime the route is compiled for.</param>
    public RouteMetrics(string route, GatewayMetrics metrics)
    {
        _route = route;
        _requests = metrics.Requests;
        _tokenCounter = metrics.LlmTokens;
        _duration = metrics.RequestDuration.WithLabels(route);
        _bytesIn = metrics.RequestBytes.WithLabels(route);
        _bytesOut = metrics.ResponseBytes.WithLabels(route);
    }

    public string Route => _route;

    private Counter.Child? _tokens;
    /// <summary>Tokens charged on this route (token quotas), resolved on first use.</summary>
    public void RecordTokens(long tokens) => (_tokens ??= _tokenCounter.WithLabels(_route)).Inc(tokens);

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
        var child = _byStatus[status] ??= _requests.WithLabels(_route, StatusLabel(status));
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

    public ClusterObservation(string cluster, TrafficCounters traffic, GatewayMetrics metrics)
    {
        Traffic = traffic;
        _responses = metrics.UpstreamResponses.WithLabels(cluster);
        _errors = new Counter.Child[RejectReasons.Count];
        for (int i = 0; i < _errors.Length; i++)
        {
            var kind = GatewayMetrics.UpstreamErrorKind((RejectReason)i);
            if (kind is not null) _errors[i] = metrics.UpstreamErrors.WithLabels(cluster, kind);
        }
    }

    public TrafficCounters Traffic { get; }

    public void CountUpstreamError(RejectReason reason) => _errors[(int)reason]?.Inc();

    public void CountUpstreamResponse() => _responses.Inc();
}
