using System.Text.Json;

namespace FastGate.Configuration;

/// <summary>The outcome of reading a configuration: the config when it is valid, and every error found.</summary>
public sealed record ConfigLoadResult(GatewayConfig? Config, IReadOnlyList<ConfigError> Errors, string Text)
{
    public bool IsValid => Config is not null && Errors.Count == 0;
    /// <summary>Valid but risky settings (e.g. upstream certificate checks turned off), to print at load.</summary>
    public IReadOnlyList<ConfigError> Warnings { get; init; } = [];
}

/// <summary>
/// Reads config JSON (comments and trailing commas allowed) into <see cref="GatewayConfig"/>, then runs every
/// validator. Errors from all stages are collected; nothing is applied by this class.
/// </summary>
public static class ConfigLoader
{
    private static readonly JsonDocumentOptions s_options = new()
    {
        CommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        MaxDepth = 64,
    };

    /// <summary>The top-level properties: "$schema", the sections of <see cref="GatewayConfig"/> and the observability sections.</summary>
    internal static readonly string[] RootProperties =
        ["$schema", .. ConfigReader.Names(nameof(GatewayConfig.Listeners), nameof(GatewayConfig.Admin), nameof(GatewayConfig.Clusters),
        nameof(GatewayConfig.Routes), nameof(GatewayConfig.Limits), nameof(GatewayConfig.Http), nameof(GatewayConfig.Policies),
        nameof(GatewayConfig.DefaultAction), nameof(GatewayConfig.IpLists), nameof(GatewayConfig.RateLimits), nameof(GatewayConfig.Redis),
        nameof(GatewayConfig.Consumers), nameof(GatewayConfig.ApiKeys), nameof(GatewayConfig.Cors), nameof(GatewayConfig.JwtIssuers),
        nameof(GatewayConfig.Jwt), nameof(GatewayConfig.TrustedProxies), nameof(GatewayConfig.Devices), nameof(GatewayConfig.Mtls)),
        .. Observability.ObservabilityConfigReader.SectionNames];
    /// <summary><c>admin</c>.</summary>
    internal static readonly string[] AdminProperties =
        ConfigReader.Names(nameof(AdminConfig.Address), nameof(AdminConfig.Token), nameof(AdminConfig.TokenEnv));
    /// <summary><c>listeners[]</c>.</summary>
    internal static readonly string[] ListenerProperties =
        ConfigReader.Names(nameof(ListenerConfig.Name), nameof(ListenerConfig.Address), nameof(ListenerConfig.Tls));
    /// <summary><c>routes[].upstreamCredential</c>.</summary>
    internal static readonly string[] UpstreamCredentialProperties =
        ConfigReader.Names(nameof(UpstreamCredentialConfig.Provider), nameof(UpstreamCredentialConfig.Header),
        nameof(UpstreamCredentialConfig.Prefix), nameof(UpstreamCredentialConfig.Env));
    /// <summary><c>clusters[]</c>.</summary>
    internal static readonly string[] ClusterProperties =
        ConfigReader.Names(nameof(ClusterConfig.Id), nameof(ClusterConfig.Destinations), nameof(ClusterConfig.MaxConnectionsPerDestination),
        nameof(ClusterConfig.MaxIdleConnectionsPerDestination), nameof(ClusterConfig.IdleConnectionTimeout), nameof(ClusterConfig.Tls));
    /// <summary><c>clusters[].tls</c>.</summary>
    internal static readonly string[] UpstreamTlsProperties =
        ConfigReader.Names(nameof(UpstreamTlsConfig.Ca), nameof(UpstreamTlsConfig.Sni), nameof(UpstreamTlsConfig.InsecureSkipVerify));
    /// <summary><c>clusters[].destinations[]</c>.</summary>
    internal static readonly string[] DestinationProperties = ConfigReader.Names(nameof(DestinationConfig.Address));
    /// <summary><c>routes[]</c>.</summary>
    internal static readonly string[] RouteProperties =
        ConfigReader.Names(nameof(RouteConfig.Id), nameof(RouteConfig.Match), nameof(RouteConfig.Cluster), nameof(RouteConfig.StripPrefix),
        nameof(RouteConfig.PreserveHost), nameof(RouteConfig.RateLimits), nameof(RouteConfig.Auth), nameof(RouteConfig.Scopes),
        nameof(RouteConfig.Claims), nameof(RouteConfig.ForwardApiKey), nameof(RouteConfig.Cors), nameof(RouteConfig.Hsts),
        nameof(RouteConfig.UpstreamCredential), nameof(RouteConfig.RequestTimeout));
    /// <summary><c>routes[].match</c>.</summary>
    internal static readonly string[] RouteMatchProperties =
        ConfigReader.Names(nameof(RouteMatchConfig.Hosts), nameof(RouteMatchConfig.PathPrefix), nameof(RouteMatchConfig.Path),
        nameof(RouteMatchConfig.Methods));
    /// <summary><c>limits</c>.</summary>
    internal static readonly string[] LimitsProperties =
        ConfigReader.Names(nameof(LimitsConfig.MaxRequestLineBytes), nameof(LimitsConfig.MaxHeaderBytes),
        nameof(LimitsConfig.MaxHeaderCount), nameof(LimitsConfig.MaxBodyBytes), nameof(LimitsConfig.HeaderTimeout),
        nameof(LimitsConfig.KeepAliveTimeout), nameof(LimitsConfig.UpstreamConnectTimeout), nameof(LimitsConfig.UpstreamResponseTimeout),
        nameof(LimitsConfig.DrainTimeout), nameof(LimitsConfig.BodyIdleTimeout), nameof(LimitsConfig.MinRequestBodyRate),
        nameof(LimitsConfig.MinResponseRate), nameof(LimitsConfig.MinRateGracePeriod), nameof(LimitsConfig.RequestTimeout),
        nameof(LimitsConfig.RequestBufferBytes));
    /// <summary>A certificate source (<see cref="CertificateFiles"/>), in listeners[].tls and its sni[] entries.</summary>
    internal static readonly string[] CertificateFileProperties =
        ConfigReader.Names(nameof(CertificateFiles.Certificate), nameof(CertificateFiles.Key), nameof(CertificateFiles.Pfx),
        nameof(CertificateFiles.Password), nameof(CertificateFiles.PasswordEnv));
    /// <summary><c>listeners[].tls</c>.</summary>
    internal static readonly string[] ListenerTlsProperties =
        [.. CertificateFileProperties, .. ConfigReader.Names(nameof(ListenerTlsConfig.ClientCertificate),
        nameof(ListenerTlsConfig.ClientCa), nameof(ListenerTlsConfig.Sni))];
    /// <summary><c>listeners[].tls.sni[]</c>.</summary>
    internal static readonly string[] SniProperties =
        [.. ConfigReader.Names(nameof(SniCertificateConfig.Hosts)), .. CertificateFileProperties];

    public static ConfigLoadResult LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new ConfigLoadResult(null, [new ConfigError("$", $"cannot read '{path}': {e.Message}")], "");
        }
        return Load(text, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <param name="baseDirectory">Where relative paths in the config (e.g. ipLists files) resolve; default: the current directory.</param>
    /// <param name="files">Which files the validators may open (default: any).</param>
    public static ConfigLoadResult Load(string json, string? baseDirectory = null, ConfigFileAccess? files = null)
    {
        var errors = new List<ConfigError>();
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, s_options);
        }
        catch (JsonException e)
        {
            return new ConfigLoadResult(null, [new ConfigError("$", $"invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}")], json);
        }
        using (doc)
        {
            CheckDuplicateKeys(doc.RootElement, "$", errors);
            var reader = new ConfigReader(errors);
            var config = Bind(doc.RootElement, reader);
            if (config is not null)
            {
                var baseDir = baseDirectory ?? Directory.GetCurrentDirectory();
                config = ResolvePaths(config with { BaseDirectory = baseDir, Files = files ?? ConfigFileAccess.Any });
                ConfigValidator.Validate(config, errors);
            }
            return new ConfigLoadResult(errors.Count == 0 ? config : null, errors, json)
            {
                Warnings = config is null ? [] : ConfigValidator.Warnings(config),
            };
        }
    }

    /// <summary>Binds <paramref name="json"/> and returns what the binders checked and read (errors are ignored): for tests.</summary>
    internal static ConfigReader.BindingTrace TraceBinding(string json)
    {
        var trace = new ConfigReader.BindingTrace();
        using var doc = JsonDocument.Parse(json, s_options);
        Bind(doc.RootElement, new ConfigReader([], trace));
        return trace;
    }

    /// <summary>
    /// Paths used after loading rather than checked by a validator (the access log's) become full paths here, against
    /// the config's directory (<see cref="ConfigPath"/>), so where a file goes never depends on the working directory.
    /// </summary>
    private static GatewayConfig ResolvePaths(GatewayConfig config)
    {
        var log = config.Observability.AccessLog;
        if (log.Path is "stdout" or "") return config;
        string full;
        try
        {
            full = ConfigPath.Resolve(log.Path, config.BaseDirectory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            return config; // opening it reports the problem, as before
        }
        return config with { Observability = config.Observability with { AccessLog = log with { Path = full } } };
    }

    /// <summary>
    /// A key written twice in one object (JSON allows it; the parser would keep the last value silently) is an error
    /// at the second occurrence, in every object of the document.
    /// </summary>
    private static void CheckDuplicateKeys(JsonElement e, string path, List<ConfigError> errors)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            HashSet<string>? seen = null;
            foreach (var p in e.EnumerateObject())
            {
                var child = ConfigReader.Child(path, p.Name);
                if (!(seen ??= new HashSet<string>(StringComparer.Ordinal)).Add(p.Name))
                    errors.Add(new ConfigError(child, $"duplicate key '{p.Name}' in this object: give it once (JSON parsers keep only one of the values)"));
                CheckDuplicateKeys(p.Value, child, errors);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var item in e.EnumerateArray()) CheckDuplicateKeys(item, ConfigReader.Index(path, i++), errors);
        }
    }

    private static string FirstSentence(string message)
    {
        int i = message.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? message[..i] : message;
    }

    private static GatewayConfig? Bind(JsonElement root, ConfigReader r)
    {
        const string path = "$";
        if (!r.IsObject(root, path)) return null;
        r.CheckUnknown(root, path, RootProperties);
        var limits = new LimitsConfig();
        if (r.TryGet(root, path, "limits", false, out var l) && r.IsObject(l, ConfigReader.Child(path, "limits")))
            limits = BindLimits(l, ConfigReader.Child(path, "limits"), r);
        AdminConfig? admin = null;
        if (r.TryGet(root, path, "admin", false, out var a) && r.IsObject(a, ConfigReader.Child(path, "admin")))
        {
            var ap = ConfigReader.Child(path, "admin");
            r.CheckUnknown(a, ap, AdminProperties);
            admin = new AdminConfig
            {
                Address = r.String(a, ap, "address", required: true) ?? "",
                Token = r.String(a, ap, "token"),
                TokenEnv = r.String(a, ap, "tokenEnv"),
            };
        }
        return new GatewayConfig
        {
            Listeners = r.Objects(root, path, "listeners", true, (e, p) =>
            {
                r.CheckUnknown(e, p, ListenerProperties);
                return new ListenerConfig
                {
                    Name = r.String(e, p, "name") ?? "",
                    Address = r.String(e, p, "address", required: true) ?? "",
                    Tls = BindListenerTls(e, p, r),
                };
            }),
            Admin = admin,
            Clusters = r.Objects(root, path, "clusters", true, (e, p) => BindCluster(e, p, r)),
            Routes = r.Objects(root, path, "routes", true, (e, p) => BindRoute(e, p, r)),
            Limits = limits,
            Http = HttpConfigBinder.Bind(root, r),
            Policies = Policy.PolicyConfigBinder.Policies(root, path, r),
            DefaultAction = Policy.PolicyConfigBinder.DefaultAction(root, path, r),
            IpLists = Policy.PolicyConfigBinder.IpLists(root, path, r),
            RateLimits = RateLimitConfigBinder.BindLimits(root, r),
            Redis = RateLimitConfigBinder.BindRedis(root, r),
            Consumers = Security.ApiKeyConfigBinder.BindConsumers(root, r),
            ApiKeys = Security.ApiKeyConfigBinder.BindOptions(root, r),
            Cors = Security.CorsConfigBinder.Bind(root, r),
            JwtIssuers = Security.JwtConfigBinder.BindIssuers(root, r),
            Jwt = Security.JwtConfigBinder.BindOptions(root, r),
            TrustedProxies = r.Strings(root, path, "trustedProxies"),
            Devices = Security.DeviceConfigBinder.BindDevices(root, r),
            Mtls = Security.DeviceConfigBinder.BindOptions(root, r),
            Observability = Observability.ObservabilityConfigReader.Bind(root, path, r),
        };
    }

    private static ListenerTlsConfig? BindListenerTls(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, "tls", false, out var t) || !r.IsObject(t, ConfigReader.Child(p, "tls"))) return null;
        var tp = ConfigReader.Child(p, "tls");
        r.CheckUnknown(t, tp, ListenerTlsProperties);
        var mode = ClientCertificateMode.None;
        if (r.String(t, tp, "clientCertificate") is { } m)
        {
            switch (m)
            {
                case "none": mode = ClientCertificateMode.None; break;
                case "optional": mode = ClientCertificateMode.Optional; break;
                case "required": mode = ClientCertificateMode.Required; break;
                default: r.Error(ConfigReader.Child(tp, "clientCertificate"), $"'{m}' is not one of none, optional, required"); break;
            }
        }
        return new ListenerTlsConfig
        {
            Files = BindCertificateFiles(t, tp, r),
            ClientCertificate = mode,
            ClientCa = r.String(t, tp, "clientCa"),
            Sni = r.Objects(t, tp, "sni", false, (se, sp) =>
            {
                r.CheckUnknown(se, sp, SniProperties);
                return new SniCertificateConfig { Hosts = r.Strings(se, sp, "hosts"), Files = BindCertificateFiles(se, sp, r) };
            }),
        };
    }

    private static CertificateFiles BindCertificateFiles(JsonElement e, string p, ConfigReader r) => new(
        r.String(e, p, "certificate"), r.String(e, p, "key"), r.String(e, p, "pfx"), r.String(e, p, "password"), r.String(e, p, "passwordEnv"));

    private static UpstreamCredentialConfig? BindUpstreamCredential(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, "upstreamCredential", false, out var c) || !r.IsObject(c, ConfigReader.Child(p, "upstreamCredential"))) return null;
        var cp = ConfigReader.Child(p, "upstreamCredential");
        r.CheckUnknown(c, cp, UpstreamCredentialProperties);
        return new UpstreamCredentialConfig
        {
            Provider = r.String(c, cp, "provider"),
            Header = r.String(c, cp, "header"),
            Prefix = r.String(c, cp, "prefix"),
            Env = r.String(c, cp, "env", required: true) ?? "",
        };
    }

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
                return new DestinationConfig { Address = r.String(de, dp, "address", required: true) ?? "" };
            }),
            MaxConnectionsPerDestination = (int)(r.Integer(e, p, "maxConnectionsPerDestination", 1, 1_000_000) ?? d.MaxConnectionsPerDestination),
            MaxIdleConnectionsPerDestination = (int)(r.Integer(e, p, "maxIdleConnectionsPerDestination", 0, 1_000_000) ?? d.MaxIdleConnectionsPerDestination),
            IdleConnectionTimeout = r.Duration(e, p, "idleConnectionTimeout") ?? d.IdleConnectionTimeout,
            Tls = tls,
        };
    }

    private static RouteConfig BindRoute(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, RouteProperties);
        var match = new RouteMatchConfig();
        if (r.TryGet(e, p, "match", true, out var m) && r.IsObject(m, ConfigReader.Child(p, "match")))
        {
            var mp = ConfigReader.Child(p, "match");
            r.CheckUnknown(m, mp, RouteMatchProperties);
            match = new RouteMatchConfig
            {
                Hosts = r.Strings(m, mp, "hosts"),
                PathPrefix = r.String(m, mp, "pathPrefix"),
                Path = r.String(m, mp, "path"),
                Methods = r.Strings(m, mp, "methods"),
            };
        }
        string? strip = null;
        if (r.TryGet(e, p, "stripPrefix", false, out var s))
        {
            if (s.ValueKind == JsonValueKind.String) strip = s.GetString();
            else if (s.ValueKind == JsonValueKind.True) strip = match.PathPrefix ?? "";
            else if (s.ValueKind != JsonValueKind.False) r.Error(ConfigReader.Child(p, "stripPrefix"), "expected a path prefix string or true/false");
        }
        return new RouteConfig
        {
            Id = r.String(e, p, "id", required: true) ?? "",
            Match = match,
            Cluster = r.String(e, p, "cluster", required: true) ?? "",
            StripPrefix = strip,
            PreserveHost = r.Bool(e, p, "preserveHost") ?? false,
            RateLimits = r.Strings(e, p, "rateLimits"),
            Auth = r.Strings(e, p, "auth"),
            Scopes = r.Strings(e, p, "scopes"),
            Claims = Security.JwtConfigBinder.BindClaims(e, p, r),
            ForwardApiKey = r.Bool(e, p, "forwardApiKey") ?? false,
            Cors = r.String(e, p, "cors"),
            Hsts = r.String(e, p, "hsts"),
            UpstreamCredential = BindUpstreamCredential(e, p, r),
            RequestTimeout = r.Duration(e, p, "requestTimeout"),
        };
    }

    /// <summary>The largest limits.requestBufferBytes (a per-connection buffer while a body is read): 16 MiB.</summary>
    internal const long MaxRequestBufferBytes = 16 << 20;

    private static LimitsConfig BindLimits(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, LimitsProperties);
        var d = new LimitsConfig();
        return new LimitsConfig
        {
            MaxRequestLineBytes = (int)(r.Integer(e, p, "maxRequestLineBytes", 1, 1 << 20) ?? d.MaxRequestLineBytes),
            MaxHeaderBytes = (int)(r.Integer(e, p, "maxHeaderBytes", 1, 1 << 24) ?? d.MaxHeaderBytes),
            MaxHeaderCount = (int)(r.Integer(e, p, "maxHeaderCount", 1, 10_000) ?? d.MaxHeaderCount),
            MaxBodyBytes = r.Integer(e, p, "maxBodyBytes", 1, long.MaxValue) ?? d.MaxBodyBytes,
            HeaderTimeout = r.Duration(e, p, "headerTimeout") ?? d.HeaderTimeout,
            KeepAliveTimeout = r.Duration(e, p, "keepAliveTimeout") ?? d.KeepAliveTimeout,
            UpstreamConnectTimeout = r.Duration(e, p, "upstreamConnectTimeout") ?? d.UpstreamConnectTimeout,
            UpstreamResponseTimeout = r.Duration(e, p, "upstreamResponseTimeout") ?? d.UpstreamResponseTimeout,
            DrainTimeout = r.Duration(e, p, "drainTimeout") ?? d.DrainTimeout,
            BodyIdleTimeout = r.Duration(e, p, "bodyIdleTimeout") ?? d.BodyIdleTimeout,
            MinRequestBodyRate = r.Integer(e, p, "minRequestBodyRate", 0, 1L << 40) ?? d.MinRequestBodyRate,
            MinResponseRate = r.Integer(e, p, "minResponseRate", 0, 1L << 40) ?? d.MinResponseRate,
            MinRateGracePeriod = r.Duration(e, p, "minRateGracePeriod") ?? d.MinRateGracePeriod,
            RequestTimeout = r.Duration(e, p, "requestTimeout"),
            RequestBufferBytes = (int)(r.Integer(e, p, "requestBufferBytes", 0, MaxRequestBufferBytes) ?? d.RequestBufferBytes),
        };
    }
}
