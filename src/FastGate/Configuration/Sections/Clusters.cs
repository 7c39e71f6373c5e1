using System.Net;
using System.Text.Json;

namespace FastGate.Configuration;

// The clusters section: what the user writes, how it is bound (errors with their JSON path) and checked.

public sealed record ClusterConfig
{
    public string Id { get; init; } = "";
    public IReadOnlyList<DestinationConfig> Destinations { get; init; } = [];
    public int MaxConnectionsPerDestination { get; init; } = 1024;
    public int MaxIdleConnectionsPerDestination { get; init; } = 256;
    public TimeSpan IdleConnectionTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How https:// destinations are verified (null: the system trust store, SNI = the destination host).</summary>
    public UpstreamTlsConfig? Tls { get; init; }
    /// <summary>Active health checks (null: none; destinations are healthy unless outlier detection ejects them).</summary>
    public HealthCheckConfig? HealthCheck { get; init; }
    /// <summary>Passive health: ejection on consecutive failures. On by default (see <see cref="OutlierDetectionConfig"/>).</summary>
    public OutlierDetectionConfig OutlierDetection { get; init; } = new();
    public LoadBalancingConfig LoadBalancing { get; init; } = new();
}

/// <summary>A cluster's upstream TLS settings (apply to its https:// destinations).</summary>
public sealed record UpstreamTlsConfig
{
    /// <summary>PEM file of CA certificates the upstream's chain must end in (instead of the system store).</summary>
    public string? Ca { get; init; }
    /// <summary>Server name sent (SNI) and checked against the certificate; default: the destination's host.</summary>
    public string? Sni { get; init; }
    /// <summary>Accept any certificate: for self-signed test upstreams only (the loader warns).</summary>
    public bool InsecureSkipVerify { get; init; }
}

public sealed record DestinationConfig
{
    public string Address { get; init; } = "";
    /// <summary>Relative share of traffic (roundRobin, random, leastRequest, consistentHash points).</summary>
    public int Weight { get; init; } = 1;
    internal const int MaxWeight = 1000;
}

/// <summary>Binds and checks <c>clusters</c> (destinations and upstream TLS).</summary>
internal static class ClusterConfigBinder
{
    /// <summary><c>clusters[]</c>.</summary>
    internal static readonly string[] ClusterProperties =
        ConfigReader.Names(nameof(ClusterConfig.Id), nameof(ClusterConfig.Destinations), nameof(ClusterConfig.MaxConnectionsPerDestination),
        nameof(ClusterConfig.MaxIdleConnectionsPerDestination), nameof(ClusterConfig.IdleConnectionTimeout), nameof(ClusterConfig.Tls),
        nameof(ClusterConfig.HealthCheck), nameof(ClusterConfig.OutlierDetection), nameof(ClusterConfig.LoadBalancing));

    /// <summary><c>clusters[].tls</c>.</summary>
    internal static readonly string[] UpstreamTlsProperties =
        ConfigReader.Names(nameof(UpstreamTlsConfig.Ca), nameof(UpstreamTlsConfig.Sni), nameof(UpstreamTlsConfig.InsecureSkipVerify));

    /// <summary><c>clusters[].destinations[]</c>.</summary>
    internal static readonly string[] DestinationProperties = ConfigReader.Names(nameof(DestinationConfig.Address), nameof(DestinationConfig.Weight));

    public static List<ClusterConfig> Bind(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, "clusters", true, (e, p) => BindCluster(e, p, r));

    private static ClusterConfig BindCluster(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, ClusterProperties);
        var d = new ClusterConfig();
        UpstreamTlsConfig? tls = null;
        if (r.TryGet(e, p, "tls", false, out var t) && r.IsObject(t, ConfigReader.Child(p, "tls")))
        {
            var tp = ConfigReader.Child(p, "tls");
            r.CheckUnknown(t, tp, UpstreamTlsProperties);
            tls = new UpstreamTlsConfig
            {
                Ca = r.String(t, tp, "ca"),
                Sni = r.String(t, tp, "sni"),
                InsecureSkipVerify = r.Bool(t, tp, "insecureSkipVerify") ?? false,
            };
        }
        return d with
        {
            Id = r.String(e, p, "id", required: true) ?? "",
            Destinations = r.Objects(e, p, "destinations", true, (de, dp) =>
            {
                r.CheckUnknown(de, dp, DestinationProperties);
                return new DestinationConfig
                {
                    Address = r.String(de, dp, "address", required: true) ?? "",
                    Weight = (int)(r.Integer(de, dp, "weight", 1, DestinationConfig.MaxWeight) ?? 1),
                };
            }),
            MaxConnectionsPerDestination = (int)(r.Integer(e, p, "maxConnectionsPerDestination", 1, 1_000_000) ?? d.MaxConnectionsPerDestination),
            MaxIdleConnectionsPerDestination = (int)(r.Integer(e, p, "maxIdleConnectionsPerDestination", 0, 1_000_000) ?? d.MaxIdleConnectionsPerDestination),
            IdleConnectionTimeout = r.Duration(e, p, "idleConnectionTimeout") ?? d.IdleConnectionTimeout,
            Tls = tls,
            HealthCheck = TrafficConfigBinder.BindHealthCheck(e, p, r),
            OutlierDetection = TrafficConfigBinder.BindOutlierDetection(e, p, r),
            LoadBalancing = TrafficConfigBinder.BindLoadBalancing(e, p, r),
        };
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Clusters.Count; i++)
        {
            var c = config.Clusters[i];
            string p = $"$.clusters[{i}]";
            if (c.Id.Length > 0 && !ids.Add(c.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate cluster id '{c.Id}'"));
            if (c.Destinations.Count == 0) errors.Add(new ConfigError(p + ".destinations", "a cluster needs at least one destination"));
            bool anyHttps = false;
            for (int j = 0; j < c.Destinations.Count; j++)
            {
                var a = c.Destinations[j].Address;
                string dp = $"{p}.destinations[{j}].address";
                if (!Uri.TryCreate(a, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Port <= 0)
                    errors.Add(new ConfigError(dp, $"'{a}' is not an http:// or https:// address such as http://127.0.0.1:9001"));
                else if (uri.PathAndQuery != "/")
                    errors.Add(new ConfigError(dp, $"a destination address has no path (found '{uri.PathAndQuery}')"));
                else anyHttps |= uri.Scheme == "https";
            }
            if (c.Tls is { } tls) ValidateUpstreamTls(config, tls, p + ".tls", anyHttps, errors);
            if (c.MaxIdleConnectionsPerDestination > c.MaxConnectionsPerDestination)
                errors.Add(new ConfigError(p + ".maxIdleConnectionsPerDestination", "cannot exceed maxConnectionsPerDestination"));
            TrafficConfigBinder.Validate(c, p, errors);
        }
    }

    private static void ValidateUpstreamTls(GatewayConfig config, UpstreamTlsConfig tls, string p, bool anyHttps, List<ConfigError> errors)
    {
        if (!anyHttps)
            errors.Add(new ConfigError(p, "tls applies to https:// destinations and this cluster has none; use https:// addresses or remove tls"));
        if (tls.Ca is { } ca)
        {
            if (tls.InsecureSkipVerify)
                errors.Add(new ConfigError(p + ".ca", "a CA bundle and insecureSkipVerify contradict each other; keep one"));
            else if (ca.Length == 0)
                errors.Add(new ConfigError(p + ".ca", "expected the path of a PEM file of CA certificates"));
            else if (!config.Files.TryResolve(config.BaseDirectory, ca, out var caFile, out var refused))
                errors.Add(new ConfigError(p + ".ca", refused!));
            else if (Proxy.UpstreamTlsModel.LoadCa(caFile, out var error) is null)
                errors.Add(new ConfigError(p + ".ca", error!));
        }
        if (tls.Sni is { } sni && (!ConfigValidator.IsHostName(sni) || sni.Contains(':') || sni.StartsWith('.') || sni.EndsWith('.') || IPAddress.TryParse(sni, out _)))
            errors.Add(new ConfigError(p + ".sni", $"'{sni}' is not a DNS host name such as api.internal"));
    }

    /// <summary>The clusters' valid but risky settings (upstream certificate checks turned off).</summary>
    public static void Warnings(GatewayConfig config, List<ConfigError> warnings)
    {
        for (int i = 0; i < config.Clusters.Count; i++)
        {
            if (config.Clusters[i].Tls is { InsecureSkipVerify: true })
                warnings.Add(new ConfigError($"$.clusters[{i}].tls.insecureSkipVerify",
                    $"cluster '{config.Clusters[i].Id}' accepts any upstream certificate: for self-signed test upstreams only"));
        }
    }
}
