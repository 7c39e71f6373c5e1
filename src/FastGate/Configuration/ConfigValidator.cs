using System.Net;

namespace FastGate.Configuration;

/// <summary>
/// Semantic checks on a bound config, one validator per concern. Every validator runs and adds every error it
/// finds; the config applies only when the list stays empty.
/// </summary>
public static class ConfigValidator
{
    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        ValidateListeners(config, errors);
        ValidateClusters(config, errors);
        ValidateRoutes(config, errors);
        RateLimitConfigBinder.Validate(config, errors);
        Security.ApiKeyConfigBinder.Validate(config, errors);
        Security.CorsConfigBinder.Validate(config, errors);
        Security.JwtConfigBinder.Validate(config, errors);
        Security.DeviceConfigBinder.Validate(config, errors);
        Policy.PolicyValidator.Validate(config, errors);
        ValidateTrustedProxies(config, errors);
        ValidateTimeouts(config, errors);
    }

    /// <summary>The timeouts checked by the 250 ms heartbeat cannot be finer than it.</summary>
    internal static readonly TimeSpan HeartbeatResolution = TimeSpan.FromMilliseconds(250);

    private static void ValidateTimeouts(GatewayConfig config, List<ConfigError> errors)
    {
        void Check(TimeSpan? value, string path)
        {
            if (value is { } v && v < HeartbeatResolution)
                errors.Add(new ConfigError(path, $"must be at least 250ms, the resolution of the timeout heartbeat (found {v.TotalMilliseconds}ms)"));
        }
        Check(config.Limits.BodyIdleTimeout, "$.limits.bodyIdleTimeout");
        Check(config.Limits.MinRateGracePeriod, "$.limits.minRateGracePeriod");
        Check(config.Limits.RequestTimeout, "$.limits.requestTimeout");
        for (int i = 0; i < config.Routes.Count; i++) Check(config.Routes[i].RequestTimeout, $"$.routes[{i}].requestTimeout");
    }

    /// <summary>Valid settings worth a warning when the config loads (printed by the CLI, logged on reload).</summary>
    public static IReadOnlyList<ConfigError> Warnings(GatewayConfig config)
    {
        var warnings = new List<ConfigError>();
        for (int i = 0; i < config.Clusters.Count; i++)
        {
            if (config.Clusters[i].Tls is { InsecureSkipVerify: true })
                warnings.Add(new ConfigError($"$.clusters[{i}].tls.insecureSkipVerify",
                    $"cluster '{config.Clusters[i].Id}' accepts any upstream certificate: for self-signed test upstreams only"));
        }
        return warnings;
    }

    private static void ValidateTrustedProxies(GatewayConfig config, List<ConfigError> errors)
    {
        for (int i = 0; i < config.TrustedProxies.Count; i++)
        {
            if (!Policy.Cidr.TryParse(config.TrustedProxies[i], out _, out var error))
                errors.Add(new ConfigError($"$.trustedProxies[{i}]", error));
        }
    }

    public static bool TryParseEndPoint(string address, out IPEndPoint endPoint)
    {
        endPoint = null!;
        if (string.IsNullOrWhiteSpace(address)) return false;
        var a = address.StartsWith("*:", StringComparison.Ordinal) ? "0.0.0.0" + address[1..] : address;
        if (a.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase)) a = "127.0.0.1" + a[9..];
        if (!IPEndPoint.TryParse(a, out var ep) || ep is null) return false;
        // IPEndPoint.TryParse accepts a bare address with port 0; require an explicit port.
        int colon = a.LastIndexOf(':');
        if (colon < 0 || colon < a.LastIndexOf(']')) return false;
        endPoint = ep;
        return true;
    }

    private static void ValidateListeners(GatewayConfig config, List<ConfigError> errors)
    {
        if (config.Listeners.Count == 0) errors.Add(new ConfigError("$.listeners", "at least one listener is required"));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var addresses = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Listeners.Count; i++)
        {
            var l = config.Listeners[i];
            string p = $"$.listeners[{i}]";
            if (l.Name.Length > 0 && !names.Add(l.Name)) errors.Add(new ConfigError(p + ".name", $"duplicate listener name '{l.Name}'"));
            if (!TryParseEndPoint(l.Address, out var ep))
                errors.Add(new ConfigError(p + ".address", $"'{l.Address}' is not an address of the form 127.0.0.1:8080 or [::1]:8080"));
            else if (ep.Port != 0 && !addresses.Add(ep.ToString()))
                errors.Add(new ConfigError(p + ".address", $"address {ep} is used by another listener"));
            if (l.Tls is { } tls)
                foreach (var (sub, message) in Security.ListenerTls.Check(tls, config.BaseDirectory, config.Files))
                    errors.Add(new ConfigError(p + ".tls" + sub, message));
        }
        if (config.Admin is { } admin)
        {
            if (!TryParseEndPoint(admin.Address, out var adminEp))
                errors.Add(new ConfigError("$.admin.address", $"'{admin.Address}' is not an address of the form 127.0.0.1:9901"));
            else if (!IPAddress.IsLoopback(adminEp.Address) && string.IsNullOrEmpty(admin.ResolveToken()))
                errors.Add(new ConfigError("$.admin", $"the admin listener on {adminEp} is not loopback-only: set \"token\" or \"tokenEnv\" (a bearer token for /admin/*)"));
            ValidateAdminToken(admin, errors);
        }
    }

    /// <summary>Shortest admin token accepted (a bearer secret: 16 characters at the very least; use 32 random bytes).</summary>
    public const int MinAdminTokenLength = 16;

    private static void ValidateAdminToken(AdminConfig admin, List<ConfigError> errors)
    {
        if (admin.Token is { } token)
        {
            if (TokenProblem(token) is { } problem) errors.Add(new ConfigError("$.admin.token", problem));
        }
        else if (admin.TokenEnv is { } env)
        {
            var value = env.Length == 0 ? null : Environment.GetEnvironmentVariable(env);
            if (string.IsNullOrEmpty(value))
                errors.Add(new ConfigError("$.admin.tokenEnv", $"environment variable '{env}' is not set: the admin API would run without a token"));
            else if (TokenProblem(value) is { } problem)
                errors.Add(new ConfigError("$.admin.tokenEnv", $"the value of '{env}' {problem}"));
        }
    }

    private static string? TokenProblem(string token)
    {
        if (token.Any(c => c is <= ' ' or > '~'))
            return "must be visible ASCII without spaces (a presented token is trimmed, so spaces could never match)";
        if (token.Length < MinAdminTokenLength)
            return $"must be at least {MinAdminTokenLength} characters (found {token.Length}); `fastgate new-key` makes one";
        return null;
    }

    private static void ValidateClusters(GatewayConfig config, List<ConfigError> errors)
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
        if (tls.Sni is { } sni && (!IsHostName(sni) || sni.Contains(':') || sni.StartsWith('.') || sni.EndsWith('.') || IPAddress.TryParse(sni, out _)))
            errors.Add(new ConfigError(p + ".sni", $"'{sni}' is not a DNS host name such as api.internal"));
    }

    private static void ValidateRoutes(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var clusterIds = config.Clusters.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        if (config.Routes.Count == 0) errors.Add(new ConfigError("$.routes", "at least one route is required"));
        for (int i = 0; i < config.Routes.Count; i++)
        {
            var r = config.Routes[i];
            string p = $"$.routes[{i}]";
            if (r.Id.Length > 0 && !ids.Add(r.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate route id '{r.Id}'"));
            if (r.Cluster.Length > 0 && !clusterIds.Contains(r.Cluster))
            {
                var hint = Suggest(r.Cluster, clusterIds);
                errors.Add(new ConfigError(p + ".cluster", $"unknown cluster '{r.Cluster}'" + (hint is null ? "" : $"; did you mean '{hint}'?")));
            }
            var m = r.Match;
            if (m.Path is not null && m.PathPrefix is not null)
                errors.Add(new ConfigError(p + ".match", "give either path or pathPrefix, not both"));
            if (m.Path is { } path && !path.StartsWith('/')) errors.Add(new ConfigError(p + ".match.path", $"must start with '/' (found '{path}')"));
            if (m.PathPrefix is { } prefix && !prefix.StartsWith('/')) errors.Add(new ConfigError(p + ".match.pathPrefix", $"must start with '/' (found '{prefix}')"));
            CheckCanonicalPaths(m, p, config.Http.EscapedSlashes, errors);
            for (int h = 0; h < m.Hosts.Count; h++)
            {
                var host = m.Hosts[h];
                var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
                if (host == "*") continue;
                if (HasPort(name))
                    errors.Add(new ConfigError($"{p}.match.hosts[{h}]",
                        $"'{host}' has a port: routes match the Host header's name without its port, so it would never match; use '{host[..host.LastIndexOf(':')]}'"));
                else if (!IsHostName(name) || (name.Contains(':') && !(name.StartsWith('[') && name.EndsWith(']'))))
                    errors.Add(new ConfigError($"{p}.match.hosts[{h}]", $"'{host}' is not a host name, '*.example.com' or '*'"));
            }
            for (int k = 0; k < m.Methods.Count; k++)
            {
                var method = m.Methods[k];
                if (!IsToken(method)) errors.Add(new ConfigError($"{p}.match.methods[{k}]", $"'{method}' is not an HTTP method"));
                else if (method != method.ToUpperInvariant() && s_standardMethods.Contains(method.ToUpperInvariant()))
                    errors.Add(new ConfigError($"{p}.match.methods[{k}]", $"methods are case-sensitive: '{method}' would never match; use '{method.ToUpperInvariant()}'"));
            }
            if (r.Hsts is { } hsts)
            {
                if (!hsts.StartsWith("max-age=", StringComparison.OrdinalIgnoreCase) || hsts.Any(c => c is < ' ' or > '~'))
                    errors.Add(new ConfigError(p + ".hsts", $"expected a Strict-Transport-Security value such as \"max-age=31536000; includeSubDomains\" (found '{hsts}')"));
                else if (!config.Listeners.Any(l => l.Tls is not null))
                    errors.Add(new ConfigError(p + ".hsts", "HSTS is sent only over TLS and no listener has tls"));
            }
            if (r.UpstreamCredential is { } credential) ValidateUpstreamCredential(credential, p + ".upstreamCredential", errors);
            if (r.StripPrefix is { } strip && strip.Length > 0)
            {
                if (!strip.StartsWith('/')) errors.Add(new ConfigError(p + ".stripPrefix", $"must start with '/' (found '{strip}')"));
                else if (m.PathPrefix is { } pp && !pp.StartsWith(strip, StringComparison.Ordinal))
                    errors.Add(new ConfigError(p + ".stripPrefix", $"'{strip}' is not a prefix of the route's pathPrefix '{pp}'"));
            }
        }
    }

    private static void CheckCanonicalPaths(RouteMatchConfig m, string p, Http.EscapedSlashAction slashes, List<ConfigError> errors)
    {
        if (m.Path is { } path && HttpConfigBinder.CheckRoutePath(path, slashes) is { } e1) errors.Add(new ConfigError(p + ".match.path", e1));
        if (m.PathPrefix is { } prefix && HttpConfigBinder.CheckRoutePath(prefix, slashes) is { } e2) errors.Add(new ConfigError(p + ".match.pathPrefix", e2));
    }

    private static void ValidateUpstreamCredential(UpstreamCredentialConfig c, string p, List<ConfigError> errors)
    {
        if (c.Provider is { } provider && UpstreamCredentialConfig.Preset(provider) is null)
            errors.Add(new ConfigError(p + ".provider", $"'{provider}' is not a provider preset (openai, anthropic, azure-openai, gemini); give \"header\" instead"));
        else if (c.Provider is null && c.Header is null)
            errors.Add(new ConfigError(p, "give \"provider\" (openai, anthropic, azure-openai, gemini) or \"header\""));
        if (c.Header is { } header && !IsToken(header)) errors.Add(new ConfigError(p + ".header", $"'{header}' is not a header name"));
        if (c.Prefix is { } prefix && prefix.Any(ch => ch is < ' ' or > '~')) errors.Add(new ConfigError(p + ".prefix", "must be visible ASCII or spaces"));
        if (c.Env.Length == 0) return;
        var value = Environment.GetEnvironmentVariable(c.Env);
        if (string.IsNullOrEmpty(value))
            errors.Add(new ConfigError(p + ".env", $"environment variable '{c.Env}' is not set (it holds the upstream credential; the secret never goes in the file)"));
        else if (value.Any(ch => ch is < ' ' or > '~'))
            errors.Add(new ConfigError(p + ".env", $"environment variable '{c.Env}' holds characters a header value cannot carry"));
    }

    private static readonly string[] s_standardMethods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"];

    /// <summary>"name:port" or "[v6]:port" (a bare IPv6 address without brackets is not a host name either way).</summary>
    private static bool HasPort(string host)
    {
        int colon = host.LastIndexOf(':');
        if (colon < 0 || colon == host.Length - 1) return false;
        if (host.StartsWith('[')) return host.IndexOf(']') == colon - 1;
        return host.IndexOf(':') == colon && host[(colon + 1)..].All(char.IsAsciiDigit);
    }

    private static bool IsHostName(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or ':' or '[' or ']');

    /// <summary>An HTTP token (RFC 9110 tchar+): a method or a header name.</summary>
    internal static bool IsToken(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c));

    private static string? Suggest(string name, IEnumerable<string> known) => ConfigReader.Suggest(name, known.ToArray());
}
