using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Security;

/// <summary>
/// A trusted token issuer (OAuth 2.0 / OpenID Connect). Its keys come from exactly one source: a JWKS URL, an
/// OpenID discovery document, PEM public key files, or a shared secret (HS*). Keys named inside a token
/// (<c>jku</c>, <c>x5u</c>, <c>jwk</c>) are never used.
/// </summary>
public sealed record JwtIssuerConfig
{
    public string Id { get; init; } = "";
    /// <summary>The exact <c>iss</c> value. With discovery it may be left out: the document's issuer is used.</summary>
    public string? Issuer { get; init; }
    public IReadOnlyList<string> Audiences { get; init; } = [];
    public string? JwksUri { get; init; }
    public string? Discovery { get; init; }
    /// <summary>PEM files holding public keys (RSA or EC), relative to the config file.</summary>
    public IReadOnlyList<string> Keys { get; init; } = [];
    public string? Secret { get; init; }
    public string? SecretEnv { get; init; }
    /// <summary>The signature algorithms accepted for this issuer; "none" is never accepted.</summary>
    public IReadOnlyList<string> Algorithms { get; init; } = [];
    public TimeSpan ClockSkew { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How often the key set is fetched again on schedule.</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromHours(1);
    /// <summary>A token with an unknown kid may trigger a fetch at most this often.</summary>
    public TimeSpan UnknownKidRefreshInterval { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Key and discovery URLs must be https unless this is false (local test issuers).</summary>
    public bool RequireHttps { get; init; } = true;
    /// <summary>The claim naming the caller: with the issuer it is the token's identity (the subject), forwarded as
    /// X-Subject-Id; it is a consumer only when a consumer lists it (<see cref="ConsumerConfig.Jwt"/>).</summary>
    public string SubjectClaim { get; init; } = "sub";

    public string? ResolveSecret() =>
        !string.IsNullOrEmpty(Secret) ? Secret : SecretEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
}

/// <summary>Options shared by every issuer (the top-level <c>jwt</c> object).</summary>
public sealed record JwtOptionsConfig
{
    /// <summary>Longer bearer tokens are refused before any parsing.</summary>
    public int MaxTokenBytes { get; init; } = 8192;
    /// <summary>Validated tokens remembered (keyed by a hash of the token, until exp).</summary>
    public int CacheSize { get; init; } = 16384;
    /// <summary>The header carrying a token's subject upstream (non-ASCII percent-encoded; a client's copy is always removed).</summary>
    public string SubjectHeader { get; init; } = "X-Subject-Id";
    /// <summary>The header carrying the token's issuer (its iss) upstream (a client's copy is always removed).</summary>
    public string IssuerHeader { get; init; } = "X-Subject-Issuer";
}

internal static class JwtConfigBinder
{
    /// <summary><c>jwtIssuers[]</c>.</summary>
    internal static readonly string[] IssuerProperties =
        ConfigReader.Names(nameof(JwtIssuerConfig.Id), nameof(JwtIssuerConfig.Issuer), nameof(JwtIssuerConfig.Audiences),
        nameof(JwtIssuerConfig.JwksUri), nameof(JwtIssuerConfig.Discovery), nameof(JwtIssuerConfig.Keys), nameof(JwtIssuerConfig.Secret),
        nameof(JwtIssuerConfig.SecretEnv), nameof(JwtIssuerConfig.Algorithms), nameof(JwtIssuerConfig.ClockSkew),
        nameof(JwtIssuerConfig.RefreshInterval), nameof(JwtIssuerConfig.UnknownKidRefreshInterval), nameof(JwtIssuerConfig.RequireHttps),
        nameof(JwtIssuerConfig.SubjectClaim));
    /// <summary><c>jwt</c>.</summary>
    internal static readonly string[] OptionsProperties =
        ConfigReader.Names(nameof(JwtOptionsConfig.MaxTokenBytes), nameof(JwtOptionsConfig.CacheSize),
        nameof(JwtOptionsConfig.SubjectHeader), nameof(JwtOptionsConfig.IssuerHeader));

    public static readonly string[] SupportedAlgorithms =
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"];

    public static List<JwtIssuerConfig> BindIssuers(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", nameof(GatewayConfig.JwtIssuers), false, (e, p) =>
        {
            r.CheckUnknown(e, p, IssuerProperties);
            var d = new JwtIssuerConfig();
            return new JwtIssuerConfig
            {
                Id = r.String(e, p, nameof(JwtIssuerConfig.Id), required: true) ?? "",
                Issuer = r.String(e, p, nameof(JwtIssuerConfig.Issuer)),
                Audiences = r.Strings(e, p, nameof(JwtIssuerConfig.Audiences)),
                JwksUri = r.String(e, p, nameof(JwtIssuerConfig.JwksUri)),
                Discovery = r.String(e, p, nameof(JwtIssuerConfig.Discovery)),
                Keys = r.Strings(e, p, nameof(JwtIssuerConfig.Keys)),
                Secret = r.String(e, p, nameof(JwtIssuerConfig.Secret)),
                SecretEnv = r.String(e, p, nameof(JwtIssuerConfig.SecretEnv)),
                Algorithms = r.Strings(e, p, nameof(JwtIssuerConfig.Algorithms)),
                ClockSkew = r.Duration(e, p, nameof(JwtIssuerConfig.ClockSkew)) ?? d.ClockSkew,
                RefreshInterval = r.Duration(e, p, nameof(JwtIssuerConfig.RefreshInterval)) ?? d.RefreshInterval,
                UnknownKidRefreshInterval = r.Duration(e, p, nameof(JwtIssuerConfig.UnknownKidRefreshInterval)) ?? d.UnknownKidRefreshInterval,
                RequireHttps = r.Bool(e, p, nameof(JwtIssuerConfig.RequireHttps)) ?? d.RequireHttps,
                SubjectClaim = r.String(e, p, nameof(JwtIssuerConfig.SubjectClaim)) ?? d.SubjectClaim,
            };
        });

    public static JwtOptionsConfig BindOptions(JsonElement root, ConfigReader r)
    {
        var d = new JwtOptionsConfig();
        if (!r.TryGet(root, "$", nameof(GatewayConfig.Jwt), false, out var e) || !r.IsObject(e, "$.jwt")) return d;
        r.CheckUnknown(e, "$.jwt", OptionsProperties);
        return new JwtOptionsConfig
        {
            MaxTokenBytes = (int)(r.Integer(e, "$.jwt", nameof(JwtOptionsConfig.MaxTokenBytes), 256, 1 << 20) ?? d.MaxTokenBytes),
            CacheSize = (int)(r.Integer(e, "$.jwt", nameof(JwtOptionsConfig.CacheSize), 0, 1 << 22) ?? d.CacheSize),
            SubjectHeader = r.String(e, "$.jwt", nameof(JwtOptionsConfig.SubjectHeader)) ?? d.SubjectHeader,
            IssuerHeader = r.String(e, "$.jwt", nameof(JwtOptionsConfig.IssuerHeader)) ?? d.IssuerHeader,
        };
    }

    /// <summary>
    /// The index of the issuer a config entry names: its jwtIssuers id, or its exact configured iss. -1 when none
    /// does, -2 when the name is one issuer's id and another's iss.
    /// </summary>
    public static int ResolveIssuer(IReadOnlyList<JwtIssuerConfig> issuers, string name)
    {
        int byId = -1, byIss = -1;
        for (int i = 0; i < issuers.Count; i++)
        {
            if (byId < 0 && issuers[i].Id == name) byId = i;
            if (byIss < 0 && issuers[i].Issuer == name) byIss = i;
        }
        if (byId >= 0 && byIss >= 0 && byId != byIss) return -2;
        return byId >= 0 ? byId : byIss;
    }

    /// <summary>Validates an issuer reference (see <see cref="ResolveIssuer"/>); returns its index or a negative value.</summary>
    public static int CheckIssuerReference(IReadOnlyList<JwtIssuerConfig> issuers, string name, string path, List<ConfigError> errors)
    {
        if (name.Length == 0) return -1; // reported as missing by the binder
        int i = ResolveIssuer(issuers, name);
        if (i == -2) errors.Add(new ConfigError(path, $"'{name}' is one issuer's id and another's iss; name the issuer by its id"));
        else if (i < 0)
        {
            var hint = ConfigReader.Suggest(name, issuers.Select(x => x.Id).ToArray());
            errors.Add(new ConfigError(path, $"no jwtIssuers entry has id or issuer '{name}'" + (hint is null ? "" : $"; did you mean '{hint}'?")));
        }
        return i;
    }

    /// <summary><c>"claims": { "role": ["admin", "ops"], "tenant": "acme", "email_verified": [] }</c>.</summary>
    public static List<ClaimRequirement> BindClaims(JsonElement obj, string path, ConfigReader r)
    {
        var list = new List<ClaimRequirement>();
        if (!r.TryGet(obj, path, nameof(RouteConfig.Claims), false, out var c)) return list;
        var cp = ConfigReader.Child(path, nameof(RouteConfig.Claims));
        if (c.ValueKind != JsonValueKind.Object)
        {
            r.Error(cp, "expected an object of claim names to a value or a list of values, such as { \"role\": [\"admin\"] }");
            return list;
        }
        foreach (var prop in c.EnumerateObject())
        {
            if (prop.Value.ValueKind == JsonValueKind.String) list.Add(new ClaimRequirement(prop.Name, [prop.Value.GetString()!]));
            else if (prop.Value.ValueKind == JsonValueKind.Array) list.Add(new ClaimRequirement(prop.Name, r.Strings(c, cp, prop.Name).ToArray()));
            else r.Error(ConfigReader.Child(cp, prop.Name), "expected a string or a list of strings");
        }
        return list;
    }

    /// <summary>The algorithms an issuer accepts when it lists none: HS256 for a secret, else the common asymmetric ones.</summary>
    public static IReadOnlyList<string> EffectiveAlgorithms(JwtIssuerConfig c) =>
        c.Algorithms.Count > 0 ? c.Algorithms : HasSecret(c) ? ["HS256"] : ["RS256", "ES256"];

    private static bool HasSecret(JwtIssuerConfig c) => !string.IsNullOrEmpty(c.Secret) || !string.IsNullOrEmpty(c.SecretEnv);

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        CheckHeaderName(config.Jwt.SubjectHeader, "$.jwt.subjectHeader", errors);
        CheckHeaderName(config.Jwt.IssuerHeader, "$.jwt.issuerHeader", errors);
        if (string.Equals(config.Jwt.SubjectHeader, config.Jwt.IssuerHeader, StringComparison.OrdinalIgnoreCase))
            errors.Add(new ConfigError("$.jwt.issuerHeader", "must differ from subjectHeader"));
        foreach (var (name, path) in new[] { (config.Jwt.SubjectHeader, "$.jwt.subjectHeader"), (config.Jwt.IssuerHeader, "$.jwt.issuerHeader") })
            if (string.Equals(name, config.ApiKeys.ConsumerHeader, StringComparison.OrdinalIgnoreCase))
                errors.Add(new ConfigError(path, $"must differ from apiKeys.consumerHeader ('{config.ApiKeys.ConsumerHeader}'): a subject is not a consumer"));
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.JwtIssuers.Count; i++)
        {
            var c = config.JwtIssuers[i];
            string p = $"$.jwtIssuers[{i}]";
            if (c.Id.Length > 0 && !ids.Add(c.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate issuer id '{c.Id}'"));
            if (c.Id.Contains(':')) errors.Add(new ConfigError(p + ".id", "an issuer id cannot contain ':' (routes name it as \"jwt:<id>\")"));
            int sources = (c.JwksUri is null ? 0 : 1) + (c.Discovery is null ? 0 : 1) + (c.Keys.Count == 0 ? 0 : 1) + (HasSecret(c) ? 1 : 0);
            if (sources != 1)
                errors.Add(new ConfigError(p, "give exactly one key source: jwksUri, discovery, keys (PEM files) or secret/secretEnv"));
            if (c.Issuer is null && c.Discovery is null) errors.Add(new ConfigError(p + ".issuer", "is required (the exact iss value)"));
            if (c.Audiences.Count == 0) errors.Add(new ConfigError(p + ".audiences", "list at least one accepted audience (aud is always checked)"));
            CheckUrl(c.JwksUri, p + ".jwksUri", c.RequireHttps, errors);
            CheckUrl(c.Discovery, p + ".discovery", c.RequireHttps, errors);
            if (c.Secret is { Length: > 0 } && c.Secret.Length < 32)
                errors.Add(new ConfigError(p + ".secret", "an HS* secret must be at least 32 bytes"));
            if (c.SecretEnv is { Length: > 0 } env && string.IsNullOrEmpty(Environment.GetEnvironmentVariable(env)))
                errors.Add(new ConfigError(p + ".secretEnv", $"environment variable '{env}' is not set"));
            for (int k = 0; k < c.Keys.Count; k++)
            {
                if (!config.Files.TryResolve(config.BaseDirectory, c.Keys[k], out var file, out var refused))
                {
                    errors.Add(new ConfigError($"{p}.keys[{k}]", refused!));
                    continue;
                }
                if (!File.Exists(file)) { errors.Add(new ConfigError($"{p}.keys[{k}]", $"file not found: {file}")); continue; }
                try
                {
                    JwtKeys.ReadPemKeys(File.ReadAllText(file), c.Keys[k]);
                }
                catch (Exception ex) when (ex is FormatException or ArgumentException or System.Security.Cryptography.CryptographicException)
                {
                    errors.Add(new ConfigError($"{p}.keys[{k}]", ex.Message));
                }
            }
            for (int a = 0; a < c.Algorithms.Count; a++)
            {
                var alg = c.Algorithms[a];
                string ap = $"{p}.algorithms[{a}]";
                if (alg.Equals("none", StringComparison.OrdinalIgnoreCase))
                    errors.Add(new ConfigError(ap, "'none' (unsigned tokens) is never accepted"));
                else if (!SupportedAlgorithms.Contains(alg))
                    errors.Add(new ConfigError(ap, $"'{alg}' is not supported (supported: {string.Join(", ", SupportedAlgorithms)})"));
                else if (alg.StartsWith("HS", StringComparison.Ordinal) != HasSecret(c))
                    errors.Add(new ConfigError(ap, HasSecret(c)
                        ? $"'{alg}' needs a public key; this issuer has a shared secret (use HS256/HS384/HS512)"
                        : $"'{alg}' is an HMAC algorithm; it is only accepted with a shared secret, never with an asymmetric key"));
            }
        }
    }

    private static void CheckHeaderName(string name, string path, List<ConfigError> errors)
    {
        if (!Policy.PolicyValidator.IsToken(name)) errors.Add(new ConfigError(path, $"'{name}' is not a header name"));
    }

    private static void CheckUrl(string? url, string path, bool requireHttps, List<ConfigError> errors)
    {
        if (url is null) return;
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != "https" && uri.Scheme != "http"))
            errors.Add(new ConfigError(path, $"'{url}' is not an absolute http(s) URL"));
        else if (requireHttps && uri.Scheme != "https")
            errors.Add(new ConfigError(path, "must be https (set requireHttps: false only for a local test issuer)"));
    }
}
