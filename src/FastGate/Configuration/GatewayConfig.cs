namespace FastGate.Configuration;

// What the user writes in config/fastgate.json. Plain init-only records: they stop at the compiler, the
// request path never sees them. This is the root; each section's records sit with their binder and validator
// (Configuration/Sections/, Security/, Policy/, Observability/ObservabilityConfig.cs).

public sealed record GatewayConfig
{
    public IReadOnlyList<ListenerConfig> Listeners { get; init; } = [];
    public AdminConfig? Admin { get; init; }
    public IReadOnlyList<ClusterConfig> Clusters { get; init; } = [];
    public IReadOnlyList<RouteConfig> Routes { get; init; } = [];
    public LimitsConfig Limits { get; init; } = new();
    /// <summary>The canonical-request settings (Configuration/Sections/Http.cs).</summary>
    public HttpConfig Http { get; init; } = new();
    /// <summary>OpenTelemetry traces (Configuration/Sections/Tracing.cs).</summary>
    public TracingConfig Tracing { get; init; } = new();
    public IReadOnlyList<PolicyRuleConfig> Policies { get; init; } = [];
    public DefaultAction DefaultAction { get; init; } = DefaultAction.Allow;
    public IReadOnlyList<IpListConfig> IpLists { get; init; } = [];
    public IReadOnlyList<RateLimitConfig> RateLimits { get; init; } = [];
    public RedisConfig? Redis { get; init; }
    public IReadOnlyList<Security.ConsumerConfig> Consumers { get; init; } = [];
    public Security.ApiKeyOptionsConfig ApiKeys { get; init; } = new();
    public IReadOnlyList<Security.CorsConfig> Cors { get; init; } = [];
    public IReadOnlyList<Security.JwtIssuerConfig> JwtIssuers { get; init; } = [];
    public Security.JwtOptionsConfig Jwt { get; init; } = new();
    /// <summary>Client certificates (mTLS) known as devices, by SPKI hash or thumbprint.</summary>
    public IReadOnlyList<Security.DeviceConfig> Devices { get; init; } = [];
    public Security.MtlsOptionsConfig Mtls { get; init; } = new();
    /// <summary>CIDRs of proxies whose X-Forwarded-For is believed (empty: the TCP peer is always the client).</summary>
    public IReadOnlyList<string> TrustedProxies { get; init; } = [];
    /// <summary>Directory relative paths in the config resolve against (<see cref="ConfigPath.Resolve"/>): the config file's.</summary>
    public string BaseDirectory { get; init; } = ".";
    /// <summary>Which files validating this config may open (all, except for POST /admin/validate).</summary>
    public ConfigFileAccess Files { get; init; } = ConfigFileAccess.Any;
    /// <summary>The accessLog, alerts and anomaly sections (bound by Observability/ObservabilityConfig.cs).</summary>
    public Observability.ObservabilityConfig Observability { get; init; } = new();
    /// <summary>WAF profiles (Waf/WafConfig.cs), referenced by routes[].waf.</summary>
    public Waf.WafConfig Waf { get; init; } = new();
    /// <summary>auto (default: native where it runs, else kestrel) | kestrel | native: FastGate's own transport for plain HTTP/1.1 listeners on Linux (Configuration/Sections/Transport.cs).</summary>
    public TransportKind Transport { get; init; } = TransportKind.Auto;
    /// <summary>The native transport's event loops; 0 (default): one per core.</summary>
    public int NativeLoops { get; init; }
    /// <summary>How the native transport's loops wait and do I/O: auto (default: io_uring where the kernel has it, else epoll) | epoll | io_uring.</summary>
    public NativeIoKind NativeIo { get; init; } = NativeIoKind.Auto;
}

/// <summary>One configuration problem, located by its JSON path (e.g. <c>$.routes[0].cluster</c>).</summary>
public sealed record ConfigError(string Path, string Message)
{
    public override string ToString() => $"{Path}: {Message}";
}
