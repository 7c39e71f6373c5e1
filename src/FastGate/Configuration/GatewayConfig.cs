namespace FastGate.Configuration;

// What the user writes in config/fastgate.json. Plain init-only records: they stop at the compiler, the
// request path never sees them.

public sealed record GatewayConfig
{
    public IReadOnlyList<ListenerConfig> Listeners { get; init; } = [];
    public AdminConfig? Admin { get; init; }
    public IReadOnlyList<ClusterConfig> Clusters { get; init; } = [];
    public IReadOnlyList<RouteConfig> Routes { get; init; } = [];
    public LimitsConfig Limits { get; init; } = new();
    /// <summary>The canonical-request settings (Configuration/HttpConfig.cs).</summary>
    public HttpConfig Http { get; init; } = new();
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
}

public sealed record ListenerConfig
{
    public string Name { get; init; } = "";
    public string Address { get; init; } = "";
    /// <summary>TLS termination on this listener (null: plain HTTP/1.1).</summary>
    public ListenerTlsConfig? Tls { get; init; }
}

public enum ClientCertificateMode : byte { None, Optional, Required }

/// <summary>A listener's TLS settings: a PEM certificate and key, or a PKCS#12 (PFX) file; client certificates (mTLS).</summary>
public sealed record ListenerTlsConfig
{
    /// <summary>The listener's own certificate ("certificate"/"key" or "pfx"/"password"/"passwordEnv").</summary>
    public CertificateFiles Files { get; init; } = new(null, null, null, null, null);
    public ClientCertificateMode ClientCertificate { get; init; } = ClientCertificateMode.None;
    /// <summary>PEM bundle of the CA certificates client certificates must chain to (required unless clientCertificate is none).</summary>
    public string? ClientCa { get; init; }
    /// <summary>More certificates, chosen by the server name the client asks for (SNI); this one serves every other name.</summary>
    public IReadOnlyList<SniCertificateConfig> Sni { get; init; } = [];
}

/// <summary>A certificate for the server names in <see cref="Hosts"/> ("api.example.com" or "*.example.com").</summary>
public sealed record SniCertificateConfig
{
    public IReadOnlyList<string> Hosts { get; init; } = [];
    public CertificateFiles Files { get; init; } = new(null, null, null, null, null);
}

/// <summary>
/// Where one server certificate comes from: a PEM pair (the certificate file may carry intermediates after it; the
/// key unencrypted), or a PKCS#12 file and its password (or the environment variable holding it).
/// </summary>
public sealed record CertificateFiles(string? Certificate, string? Key, string? Pfx, string? Password, string? PasswordEnv)
{
    public string? ResolvePassword() =>
        !string.IsNullOrEmpty(Password) ? Password : PasswordEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
}

public sealed record AdminConfig
{
    public string Address { get; init; } = "127.0.0.1:9901";
    /// <summary>Bearer token for /admin/*; required when the admin listener is not on a loopback address.</summary>
    public string? Token { get; init; }
    /// <summary>Name of an environment variable holding the token (keeps it out of the file).</summary>
    public string? TokenEnv { get; init; }

    public string? ResolveToken() =>
        !string.IsNullOrEmpty(Token) ? Token : TokenEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
}

public sealed record ClusterConfig
{
    public string Id { get; init; } = "";
    public IReadOnlyList<DestinationConfig> Destinations { get; init; } = [];
    public int MaxConnectionsPerDestination { get; init; } = 1024;
    public int MaxIdleConnectionsPerDestination { get; init; } = 256;
    public TimeSpan IdleConnectionTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How https:// destinations are verified (null: the system trust store, SNI = the destination host).</summary>
    public UpstreamTlsConfig? Tls { get; init; }
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
}

public sealed record RouteConfig
{
    public string Id { get; init; } = "";
    public RouteMatchConfig Match { get; init; } = new();
    public string Cluster { get; init; } = "";
    /// <summary>A prefix removed from the path before forwarding (true: the match's pathPrefix).</summary>
    public string? StripPrefix { get; init; }
    public bool PreserveHost { get; init; }
    /// <summary>Ids of rate limits applied to every request of this route.</summary>
    public IReadOnlyList<string> RateLimits { get; init; } = [];
    /// <summary>Accepted authentication schemes; any one suffices ("apiKey", "jwt", "jwt:&lt;issuer&gt;", "mtls"). Empty: none.</summary>
    public IReadOnlyList<string> Auth { get; init; } = [];
    /// <summary>Scopes a token must carry (all of them); a valid token without one gets 403.</summary>
    public IReadOnlyList<string> Scopes { get; init; } = [];
    /// <summary>Claims a token must carry, each with one of the listed values (any value when none listed).</summary>
    public IReadOnlyList<Security.ClaimRequirement> Claims { get; init; } = [];
    /// <summary>Forward the client's API key upstream (off: the key header is removed).</summary>
    public bool ForwardApiKey { get; init; }
    /// <summary>Id of a CORS profile in the top-level <c>cors</c> list.</summary>
    public string? Cors { get; init; }
    /// <summary>Strict-Transport-Security value sent on this route's responses over TLS (e.g. "max-age=31536000").</summary>
    public string? Hsts { get; init; }
    /// <summary>A credential the gateway adds to every forwarded request (an LLM provider key), from the environment.</summary>
    public UpstreamCredentialConfig? UpstreamCredential { get; init; }
    /// <summary>Total time from the request head to the response head (null: limits.requestTimeout, or none).</summary>
    public TimeSpan? RequestTimeout { get; init; }
}

/// <summary>
/// Key injection: the upstream's own credential, read from an environment variable (never from the file), sent in a
/// header the client cannot set. Provider presets name the header; "header" (and "prefix") name any other.
/// </summary>
public sealed record UpstreamCredentialConfig
{
    /// <summary>openai, anthropic, azure-openai, gemini; or null with <see cref="Header"/>.</summary>
    public string? Provider { get; init; }
    public string? Header { get; init; }
    /// <summary>Text before the secret in the header value (e.g. "Bearer ").</summary>
    public string? Prefix { get; init; }
    /// <summary>The environment variable holding the secret.</summary>
    public string Env { get; init; } = "";

    /// <summary>The (header, prefix) of a provider preset; null for an unknown provider.</summary>
    public static (string Header, string Prefix)? Preset(string provider) => provider switch
    {
        "openai" => ("Authorization", "Bearer "),
        "anthropic" => ("x-api-key", ""),
        "azure-openai" => ("api-key", ""),
        "gemini" => ("x-goog-api-key", ""),
        _ => null,
    };

    public (string Header, string Prefix) Resolve() =>
        Provider is { } p && Preset(p) is { } preset ? (Header ?? preset.Header, Prefix ?? preset.Prefix) : (Header ?? "", Prefix ?? "");
}

public sealed record RouteMatchConfig
{
    public IReadOnlyList<string> Hosts { get; init; } = [];
    public string? PathPrefix { get; init; }
    public string? Path { get; init; }
    public IReadOnlyList<string> Methods { get; init; } = [];
}

public sealed record LimitsConfig
{
    public int MaxRequestLineBytes { get; init; } = 8192;
    public int MaxHeaderBytes { get; init; } = 32768;
    public int MaxHeaderCount { get; init; } = 100;
    public long MaxBodyBytes { get; init; } = 31457280;
    public TimeSpan HeaderTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan KeepAliveTimeout { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan UpstreamConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan UpstreamResponseTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>Longest wait for the next request-body bytes once a body has begun (the client's fault only: time the
    /// gateway spends waiting on the upstream to take bytes is not counted).</summary>
    public TimeSpan BodyIdleTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Lowest request-body rate (bytes/s) after <see cref="MinRateGracePeriod"/>; 0 turns the check off.</summary>
    public long MinRequestBodyRate { get; init; } = 240;
    /// <summary>Lowest rate (bytes/s) at which a client must take a response when its connection is backed up; 0: off.</summary>
    public long MinResponseRate { get; init; } = 240;
    /// <summary>Time a body or a response gets before the minimum rates apply.</summary>
    public TimeSpan MinRateGracePeriod { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Default total time from a request head to its response head, for routes without their own (null: none).</summary>
    public TimeSpan? RequestTimeout { get; init; }
    /// <summary>Request bodies up to this size are read completely before an upstream connection is leased; 0: stream all.</summary>
    public int RequestBufferBytes { get; init; } = 65536;
}

/// <summary>One configuration problem, located by its JSON path (e.g. <c>$.routes[0].cluster</c>).</summary>
public sealed record ConfigError(string Path, string Message)
{
    public override string ToString() => $"{Path}: {Message}";
}
