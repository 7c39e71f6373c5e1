using System.Text.Json;

namespace FastGate.Configuration;

// The health and balancing part of a cluster (clusters[].healthCheck, .outlierDetection, .loadBalancing): what the
// user writes, how it is bound (errors with their JSON path) and checked. See docs/traffic-management.md.

/// <summary>Active health checks of a cluster's destinations: one probe per destination per interval, off the request path.</summary>
public sealed record HealthCheckConfig
{
    /// <summary>"http" (GET of <see cref="Path"/>) or "tcp" (connect only).</summary>
    public string Type { get; init; } = HealthCheckTypes.Http;
    public string Path { get; init; } = "/";
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>Consecutive passing probes that bring an unhealthy destination back.</summary>
    public int HealthyThreshold { get; init; } = 2;
    /// <summary>Consecutive failing probes that take a healthy destination out.</summary>
    public int UnhealthyThreshold { get; init; } = 2;
    /// <summary>Statuses that pass an http probe: "200", "200-399" or "2xx" (default 200-399).</summary>
    public IReadOnlyList<string> ExpectedStatuses { get; init; } = ["200-399"];
}

public static class HealthCheckTypes
{
    public const string Http = "http", Tcp = "tcp";
    public static readonly string[] All = [Http, Tcp];
}

/// <summary>Passive health: consecutive failures of real requests eject a destination for a while (Envoy-style).</summary>
public sealed record OutlierDetectionConfig
{
    public bool Enabled { get; init; } = true;
    /// <summary>Consecutive 5xx responses that eject (0: not counted).</summary>
    public int Consecutive5xx { get; init; } = 5;
    /// <summary>Consecutive connect failures, timeouts and resets before a response head that eject (0: not counted).</summary>
    public int ConsecutiveGatewayFailures { get; init; } = 5;
    /// <summary>The first ejection's length; the n-th lasts n times this, up to <see cref="MaxEjectionTime"/>.</summary>
    public TimeSpan BaseEjectionTime { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxEjectionTime { get; init; } = TimeSpan.FromSeconds(300);
    /// <summary>The share of the cluster's destinations that may be ejected at once (at least one of two or more, never the last).</summary>
    public int MaxEjectionPercent { get; init; } = 50;
}

/// <summary>How a destination is chosen for each try.</summary>
public sealed record LoadBalancingConfig
{
    public string Policy { get; init; } = LoadBalancingPolicies.RoundRobin;
    /// <summary>consistentHash: what is hashed (clientIp, header, cookie, consumer).</summary>
    public string? HashOn { get; init; }
    /// <summary>consistentHash on a header or cookie: its name.</summary>
    public string? Name { get; init; }
    /// <summary>A destination that just became usable again ramps up from 10% to its full weight over this many seconds (0: off).</summary>
    public int SlowStartSeconds { get; init; }
}

public static class LoadBalancingPolicies
{
    public const string RoundRobin = "roundRobin", LeastRequest = "leastRequest", Random = "random", ConsistentHash = "consistentHash";
    public static readonly string[] All = [RoundRobin, LeastRequest, Random, ConsistentHash];
}

public static class HashOnKinds
{
    public const string ClientIp = "clientIp", Header = "header", Cookie = "cookie", Consumer = "consumer";
    public static readonly string[] All = [ClientIp, Header, Cookie, Consumer];
}

/// <summary>Binds and checks a cluster's healthCheck, outlierDetection and loadBalancing.</summary>
internal static class TrafficConfigBinder
{
    /// <summary><c>clusters[].healthCheck</c>.</summary>
    internal static readonly string[] HealthCheckProperties =
        ConfigReader.Names(nameof(HealthCheckConfig.Type), nameof(HealthCheckConfig.Path), nameof(HealthCheckConfig.Interval), nameof(HealthCheckConfig.Timeout),
        nameof(HealthCheckConfig.HealthyThreshold), nameof(HealthCheckConfig.UnhealthyThreshold), nameof(HealthCheckConfig.ExpectedStatuses));

    /// <summary><c>clusters[].outlierDetection</c>.</summary>
    internal static readonly string[] OutlierDetectionProperties =
        ConfigReader.Names(nameof(OutlierDetectionConfig.Enabled), nameof(OutlierDetectionConfig.Consecutive5xx), nameof(OutlierDetectionConfig.ConsecutiveGatewayFailures),
        nameof(OutlierDetectionConfig.BaseEjectionTime), nameof(OutlierDetectionConfig.MaxEjectionTime), nameof(OutlierDetectionConfig.MaxEjectionPercent));

    /// <summary><c>clusters[].loadBalancing</c>.</summary>
    internal static readonly string[] LoadBalancingProperties =
        ConfigReader.Names(nameof(LoadBalancingConfig.Policy), nameof(LoadBalancingConfig.HashOn), nameof(LoadBalancingConfig.Name), nameof(LoadBalancingConfig.SlowStartSeconds));

    public static HealthCheckConfig? BindHealthCheck(JsonElement cluster, string clusterPath, ConfigReader r)
    {
        string p = ConfigReader.Child(clusterPath, nameof(ClusterConfig.HealthCheck));
        if (!r.TryGet(cluster, clusterPath, nameof(ClusterConfig.HealthCheck), false, out var e) || !r.IsObject(e, p)) return null;
        r.CheckUnknown(e, p, HealthCheckProperties);
        var d = new HealthCheckConfig();
        var statuses = r.Strings(e, p, nameof(HealthCheckConfig.ExpectedStatuses));
        return new HealthCheckConfig
        {
            Type = r.String(e, p, nameof(HealthCheckConfig.Type)) ?? d.Type,
            Path = r.String(e, p, nameof(HealthCheckConfig.Path)) ?? d.Path,
            Interval = r.Duration(e, p, nameof(HealthCheckConfig.Interval)) ?? d.Interval,
            Timeout = r.Duration(e, p, nameof(HealthCheckConfig.Timeout)) ?? d.Timeout,
            HealthyThreshold = (int)(r.Integer(e, p, nameof(HealthCheckConfig.HealthyThreshold), 1, 100) ?? d.HealthyThreshold),
            UnhealthyThreshold = (int)(r.Integer(e, p, nameof(HealthCheckConfig.UnhealthyThreshold), 1, 100) ?? d.UnhealthyThreshold),
            ExpectedStatuses = statuses.Count > 0 ? statuses : d.ExpectedStatuses,
        };
    }

    public static OutlierDetectionConfig BindOutlierDetection(JsonElement cluster, string clusterPath, ConfigReader r)
    {
        string p = ConfigReader.Child(clusterPath, nameof(ClusterConfig.OutlierDetection));
        var d = new OutlierDetectionConfig();
        if (!r.TryGet(cluster, clusterPath, nameof(ClusterConfig.OutlierDetection), false, out var e) || !r.IsObject(e, p)) return d;
        r.CheckUnknown(e, p, OutlierDetectionProperties);
        return new OutlierDetectionConfig
        {
            Enabled = r.Bool(e, p, nameof(OutlierDetectionConfig.Enabled)) ?? d.Enabled,
            Consecutive5xx = (int)(r.Integer(e, p, nameof(OutlierDetectionConfig.Consecutive5xx), 0, 1_000_000) ?? d.Consecutive5xx),
            ConsecutiveGatewayFailures = (int)(r.Integer(e, p, nameof(OutlierDetectionConfig.ConsecutiveGatewayFailures), 0, 1_000_000) ?? d.ConsecutiveGatewayFailures),
            BaseEjectionTime = r.Duration(e, p, nameof(OutlierDetectionConfig.BaseEjectionTime)) ?? d.BaseEjectionTime,
            MaxEjectionTime = r.Duration(e, p, nameof(OutlierDetectionConfig.MaxEjectionTime)) ?? d.MaxEjectionTime,
            MaxEjectionPercent = (int)(r.Integer(e, p, nameof(OutlierDetectionConfig.MaxEjectionPercent), 0, 100) ?? d.MaxEjectionPercent),
        };
    }

    public static LoadBalancingConfig BindLoadBalancing(JsonElement cluster, string clusterPath, ConfigReader r)
    {
        string p = ConfigReader.Child(clusterPath, nameof(ClusterConfig.LoadBalancing));
        var d = new LoadBalancingConfig();
        if (!r.TryGet(cluster, clusterPath, nameof(ClusterConfig.LoadBalancing), false, out var e) || !r.IsObject(e, p)) return d;
        r.CheckUnknown(e, p, LoadBalancingProperties);
        return new LoadBalancingConfig
        {
            Policy = r.String(e, p, nameof(LoadBalancingConfig.Policy)) ?? d.Policy,
            HashOn = r.String(e, p, nameof(LoadBalancingConfig.HashOn)),
            Name = r.String(e, p, nameof(LoadBalancingConfig.Name)),
            SlowStartSeconds = (int)(r.Integer(e, p, nameof(LoadBalancingConfig.SlowStartSeconds), 0, 3600) ?? 0),
        };
    }

    public static void Validate(ClusterConfig c, string p, List<ConfigError> errors)
    {
        if (c.HealthCheck is { } hc)
        {
            string hp = p + ".healthCheck";
            if (!HealthCheckTypes.All.Contains(hc.Type))
                errors.Add(new ConfigError(hp + ".type", $"'{hc.Type}' is not a health check type (known: {string.Join(", ", HealthCheckTypes.All)})"));
            if (!hc.Path.StartsWith('/') || hc.Path.Any(ch => ch <= ' ' || ch >= 0x7f))
                errors.Add(new ConfigError(hp + ".path", $"'{hc.Path}' is not an absolute path such as /healthz"));
            if (hc.Timeout >= hc.Interval)
                errors.Add(new ConfigError(hp + ".timeout", "must be shorter than the interval"));
            if (hc.Interval < TimeSpan.FromMilliseconds(100))
                errors.Add(new ConfigError(hp + ".interval", "must be at least 100ms"));
            for (int i = 0; i < hc.ExpectedStatuses.Count; i++)
            {
                if (!TryParseStatusRange(hc.ExpectedStatuses[i], out _, out _))
                    errors.Add(new ConfigError($"{hp}.expectedStatuses[{i}]", $"'{hc.ExpectedStatuses[i]}' is not a status (\"200\"), a range (\"200-399\") or a class (\"2xx\")"));
            }
            if (hc.Type == HealthCheckTypes.Tcp && (hc.Path != "/" || hc.ExpectedStatuses is not ["200-399"]))
                errors.Add(new ConfigError(hp + ".type", "a tcp check only connects: path and expectedStatuses apply to http checks"));
        }
        var od = c.OutlierDetection;
        if (od.MaxEjectionTime < od.BaseEjectionTime)
            errors.Add(new ConfigError(p + ".outlierDetection.maxEjectionTime", "cannot be shorter than baseEjectionTime"));
        var lb = c.LoadBalancing;
        string lp = p + ".loadBalancing";
        if (!LoadBalancingPolicies.All.Contains(lb.Policy))
            errors.Add(new ConfigError(lp + ".policy", $"'{lb.Policy}' is not a balancing policy (known: {string.Join(", ", LoadBalancingPolicies.All)})"));
        if (lb.Policy == LoadBalancingPolicies.ConsistentHash)
        {
            if (lb.HashOn is null)
                errors.Add(new ConfigError(lp + ".hashOn", $"is required for consistentHash (one of {string.Join(", ", HashOnKinds.All)})"));
            else if (!HashOnKinds.All.Contains(lb.HashOn))
                errors.Add(new ConfigError(lp + ".hashOn", $"'{lb.HashOn}' is not a hash key (known: {string.Join(", ", HashOnKinds.All)})"));
            else if (lb.HashOn is HashOnKinds.Header or HashOnKinds.Cookie)
            {
                if (string.IsNullOrEmpty(lb.Name))
                    errors.Add(new ConfigError(lp + ".name", $"is required when hashOn is {lb.HashOn}"));
                else if (!Http.HttpChars.IsTokenSpan(System.Text.Encoding.ASCII.GetBytes(lb.Name)) || lb.Name.Any(ch => ch >= 0x7f))
                    errors.Add(new ConfigError(lp + ".name", $"'{lb.Name}' is not a valid {lb.HashOn} name"));
            }
            else if (lb.Name is not null)
                errors.Add(new ConfigError(lp + ".name", $"applies to hashOn header or cookie, not {lb.HashOn}"));
            if (lb.SlowStartSeconds > 0)
                errors.Add(new ConfigError(lp + ".slowStartSeconds", "consistentHash does not ramp destinations up (it would move keys); remove slowStartSeconds"));
        }
        else if (lb.HashOn is not null || lb.Name is not null)
        {
            errors.Add(new ConfigError(lp + (lb.HashOn is not null ? ".hashOn" : ".name"), "applies to the consistentHash policy only"));
        }
    }

    /// <summary>"200" (one status), "200-399" (inclusive range) or "2xx" (a class).</summary>
    internal static bool TryParseStatusRange(string s, out int low, out int high)
    {
        low = high = 0;
        if (s.Length == 3 && s[0] is >= '1' and <= '5' && s[1..] is "xx")
        {
            low = (s[0] - '0') * 100;
            high = low + 99;
            return true;
        }
        int dash = s.IndexOf('-');
        var a = dash < 0 ? s : s[..dash];
        var b = dash < 0 ? s : s[(dash + 1)..];
        return a.Length == 3 && b.Length == 3 && int.TryParse(a, System.Globalization.NumberStyles.None, null, out low)
               && int.TryParse(b, System.Globalization.NumberStyles.None, null, out high) && low is >= 100 and <= 599 && high is >= 100 and <= 599 && low <= high;
    }
}
