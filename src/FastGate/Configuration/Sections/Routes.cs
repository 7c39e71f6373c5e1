using System.Net;
using System.Text.Json;

namespace FastGate.Configuration;

// The routes section: what the user writes, how it is bound (errors with their JSON path) and checked.

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
    /// <summary>Id of a WAF profile in waf.profiles (Waf/WafConfig.cs), or null: not inspected.</summary>
    public string? Waf { get; init; }
    /// <summary>The unified OpenAI-compatible endpoint (Ai/AiConfig.cs); null: a plain proxy route.</summary>
    public FastGate.Ai.AiRouteConfig? Ai { get; init; }
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

/// <summary>Binds and checks <c>routes</c> (match, upstream credential, and the references to clusters and listeners).</summary>
internal static class RouteConfigBinder
{
    /// <summary><c>routes[]</c>.</summary>
    internal static readonly string[] RouteProperties =
        ConfigReader.Names(nameof(RouteConfig.Id), nameof(RouteConfig.Match), nameof(RouteConfig.Cluster), nameof(RouteConfig.StripPrefix),
        nameof(RouteConfig.PreserveHost), nameof(RouteConfig.RateLimits), nameof(RouteConfig.Auth), nameof(RouteConfig.Scopes),
        nameof(RouteConfig.Claims), nameof(RouteConfig.ForwardApiKey), nameof(RouteConfig.Cors), nameof(RouteConfig.Hsts),
        nameof(RouteConfig.UpstreamCredential), nameof(RouteConfig.RequestTimeout), nameof(RouteConfig.Waf), nameof(RouteConfig.Ai));

    /// <summary><c>routes[].match</c>.</summary>
    internal static readonly string[] RouteMatchProperties =
        ConfigReader.Names(nameof(RouteMatchConfig.Hosts), nameof(RouteMatchConfig.PathPrefix), nameof(RouteMatchConfig.Path),
        nameof(RouteMatchConfig.Methods));

    /// <summary><c>routes[].upstreamCredential</c>.</summary>
    internal static readonly string[] UpstreamCredentialProperties =
        ConfigReader.Names(nameof(UpstreamCredentialConfig.Provider), nameof(UpstreamCredentialConfig.Header),
        nameof(UpstreamCredentialConfig.Prefix), nameof(UpstreamCredentialConfig.Env));

    public static List<RouteConfig> Bind(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, nameof(GatewayConfig.Routes), true, (e, p) => BindRoute(e, p, r));

    private static RouteConfig BindRoute(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, RouteProperties);
        var match = new RouteMatchConfig();
        if (r.TryGet(e, p, nameof(RouteConfig.Match), true, out var m) && r.IsObject(m, ConfigReader.Child(p, nameof(RouteConfig.Match))))
        {
            var mp = ConfigReader.Child(p, nameof(RouteConfig.Match));
            r.CheckUnknown(m, mp, RouteMatchProperties);
            match = new RouteMatchConfig
            {
                Hosts = r.Strings(m, mp, nameof(RouteMatchConfig.Hosts)),
                PathPrefix = r.String(m, mp, nameof(RouteMatchConfig.PathPrefix)),
                Path = r.String(m, mp, nameof(RouteMatchConfig.Path)),
                Methods = r.Strings(m, mp, nameof(RouteMatchConfig.Methods)),
            };
        }
        string? strip = null;
        if (r.TryGet(e, p, nameof(RouteConfig.StripPrefix), false, out var s))
        {
            if (s.ValueKind == JsonValueKind.String) strip = s.GetString();
            else if (s.ValueKind == JsonValueKind.True) strip = match.PathPrefix ?? "";
            else if (s.ValueKind != JsonValueKind.False) r.Error(ConfigReader.Child(p, nameof(RouteConfig.StripPrefix)), "expected a path prefix string or true/false");
        }
        return new RouteConfig
        {
            Id = r.String(e, p, nameof(RouteConfig.Id), required: true) ?? "",
            Match = match,
            Cluster = r.String(e, p, nameof(RouteConfig.Cluster), required: true) ?? "",
            StripPrefix = strip,
            PreserveHost = r.Bool(e, p, nameof(RouteConfig.PreserveHost)) ?? false,
            RateLimits = r.Strings(e, p, nameof(RouteConfig.RateLimits)),
            Auth = r.Strings(e, p, nameof(RouteConfig.Auth)),
            Scopes = r.Strings(e, p, nameof(RouteConfig.Scopes)),
            Claims = Security.JwtConfigBinder.BindClaims(e, p, r),
            ForwardApiKey = r.Bool(e, p, nameof(RouteConfig.ForwardApiKey)) ?? false,
            Cors = r.String(e, p, nameof(RouteConfig.Cors)),
            Hsts = r.String(e, p, nameof(RouteConfig.Hsts)),
            UpstreamCredential = BindUpstreamCredential(e, p, r),
            RequestTimeout = r.Duration(e, p, nameof(RouteConfig.RequestTimeout)),
            Waf = r.String(e, p, nameof(RouteConfig.Waf)),
            Ai = FastGate.Ai.AiConfigBinder.Bind(e, p, r),
        };
    }

    private static UpstreamCredentialConfig? BindUpstreamCredential(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, nameof(RouteConfig.UpstreamCredential), false, out var c) || !r.IsObject(c, ConfigReader.Child(p, nameof(RouteConfig.UpstreamCredential)))) return null;
        var cp = ConfigReader.Child(p, nameof(RouteConfig.UpstreamCredential));
        r.CheckUnknown(c, cp, UpstreamCredentialProperties);
        return new UpstreamCredentialConfig
        {
            Provider = r.String(c, cp, nameof(UpstreamCredentialConfig.Provider)),
            Header = r.String(c, cp, nameof(UpstreamCredentialConfig.Header)),
            Prefix = r.String(c, cp, nameof(UpstreamCredentialConfig.Prefix)),
            Env = r.String(c, cp, nameof(UpstreamCredentialConfig.Env), required: true) ?? "",
        };
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
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
                var hint = ConfigValidator.Suggest(r.Cluster, clusterIds);
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
                else if (!ConfigValidator.IsHostName(name) || (name.Contains(':') && !(name.StartsWith('[') && name.EndsWith(']'))))
                    errors.Add(new ConfigError($"{p}.match.hosts[{h}]", $"'{host}' is not a host name, '*.example.com' or '*'"));
            }
            for (int k = 0; k < m.Methods.Count; k++)
            {
                var method = m.Methods[k];
                if (!ConfigValidator.IsToken(method)) errors.Add(new ConfigError($"{p}.match.methods[{k}]", $"'{method}' is not an HTTP method"));
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
            if (r.Ai is { } ai) FastGate.Ai.AiConfigBinder.Validate(ai, p + ".ai", config, errors);
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
        if (c.Header is { } header && !ConfigValidator.IsToken(header)) errors.Add(new ConfigError(p + ".header", $"'{header}' is not a header name"));
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
}
