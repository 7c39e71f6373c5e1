using FastGate.Http;
using Prometheus;

namespace FastGate.Observability;

/// <summary>
/// The gateway's one table of metrics. Labelled children are resolved when a route is compiled (or on the first
/// request with a new status code), so the request path only increments.
/// </summary>
public static class GatewayMetrics
{
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

    public static void SetConfigInForce(string? previousVersion, string version, DateTimeOffset loadedAt)
    {
        if (previousVersion is not null && previousVersion != version) ConfigInfo.RemoveLabelled(previousVersion);
        ConfigInfo.WithLabels(version).Set(1);
        ConfigLoadedAt.Set(loadedAt.ToUnixTimeMilliseconds() / 1000.0);
    }

    /// <summary>Forces the static metrics into the registry so a scrape shows them before the first request.</summary>
    public static void EnsureRegistered()
    {
        ConfigReloads.WithLabels("success");
        ConfigReloads.WithLabels("failure");
    }
}

/// <summary>Pre-resolved metric children of one route.</summary>
public sealed class RouteMetrics
{
    private readonly string _route;
    private readonly Counter.Child?[] _byStatus = new Counter.Child?[600];
    private readonly Histogram.Child _duration;

    public RouteMetrics(string route)
    {
        _route = route;
        _duration = GatewayMetrics.RequestDuration.WithLabels(route);
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
