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
        ClusterConfigMismatch = "clusterConfigMismatch", ClusterStoreDown = "clusterStoreDown",
        // requests the WAF refused (block mode, decision waf_blocked; docs/waf.md)
        WafBlocked = "wafBlocked";
    public static readonly string[] All = [ErrorRate, Latency, AuthFailures, RateLimited, UpstreamDown, ConfigReloadFailed, Anomaly,
        ClusterConfigMismatch, ClusterStoreDown, WafBlocked];
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
        if (r.TryGet(root, path, nameof(ObservabilityConfig.AccessLog), false, out var a) && r.IsObject(a, ConfigReader.Child(path, nameof(ObservabilityConfig.AccessLog))))
            result = result with { AccessLog = BindAccessLog(a, ConfigReader.Child(path, nameof(ObservabilityConfig.AccessLog)), r) };
        if (r.TryGet(root, path, nameof(ObservabilityConfig.Alerts), false, out var al) && r.IsObject(al, ConfigReader.Child(path, nameof(ObservabilityConfig.Alerts))))
            result = result with { Alerts = BindAlerts(root, al, ConfigReader.Child(path, nameof(ObservabilityConfig.Alerts)), r) };
        if (r.TryGet(root, path, nameof(ObservabilityConfig.Anomaly), false, out var an) && r.IsObject(an, ConfigReader.Child(path, nameof(ObservabilityConfig.Anomaly))))
            result = result with { Anomaly = BindAnomaly(an, ConfigReader.Child(path, nameof(ObservabilityConfig.Anomaly)), r) };
        return result;
    }

    private static AccessLogConfig BindAccessLog(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AccessLogProperties);
        var d = new AccessLogConfig();
        var path = r.String(e, p, nameof(AccessLogConfig.Path)) ?? d.Path;
        if (path.Length == 0) r.Error(ConfigReader.Child(p, nameof(AccessLogConfig.Path)), "must be a file path or \"stdout\"");
        return new AccessLogConfig
        {
            Enabled = r.Bool(e, p, nameof(AccessLogConfig.Enabled)) ?? true,
            Path = path,
            MaxFileBytes = r.Integer(e, p, nameof(AccessLogConfig.MaxFileBytes), 4096, long.MaxValue) ?? d.MaxFileBytes,
            MaxFiles = (int)(r.Integer(e, p, nameof(AccessLogConfig.MaxFiles), 1, 1000) ?? d.MaxFiles),
            SampleRate = Fraction(e, p, "sampleRate", r) ?? d.SampleRate,
            IncludeQuery = r.Bool(e, p, nameof(AccessLogConfig.IncludeQuery)) ?? false,
            BufferEntries = (int)(r.Integer(e, p, nameof(AccessLogConfig.BufferEntries), 16, 1 << 20) ?? d.BufferEntries),
        };
    }

    private static AlertsConfig BindAlerts(JsonElement root, JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AlertsProperties);
        var d = new AlertsConfig();
        var notifiers = r.Objects(e, p, nameof(AlertsConfig.Notifiers), false, (n, np) => BindNotifier(n, np, r));
        var rules = r.Objects(e, p, nameof(AlertsConfig.Rules), false, (x, xp) => BindRule(x, xp, r));
        var routeIds = Ids(root, "routes");
        var clusterIds = Ids(root, "clusters");
        var notifierIds = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < notifiers.Count; i++)
            if (!notifierIds.Add(notifiers[i].Id))
                r.Error(ConfigReader.Child(ConfigReader.Index(ConfigReader.Child(p, nameof(AlertsConfig.Notifiers)), i), nameof(NotifierConfig.Id)), $"duplicate notifier id '{notifiers[i].Id}'");
        var ruleIds = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < rules.Count; i++)
        {
            var rule = rules[i];
            var rp = ConfigReader.Index(ConfigReader.Child(p, nameof(AlertsConfig.Rules)), i);
            if (!ruleIds.Add(rule.Id)) r.Error(ConfigReader.Child(rp, nameof(AlertRuleConfig.Id)), $"duplicate rule id '{rule.Id}'");
            if (rule.Route is not null && routeIds is not null && !routeIds.Contains(rule.Route))
                r.Error(ConfigReader.Child(rp, nameof(AlertRuleConfig.Route)), $"unknown route '{rule.Route}'");
            if (rule.Cluster is not null && clusterIds is not null && !clusterIds.Contains(rule.Cluster))
                r.Error(ConfigReader.Child(rp, nameof(AlertRuleConfig.Cluster)), $"unknown cluster '{rule.Cluster}'");
            if (rule.Type == AlertRuleTypes.UpstreamDown && rule.Cluster is null)
                r.Error(ConfigReader.Child(rp, nameof(AlertRuleConfig.Cluster)), "is required for an upstreamDown rule");
            for (int j = 0; j < rule.Notify.Count; j++)
                if (!notifierIds.Contains(rule.Notify[j]))
                    r.Error(ConfigReader.Index(ConfigReader.Child(rp, nameof(AlertRuleConfig.Notify)), j), $"unknown notifier '{rule.Notify[j]}'");
        }
        return new AlertsConfig
        {
            EvaluationInterval = r.Duration(e, p, nameof(AlertsConfig.EvaluationInterval)) ?? d.EvaluationInterval,
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
        var type = r.String(e, p, nameof(AlertRuleConfig.Type), required: true) ?? "";
        if (type.Length > 0 && Array.IndexOf(AlertRuleTypes.All, type) < 0)
        {
            var s = ConfigReader.Suggest(type, AlertRuleTypes.All);
            r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.Type)), s is null
                ? $"unknown rule type '{type}' (known: {string.Join(", ", AlertRuleTypes.All)})"
                : $"unknown rule type '{type}'; did you mean '{s}'?");
        }
        double percentile = d.Percentile;
        var pct = r.String(e, p, nameof(AlertRuleConfig.Percentile));
        if (pct is not null)
        {
            if (pct == "p95") percentile = 0.95;
            else if (pct == "p99") percentile = 0.99;
            else if (pct == "p50") percentile = 0.50;
            else r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.Percentile)), "expected \"p50\", \"p95\" or \"p99\"");
        }
        var severity = r.String(e, p, nameof(AlertRuleConfig.Severity)) ?? d.Severity;
        if (severity is not ("info" or "warning" or "critical"))
            r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.Severity)), "expected \"info\", \"warning\" or \"critical\"");
        var by = r.String(e, p, nameof(AlertRuleConfig.By)) ?? "route";
        if (by is not ("route" or "clientIp")) r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.By)), "expected \"route\" or \"clientIp\"");
        else if (by == "clientIp" && type != AlertRuleTypes.AuthFailures) r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.By)), "\"clientIp\" applies to authFailures rules only");
        double? threshold = Number(e, p, "threshold", r);
        bool needsThreshold = type is not (AlertRuleTypes.UpstreamDown or AlertRuleTypes.ConfigReloadFailed or AlertRuleTypes.Anomaly
            or AlertRuleTypes.ClusterConfigMismatch or AlertRuleTypes.ClusterStoreDown);
        if (threshold is null && needsThreshold && !e.TryGetProperty("threshold", out _))
            r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.Threshold)), "is required");
        if (type == AlertRuleTypes.ErrorRate && threshold is > 1)
            r.Error(ConfigReader.Child(p, nameof(AlertRuleConfig.Threshold)), $"an errorRate threshold is a share between 0 and 1 (found {threshold})");
        return new AlertRuleConfig
        {
            Id = r.String(e, p, nameof(AlertRuleConfig.Id), required: true) ?? "",
            Type = type,
            Route = r.String(e, p, nameof(AlertRuleConfig.Route)),
            Cluster = r.String(e, p, nameof(AlertRuleConfig.Cluster)),
            By = by,
            Threshold = threshold ?? 0,
            Window = r.Duration(e, p, nameof(AlertRuleConfig.Window)) ?? d.Window,
            MinRequests = r.Integer(e, p, nameof(AlertRuleConfig.MinRequests), 0, long.MaxValue) ?? d.MinRequests,
            Percentile = percentile,
            Severity = severity,
            Notify = r.Strings(e, p, nameof(AlertRuleConfig.Notify)),
            Cooldown = r.Duration(e, p, nameof(AlertRuleConfig.Cooldown)),
        };
    }

    private static NotifierConfig BindNotifier(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, NotifierProperties);
        var d = new NotifierConfig();
        var type = r.String(e, p, nameof(NotifierConfig.Type)) ?? d.Type;
        if (type is not ("webhook" or "slack" or "log"))
            r.Error(ConfigReader.Child(p, nameof(NotifierConfig.Type)), $"unknown notifier type '{type}' (known: webhook, slack, log)");
        var url = r.String(e, p, nameof(NotifierConfig.Url), required: type is "webhook" or "slack");
        if (url is not null && (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https")))
            r.Error(ConfigReader.Child(p, nameof(NotifierConfig.Url)), $"expected an absolute http or https URL, found '{url}'");
        return new NotifierConfig
        {
            Id = r.String(e, p, nameof(NotifierConfig.Id), required: true) ?? "",
            Type = type,
            Url = url,
            Cooldown = r.Duration(e, p, nameof(NotifierConfig.Cooldown)) ?? d.Cooldown,
            Timeout = r.Duration(e, p, nameof(NotifierConfig.Timeout)) ?? d.Timeout,
            MaxRetries = (int)(r.Integer(e, p, nameof(NotifierConfig.MaxRetries), 0, 20) ?? d.MaxRetries),
            SendResolved = r.Bool(e, p, nameof(NotifierConfig.SendResolved)) ?? true,
        };
    }

    private static AnomalyConfig BindAnomaly(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, AnomalyProperties);
        var d = new AnomalyConfig();
        return new AnomalyConfig
        {
            Enabled = r.Bool(e, p, nameof(AnomalyConfig.Enabled)) ?? true,
            Interval = r.Duration(e, p, nameof(AnomalyConfig.Interval)) ?? d.Interval,
            MaxTracked = (int)(r.Integer(e, p, nameof(AnomalyConfig.MaxTracked), 16, 1 << 20) ?? d.MaxTracked),
            WarmupIntervals = (int)(r.Integer(e, p, nameof(AnomalyConfig.WarmupIntervals), 1, 10_000) ?? d.WarmupIntervals),
            SmoothingIntervals = (int)(r.Integer(e, p, nameof(AnomalyConfig.SmoothingIntervals), 2, 100_000) ?? d.SmoothingIntervals),
            ScoreThreshold = Number(e, p, "scoreThreshold", r) ?? d.ScoreThreshold,
            MinCount = (int)(r.Integer(e, p, nameof(AnomalyConfig.MinCount), 1, 1_000_000) ?? d.MinCount),
            AutoBlock = r.Bool(e, p, nameof(AnomalyConfig.AutoBlock)) ?? false,
            BlockTtl = r.Duration(e, p, nameof(AnomalyConfig.BlockTtl)) ?? d.BlockTtl,
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
