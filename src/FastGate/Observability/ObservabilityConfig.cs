using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Observability;

// What the user writes in the `accessLog`, `alerts` and `anomaly` sections. Plain records; they stop at
// GatewayObservability, which compiles them into the running access log, alert engine and detector.

public sealed record ObservabilityConfig
{
    public AccessLogConfig AccessLog { get; init; } = new();
    public AlertsConfig Alerts { get; init; } = new();
    public AnomalyConfig Anomaly { get; init; } = new();
}

public sealed record AccessLogConfig
{
    public bool Enabled { get; init; }
    /// <summary>A file path, or "stdout".</summary>
    public string Path { get; init; } = "stdout";
    public long MaxFileBytes { get; init; } = 100L * 1024 * 1024;
    public int MaxFiles { get; init; } = 5;
    /// <summary>Share of successful (status &lt; 400, not rejected) requests logged; errors are always logged.</summary>
    public double SampleRate { get; init; } = 1.0;
    public bool IncludeQuery { get; init; }
    /// <summary>Entries buffered between the request path and the writer; beyond it entries are dropped and counted.</summary>
    public int BufferEntries { get; init; } = 8192;
}

public sealed record AlertsConfig
{
    public TimeSpan EvaluationInterval { get; init; } = TimeSpan.FromSeconds(5);
    public IReadOnlyList<AlertRuleConfig> Rules { get; init; } = [];
    public IReadOnlyList<NotifierConfig> Notifiers { get; init; } = [];
}

public static class AlertRuleTypes
{
    public const string ErrorRate = "errorRate", Latency = "latency", AuthFailures = "authFailures", RateLimited = "rateLimited",
        UpstreamDown = "upstreamDown", ConfigReloadFailed = "configReloadFailed", Anomaly = "anomaly",
        // cluster mode (docs/cluster.md): members run different config versions for longer than the window (the
        // grace period); the shared store (Redis) has been unreachable for longer than the window
        ClusterConfigMismatch = "clusterConfigMismatch", ClusterStoreDown = "clusterStoreDown";
    public static readonly string[] All = [ErrorRate, Latency, AuthFailures, RateLimited, UpstreamDown, ConfigReloadFailed, Anomaly,
        ClusterConfigMismatch, ClusterStoreDown];
}

public sealed record AlertRuleConfig
{
    public string Id { get; init; } = "";
    public string Type { get; init; } = "";
    /// <summary>Route id the rule watches (null: every route together).</summary>
    public string? Route { get; init; }
    /// <summary>authFailures: "route" (default: the route's or all routes' total) or "clientIp" (per client).</summary>
    public string By { get; init; } = "route";
    /// <summary>Cluster id (errorRate per cluster; upstreamDown).</summary>
    public string? Cluster { get; init; }
    public double Threshold { get; init; }
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(60);
    public long MinRequests { get; init; } = 1;
    /// <summary>latency: 0.95 or 0.99 (from "p95"/"p99").</summary>
    public double Percentile { get; init; } = 0.95;
    public string Severity { get; init; } = "warning";
    public IReadOnlyList<string> Notify { get; init; } = [];
    /// <summary>Overrides the notifiers' cooldown for this rule.</summary>
    public TimeSpan? Cooldown { get; init; }
}

public sealed record NotifierConfig
{
    public string Id { get; init; } = "";
    /// <summary>"webhook" (generic JSON), "slack" (Slack-compatible text webhook) or "log".</summary>
    public string Type { get; init; } = "webhook";
    public string? Url { get; init; }
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(5);
    public int MaxRetries { get; init; } = 3;
    public bool SendResolved { get; init; } = true;
}

public sealed record AnomalyConfig
{
    public bool Enabled { get; init; }
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Identities tracked at once (top-N by recent activity).</summary>
    public int MaxTracked { get; init; } = 4096;
    /// <summary>Intervals a new identity is observed before it is scored.</summary>
    public int WarmupIntervals { get; init; } = 6;
    /// <summary>EWMA span in intervals (alpha = 2 / (span + 1)).</summary>
    public int SmoothingIntervals { get; init; } = 30;
    /// <summary>-log10 of the tail probability above which an interval is anomalous (6: p &lt; 1e-6).</summary>
    public double ScoreThreshold { get; init; } = 6;
    /// <summary>An interval count must reach this before it can be anomalous (guards near-zero baselines).</summary>
    public int MinCount { get; init; } = 10;
    public bool AutoBlock { get; init; }
    public TimeSpan BlockTtl { get; init; } = TimeSpan.FromMinutes(10);
}

/// <summary>Binds the observability sections (every error with its JSON path). Called by <see cref="ConfigLoader"/>.</summary>
internal static class ObservabilityConfigReader
{
    public static readonly string[] SectionNames =
        ConfigReader.Names(nameof(ObservabilityConfig.AccessLog), nameof(ObservabilityConfig.Alerts), nameof(ObservabilityConfig.Anomaly));
    /// <summary><c>accessLog</c>.</summary>
    internal static readonly string[] AccessLogProperties =
        ConfigReader.Names(nameof(AccessLogConfig.Enabled), nameof(AccessLogConfig.Path), nameof(AccessLogConfig.MaxFileBytes),
        nameof(AccessLogConfig.MaxFiles), nameof(AccessLogConfig.SampleRate), nameof(AccessLogConfig.IncludeQuery),
        nameof(AccessLogConfig.BufferEntries));
    /// <summary><c>alerts</c>.</summary>
    internal static readonly string[] AlertsProperties =
        ConfigReader.Names(nameof(AlertsConfig.Rules), nameof(AlertsConfig.Notifiers), nameof(AlertsConfig.EvaluationInterval));
    /// <summary><c>alerts.rules[]</c>.</summary>
    internal static readonly string[] AlertRuleProperties =
        ConfigReader.Names(nameof(AlertRuleConfig.Id), nameof(AlertRuleConfig.Type), nameof(AlertRuleConfig.Route),
        nameof(AlertRuleConfig.Cluster), nameof(AlertRuleConfig.By), nameof(AlertRuleConfig.Threshold), nameof(AlertRuleConfig.Window),
        nameof(AlertRuleConfig.MinRequests), nameof(AlertRuleConfig.Percentile), nameof(AlertRuleConfig.Severity),
        nameof(AlertRuleConfig.Notify), nameof(AlertRuleConfig.Cooldown));
    /// <summary><c>alerts.notifiers[]</c>.</summary>
    internal static readonly string[] NotifierProperties =
        ConfigReader.Names(nameof(NotifierConfig.Id), nameof(NotifierConfig.Type), nameof(NotifierConfig.Url),
        nameof(NotifierConfig.Cooldown), nameof(NotifierConfig.Timeout), nameof(NotifierConfig.MaxRetries),
        nameof(NotifierConfig.SendResolved));
    /// <summary><c>anomaly</c>.</summary>
    internal static readonly string[] AnomalyProperties =
        ConfigReader.Names(nameof(AnomalyConfig.Enabled), nameof(AnomalyConfig.Interval), nameof(AnomalyConfig.MaxTracked),
        nameof(AnomalyConfig.WarmupIntervals), nameof(AnomalyConfig.SmoothingIntervals), nameof(AnomalyConfig.ScoreThreshold),
        nameof(AnomalyConfig.MinCount), nameof(AnomalyConfig.AutoBlock), nameof(AnomalyConfig.BlockTtl));


    public static ObservabilityConfig Bind(JsonElement root, string path, ConfigReader r)
    {
        var result = new ObservabilityConfig();
        if (r.TryGet(root, path, "accessLog", false, out var a) && r.IsObject(a, ConfigReader.Child(path, "accessLog")))
            result = result with { AccessLog = BindAccessLog(a, ConfigReader.Child(path, "accessLog"), r) };
        if (r.TryGet(root, path, "alerts", false, out var al) && r.IsObject(al, ConfigReader.Child(path, "alerts")))
            result = result with { Alerts = BindAlerts(root, al, ConfigReader.Child(path, "alerts"), r) };
        if (r.TryGet(root, path, "anomaly", false, out var an) && r.IsObject(an, ConfigReader.Child(path, "anomaly")))
            result = result with { Anomaly = BindAnomaly(an, ConfigReader.Child(path, "anomaly"), r) };
        return result;
    }

    private static AccessLogConfig BindAccessLog(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AccessLogProperties);
        var d = new AccessLogConfig();
        var path = r.String(e, p, "path") ?? d.Path;
        if (path.Length == 0) r.Error(ConfigReader.Child(p, "path"), "must be a file path or \"stdout\"");
        return new AccessLogConfig
        {
            Enabled = r.Bool(e, p, "enabled") ?? true,
            Path = path,
            MaxFileBytes = r.Integer(e, p, "maxFileBytes", 4096, long.MaxValue) ?? d.MaxFileBytes,
            MaxFiles = (int)(r.Integer(e, p, "maxFiles", 1, 1000) ?? d.MaxFiles),
            SampleRate = Fraction(e, p, "sampleRate", r) ?? d.SampleRate,
            IncludeQuery = r.Bool(e, p, "includeQuery") ?? false,
            BufferEntries = (int)(r.Integer(e, p, "bufferEntries", 16, 1 << 20) ?? d.BufferEntries),
        };
    }

    private static AlertsConfig BindAlerts(JsonElement root, JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AlertsProperties);
        var d = new AlertsConfig();
        var notifiers = r.Objects(e, p, "notifiers", false, (n, np) => BindNotifier(n, np, r));
        var rules = r.Objects(e, p, "rules", false, (x, xp) => BindRule(x, xp, r));
        var routeIds = Ids(root, "routes");
        var clusterIds = Ids(root, "clusters");
        var notifierIds = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < notifiers.Count; i++)
            if (!notifierIds.Add(notifiers[i].Id))
                r.Error(ConfigReader.Child(ConfigReader.Index(ConfigReader.Child(p, "notifiers"), i), "id"), $"duplicate notifier id '{notifiers[i].Id}'");
        var ruleIds = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < rules.Count; i++)
        {
            var rule = rules[i];
            var rp = ConfigReader.Index(ConfigReader.Child(p, "rules"), i);
            if (!ruleIds.Add(rule.Id)) r.Error(ConfigReader.Child(rp, "id"), $"duplicate rule id '{rule.Id}'");
            if (rule.Route is not null && routeIds is not null && !routeIds.Contains(rule.Route))
                r.Error(ConfigReader.Child(rp, "route"), $"unknown route '{rule.Route}'");
            if (rule.Cluster is not null && clusterIds is not null && !clusterIds.Contains(rule.Cluster))
                r.Error(ConfigReader.Child(rp, "cluster"), $"unknown cluster '{rule.Cluster}'");
            if (rule.Type == AlertRuleTypes.UpstreamDown && rule.Cluster is null)
                r.Error(ConfigReader.Child(rp, "cluster"), "is required for an upstreamDown rule");
            for (int j = 0; j < rule.Notify.Count; j++)
                if (!notifierIds.Contains(rule.Notify[j]))
                    r.Error(ConfigReader.Index(ConfigReader.Child(rp, "notify"), j), $"unknown notifier '{rule.Notify[j]}'");
        }
        return new AlertsConfig
        {
            EvaluationInterval = r.Duration(e, p, "evaluationInterval") ?? d.EvaluationInterval,
            Rules = rules,
            Notifiers = notifiers,
        };
    }

    private static HashSet<string>? Ids(JsonElement root, string section)
    {
        if (!root.TryGetProperty(section, out var arr) || arr.ValueKind != JsonValueKind.Array) return null;
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in arr.EnumerateArray())
            if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String)
                set.Add(id.GetString()!);
        return set;
    }

    private static AlertRuleConfig BindRule(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AlertRuleProperties);
        var d = new AlertRuleConfig();
        var type = r.String(e, p, "type", required: true) ?? "";
        if (type.Length > 0 && Array.IndexOf(AlertRuleTypes.All, type) < 0)
        {
            var s = ConfigReader.Suggest(type, AlertRuleTypes.All);
            r.Error(ConfigReader.Child(p, "type"), s is null
                ? $"unknown rule type '{type}' (known: {string.Join(", ", AlertRuleTypes.All)})"
                : $"unknown rule type '{type}'; did you mean '{s}'?");
        }
        double percentile = d.Percentile;
        var pct = r.String(e, p, "percentile");
        if (pct is not null)
        {
            if (pct == "p95") percentile = 0.95;
            else if (pct == "p99") percentile = 0.99;
            else if (pct == "p50") percentile = 0.50;
            else r.Error(ConfigReader.Child(p, "percentile"), "expected \"p50\", \"p95\" or \"p99\"");
        }
        var severity = r.String(e, p, "severity") ?? d.Severity;
        if (severity is not ("info" or "warning" or "critical"))
            r.Error(ConfigReader.Child(p, "severity"), "expected \"info\", \"warning\" or \"critical\"");
        var by = r.String(e, p, "by") ?? "route";
        if (by is not ("route" or "clientIp")) r.Error(ConfigReader.Child(p, "by"), "expected \"route\" or \"clientIp\"");
        else if (by == "clientIp" && type != AlertRuleTypes.AuthFailures) r.Error(ConfigReader.Child(p, "by"), "\"clientIp\" applies to authFailures rules only");
        double? threshold = Number(e, p, "threshold", r);
        bool needsThreshold = type is not (AlertRuleTypes.UpstreamDown or AlertRuleTypes.ConfigReloadFailed or AlertRuleTypes.Anomaly
            or AlertRuleTypes.ClusterConfigMismatch or AlertRuleTypes.ClusterStoreDown);
        if (threshold is null && needsThreshold && !e.TryGetProperty("threshold", out _))
            r.Error(ConfigReader.Child(p, "threshold"), "is required");
        if (type == AlertRuleTypes.ErrorRate && threshold is > 1)
            r.Error(ConfigReader.Child(p, "threshold"), $"an errorRate threshold is a share between 0 and 1 (found {threshold})");
        return new AlertRuleConfig
        {
            Id = r.String(e, p, "id", required: true) ?? "",
            Type = type,
            Route = r.String(e, p, "route"),
            Cluster = r.String(e, p, "cluster"),
            By = by,
            Threshold = threshold ?? 0,
            Window = r.Duration(e, p, "window") ?? d.Window,
            MinRequests = r.Integer(e, p, "minRequests", 0, long.MaxValue) ?? d.MinRequests,
            Percentile = percentile,
            Severity = severity,
            Notify = r.Strings(e, p, "notify"),
            Cooldown = r.Duration(e, p, "cooldown"),
        };
    }

    private static NotifierConfig BindNotifier(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, NotifierProperties);
        var d = new NotifierConfig();
        var type = r.String(e, p, "type") ?? d.Type;
        if (type is not ("webhook" or "slack" or "log"))
            r.Error(ConfigReader.Child(p, "type"), $"unknown notifier type '{type}' (known: webhook, slack, log)");
        var url = r.String(e, p, "url", required: type is "webhook" or "slack");
        if (url is not null && (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https")))
            r.Error(ConfigReader.Child(p, "url"), $"expected an absolute http or https URL, found '{url}'");
        return new NotifierConfig
        {
            Id = r.String(e, p, "id", required: true) ?? "",
            Type = type,
            Url = url,
            Cooldown = r.Duration(e, p, "cooldown") ?? d.Cooldown,
            Timeout = r.Duration(e, p, "timeout") ?? d.Timeout,
            MaxRetries = (int)(r.Integer(e, p, "maxRetries", 0, 20) ?? d.MaxRetries),
            SendResolved = r.Bool(e, p, "sendResolved") ?? true,
        };
    }

    private static AnomalyConfig BindAnomaly(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AnomalyProperties);
        var d = new AnomalyConfig();
        return new AnomalyConfig
        {
            Enabled = r.Bool(e, p, "enabled") ?? true,
            Interval = r.Duration(e, p, "interval") ?? d.Interval,
            MaxTracked = (int)(r.Integer(e, p, "maxTracked", 16, 1 << 20) ?? d.MaxTracked),
            WarmupIntervals = (int)(r.Integer(e, p, "warmupIntervals", 1, 10_000) ?? d.WarmupIntervals),
            SmoothingIntervals = (int)(r.Integer(e, p, "smoothingIntervals", 2, 100_000) ?? d.SmoothingIntervals),
            ScoreThreshold = Number(e, p, "scoreThreshold", r) ?? d.ScoreThreshold,
            MinCount = (int)(r.Integer(e, p, "minCount", 1, 1_000_000) ?? d.MinCount),
            AutoBlock = r.Bool(e, p, "autoBlock") ?? false,
            BlockTtl = r.Duration(e, p, "blockTtl") ?? d.BlockTtl,
        };
    }

    private static double? Number(JsonElement e, string p, string name, ConfigReader r)
    {
        if (!r.TryGet(e, p, name, false, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double x) && double.IsFinite(x) && x >= 0) return x;
        r.Error(ConfigReader.Child(p, name), $"expected a non-negative number, found {v.GetRawText()}");
        return null;
    }

    private static double? Fraction(JsonElement e, string p, string name, ConfigReader r)
    {
        var x = Number(e, p, name, r);
        if (x is > 1)
        {
            r.Error(ConfigReader.Child(p, name), $"must be between 0 and 1 (found {x})");
            return null;
        }
        return x;
    }
}
