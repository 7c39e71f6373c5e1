using System.Net;
using System.Text.Json;

namespace FastGate.Configuration;

// The clusters section: what the user writes, how it is bound (errors with their JSON path) and checked.

/// <summary>How the gateway speaks to a cluster's destinations.</summary>
public enum UpstreamProtocol : byte
{
    /// <summary>HTTP/1.1 over the gateway's own upstream pools.</summary>
    Http1,
    /// <summary>HTTP/2 (h2c on http://, h2 by ALPN on https://), for gRPC: reached from HTTP/2 clients (docs/http2.md).</summary>
    H2,
}

public sealed record ClusterConfig
{
    public string Id { get; init; } = "";
    /// <summary>"http1" (default) or "h2".</summary>
    public UpstreamProtocol Protocol { get; init; }
    public IReadOnlyList<DestinationConfig> Destinations { get; init; } = [];
    public int MaxConnectionsPerDestination { get; init; } = 1024;
    /// <summary>Idle keep-alive connections kept per destination (default: maxConnectionsPerDestination).</summary>
    public int MaxIdleConnectionsPerDestination { get; init; } = 1024;
    public TimeSpan IdleConnectionTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How https:// destinations are verified (null: the system trust store, SNI = the destination host).</summary>
    public UpstreamTlsConfig? Tls { get; init; }
    /// <summary>Retries to another destination (docs/retries.md). The defaults retry what was never sent.</summary>
    public RetryConfig Retry { get; init; } = new();
    /// <summary>Bounds on the cluster's requests in flight and waiting for a connection (0: no bound).</summary>
    public CircuitBreakerConfig CircuitBreaker { get; init; } = new();
    /// <summary>Active health checks (null: none; destinations are healthy unless outlier detection ejects them).</summary>
    public HealthCheckConfig? HealthCheck { get; init; }
    /// <summary>Passive health: ejection on consecutive failures. On by default (see <see cref="OutlierDetectionConfig"/>).</summary>
    public OutlierDetectionConfig OutlierDetection { get; init; } = new();
    public LoadBalancingConfig LoadBalancing { get; init; } = new();
}

/// <summary>A cluster's retry settings (Envoy's retry policy and retry budget, nginx's proxy_next_upstream).</summary>
public sealed record RetryConfig
{
    /// <summary>Tries after the first, each to another destination when there is one (0: never retry).</summary>
    public int MaxRetries { get; init; } = 2;
    /// <summary>Response statuses retried for idempotent requests (default none: a 5xx is relayed as it is).</summary>
    public IReadOnlyList<int> RetryOn { get; init; } = [];
    /// <summary>Retry idempotent requests whose upstream connection broke before a response head (default true).</summary>
    public bool RetryOnReset { get; init; } = true;
    /// <summary>The response-head timeout of one try (null: the listener's upstreamResponseTimeout); a try that
    /// times out is retried when the request is idempotent.</summary>
    public TimeSpan? PerTryTimeout { get; init; }
    /// <summary>Also retry non-idempotent requests (POST, PATCH) after they reached a destination. Off: a body that
    /// reached a destination is never sent twice; only connection failures (never sent) are retried.</summary>
    public bool RetryNonIdempotent { get; init; }
    /// <summary>Retries in flight may be at most this share of the cluster's requests in flight…</summary>
    public int BudgetPercent { get; init; } = 20;
    /// <summary>…or this many, whichever is larger.</summary>
    public int MinRetryConcurrency { get; init; } = 3;
    /// <summary>A 429/503 with Retry-After longer than this is not retried (the destination asked for time).</summary>
    public TimeSpan MaxRetryAfter { get; init; } = TimeSpan.FromSeconds(1);
}

public sealed record CircuitBreakerConfig
{
    /// <summary>Requests in flight to the cluster; over it, 503 circuit_open at once (0: no bound).</summary>
    public int MaxConcurrentRequests { get; init; }
    /// <summary>Requests waiting for a new upstream connection; over it, 503 circuit_open (0: no bound).</summary>
    public int MaxPendingRequests { get; init; }
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
        ConfigReader.Names(nameof(ClusterConfig.Id), nameof(ClusterConfig.Protocol), nameof(ClusterConfig.Destinations), nameof(ClusterConfig.MaxConnectionsPerDestination),
        nameof(ClusterConfig.MaxIdleConnectionsPerDestination), nameof(ClusterConfig.IdleConnectionTimeout), nameof(ClusterConfig.Tls),
        nameof(ClusterConfig.Retry), nameof(ClusterConfig.CircuitBreaker),
        nameof(ClusterConfig.HealthCheck), nameof(ClusterConfig.OutlierDetection), nameof(ClusterConfig.LoadBalancing));

    /// <summary><c>clusters[].retry</c>.</summary>
    internal static readonly string[] RetryProperties =
        ConfigReader.Names(nameof(RetryConfig.MaxRetries), nameof(RetryConfig.RetryOn), nameof(RetryConfig.RetryOnReset), nameof(RetryConfig.PerTryTimeout),
            nameof(RetryConfig.RetryNonIdempotent), nameof(RetryConfig.BudgetPercent), nameof(RetryConfig.MinRetryConcurrency), nameof(RetryConfig.MaxRetryAfter));

    /// <summary><c>clusters[].circuitBreaker</c>.</summary>
    internal static readonly string[] CircuitBreakerProperties =
        ConfigReader.Names(nameof(CircuitBreakerConfig.MaxConcurrentRequests), nameof(CircuitBreakerConfig.MaxPendingRequests));

    /// <summary><c>clusters[].tls</c>.</summary>
    internal static readonly string[] UpstreamTlsProperties =
        ConfigReader.Names(nameof(UpstreamTlsConfig.Ca), nameof(UpstreamTlsConfig.Sni), nameof(UpstreamTlsConfig.InsecureSkipVerify));

    /// <summary><c>clusters[].destinations[]</c>.</summary>
    internal static readonly string[] DestinationProperties = ConfigReader.Names(nameof(DestinationConfig.Address), nameof(DestinationConfig.Weight));

    public static List<ClusterConfig> Bind(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, nameof(GatewayConfig.Clusters), true, (e, p) => BindCluster(e, p, r));

    /// <summary>An optional <c>tls</c> object of upstream TLS settings (<c>clusters[].tls</c>, <c>ai.providers[].tls</c>).</summary>
    internal static UpstreamTlsConfig? BindUpstreamTls(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, nameof(ClusterConfig.Tls), false, out var t) || !r.IsObject(t, ConfigReader.Child(p, nameof(ClusterConfig.Tls)))) return null;
        var tp = ConfigReader.Child(p, nameof(ClusterConfig.Tls));
        r.CheckUnknown(t, tp, UpstreamTlsProperties);
        return new UpstreamTlsConfig
        {
            Ca = r.String(t, tp, nameof(UpstreamTlsConfig.Ca)),
            Sni = r.String(t, tp, nameof(UpstreamTlsConfig.Sni)),
            InsecureSkipVerify = r.Bool(t, tp, nameof(UpstreamTlsConfig.InsecureSkipVerify)) ?? false,
        };
    }

    private static ClusterConfig BindCluster(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, ClusterProperties);
        var d = new ClusterConfig();
        var tls = BindUpstreamTls(e, p, r);
        int maxConnections = (int)(r.Integer(e, p, nameof(ClusterConfig.MaxConnectionsPerDestination), 1, 1_000_000) ?? d.MaxConnectionsPerDestination);
        var protocol = UpstreamProtocol.Http1;
        switch (r.String(e, p, nameof(ClusterConfig.Protocol)))
        {
            case null or "http1": break;
            case "h2": protocol = UpstreamProtocol.H2; break;
            case var other: r.Error(ConfigReader.Child(p, nameof(ClusterConfig.Protocol)), $"'{other}' is not one of http1, h2"); break;
        }
        return d with
        {
            Id = r.String(e, p, nameof(ClusterConfig.Id), required: true) ?? "",
            Protocol = protocol,
            Destinations = r.Objects(e, p, nameof(ClusterConfig.Destinations), true, (de, dp) =>
            {
                r.CheckUnknown(de, dp, DestinationProperties);
                return new DestinationConfig
                {
                    Address = r.String(de, dp, nameof(DestinationConfig.Address), required: true) ?? "",
                    Weight = (int)(r.Integer(de, dp, nameof(DestinationConfig.Weight), 1, DestinationConfig.MaxWeight) ?? 1),
                };
            }),
            MaxConnectionsPerDestination = maxConnections,
            // default: as many as may be open (Envoy and SocketsHttpHandler keep every idle connection until its idle
            // timeout); a lower cap closes and reopens upstream connections under load (measured: docs/performance.md)
            MaxIdleConnectionsPerDestination = (int)(r.Integer(e, p, nameof(ClusterConfig.MaxIdleConnectionsPerDestination), 0, 1_000_000) ?? maxConnections),
            IdleConnectionTimeout = r.Duration(e, p, nameof(ClusterConfig.IdleConnectionTimeout)) ?? d.IdleConnectionTimeout,
            Tls = tls,
            Retry = BindRetry(e, p, r),
            CircuitBreaker = BindBreaker(e, p, r),
            HealthCheck = TrafficConfigBinder.BindHealthCheck(e, p, r),
            OutlierDetection = TrafficConfigBinder.BindOutlierDetection(e, p, r),
            LoadBalancing = TrafficConfigBinder.BindLoadBalancing(e, p, r),
        };
    }

    private static string N(string property) => ConfigReader.Names(property)[0];

    private static RetryConfig BindRetry(JsonElement e, string p, ConfigReader r)
    {
        var d = new RetryConfig();
        var name = N(nameof(ClusterConfig.Retry));
        if (!r.TryGet(e, p, name, false, out var x) || !r.IsObject(x, ConfigReader.Child(p, name))) return d;
        var rp = ConfigReader.Child(p, name);
        r.CheckUnknown(x, rp, RetryProperties);
        var statuses = new List<int>();
        var on = N(nameof(RetryConfig.RetryOn));
        if (r.TryGet(x, rp, on, false, out var list))
        {
            if (list.ValueKind != JsonValueKind.Array) r.Error(ConfigReader.Child(rp, on), "expected an array of statuses such as [502, 503, 504]");
            else
            {
                int k = 0;
                foreach (var s in list.EnumerateArray())
                {
                    if (s.ValueKind == JsonValueKind.Number && s.TryGetInt32(out int code) && code is 429 or (>= 500 and <= 599)) statuses.Add(code);
                    else r.Error($"{ConfigReader.Child(rp, on)}[{k}]", $"expected 429 or a 5xx status (found {s.GetRawText()})");
                    k++;
                }
            }
        }
        return new RetryConfig
        {
            MaxRetries = (int)(r.Integer(x, rp, N(nameof(RetryConfig.MaxRetries)), 0, 10) ?? d.MaxRetries),
            RetryOn = statuses,
            RetryOnReset = r.Bool(x, rp, N(nameof(RetryConfig.RetryOnReset))) ?? d.RetryOnReset,
            PerTryTimeout = r.Duration(x, rp, N(nameof(RetryConfig.PerTryTimeout))),
            RetryNonIdempotent = r.Bool(x, rp, N(nameof(RetryConfig.RetryNonIdempotent))) ?? d.RetryNonIdempotent,
            BudgetPercent = (int)(r.Integer(x, rp, N(nameof(RetryConfig.BudgetPercent)), 0, 100) ?? d.BudgetPercent),
            MinRetryConcurrency = (int)(r.Integer(x, rp, N(nameof(RetryConfig.MinRetryConcurrency)), 0, 100_000) ?? d.MinRetryConcurrency),
            MaxRetryAfter = r.Duration(x, rp, N(nameof(RetryConfig.MaxRetryAfter))) ?? d.MaxRetryAfter,
        };
    }

    private static CircuitBreakerConfig BindBreaker(JsonElement e, string p, ConfigReader r)
    {
        var name = N(nameof(ClusterConfig.CircuitBreaker));
        if (!r.TryGet(e, p, name, false, out var x) || !r.IsObject(x, ConfigReader.Child(p, name))) return new CircuitBreakerConfig();
        var bp = ConfigReader.Child(p, name);
        r.CheckUnknown(x, bp, CircuitBreakerProperties);
        return new CircuitBreakerConfig
        {
            MaxConcurrentRequests = (int)(r.Integer(x, bp, N(nameof(CircuitBreakerConfig.MaxConcurrentRequests)), 0, 10_000_000) ?? 0),
            MaxPendingRequests = (int)(r.Integer(x, bp, N(nameof(CircuitBreakerConfig.MaxPendingRequests)), 0, 10_000_000) ?? 0),
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
            if (c.Retry.PerTryTimeout is { } perTry && perTry <= TimeSpan.Zero)
                errors.Add(new ConfigError(p + ".retry.perTryTimeout", "must be greater than 0"));
            if (c.MaxIdleConnectionsPerDestination > c.MaxConnectionsPerDestination)
                errors.Add(new ConfigError(p + ".maxIdleConnectionsPerDestination", "cannot exceed maxConnectionsPerDestination"));
            TrafficConfigBinder.Validate(c, p, errors);
        }
    }

    internal static void ValidateUpstreamTls(GatewayConfig config, UpstreamTlsConfig tls, string p, bool anyHttps, List<ConfigError> errors,
        string noHttps = "tls applies to https:// destinations and this cluster has none; use https:// addresses or remove tls")
    {
        if (!anyHttps) errors.Add(new ConfigError(p, noHttps));
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
        for (int i = 0; i < config.Routes.Count; i++)
        {
            if (config.Routes[i].Ai is not { } ai) continue;
            for (int j = 0; j < ai.Providers.Count; j++)
                if (ai.Providers[j].Tls is { InsecureSkipVerify: true })
                    warnings.Add(new ConfigError($"$.routes[{i}].ai.providers[{j}].tls.insecureSkipVerify",
                        $"AI provider '{ai.Providers[j].Id}' accepts any certificate: for self-signed test servers only"));
        }
    }
}
