using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Security;

/// <summary>A caller known to the gateway. API keys are stored only as SHA-256 hashes ("sha256:&lt;hex&gt;").</summary>
public sealed record ConsumerConfig
{
    public string Id { get; init; } = "";
    public IReadOnlyList<string> Groups { get; init; } = [];
    public IReadOnlyList<string> ApiKeys { get; init; } = [];
    /// <summary>The JWT identities this consumer owns. A token is a consumer only through such an entry; any other
    /// valid token is a subject (its issuer and subject), never a consumer.</summary>
    public IReadOnlyList<JwtIdentityConfig> Jwt { get; init; } = [];
}

/// <summary>
/// A JWT identity owned by a consumer: tokens of <see cref="Issuer"/> (a jwtIssuers id or its exact iss) whose
/// subject claim is <see cref="Subject"/>, or whose claim <see cref="Claim"/> has one of <see cref="Values"/>.
/// </summary>
public sealed record JwtIdentityConfig
{
    public string Issuer { get; init; } = "";
    public string? Subject { get; init; }
    public string? Claim { get; init; }
    public IReadOnlyList<string> Values { get; init; } = [];
}

/// <summary>Where API keys are read from, and what is forwarded upstream.</summary>
public sealed record ApiKeyOptionsConfig
{
    public string Header { get; init; } = "X-API-Key";
    /// <summary>A query parameter carrying the key; off unless named (keys in URLs end up in logs).</summary>
    public string? QueryParameter { get; init; }
    public string ConsumerHeader { get; init; } = "X-Consumer-Id";
}

public static class ApiKeys
{
    public const string Prefix = "sha256:";

    /// <summary>"sha256:&lt;64 lower-case hex&gt;" of a key, as `fastgate hash-key` prints it.</summary>
    public static string Hash(string key) => Prefix + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>A new random key (32 bytes, base64url) for `fastgate new-key`.</summary>
    public static string NewKey() => "fg_" + Base64UrlEncode(RandomNumberGenerator.GetBytes(32));

    private static string Base64UrlEncode(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    internal static bool TryParseHash(string text, out byte[] digest)
    {
        digest = [];
        if (!text.StartsWith(Prefix, StringComparison.Ordinal) || text.Length != Prefix.Length + 64) return false;
        try
        {
            digest = Convert.FromHexString(text.AsSpan(Prefix.Length));
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}

internal static class ApiKeyConfigBinder
{
    /// <summary><c>consumers[]</c>.</summary>
    internal static readonly string[] ConsumerProperties =
        ConfigReader.Names(nameof(ConsumerConfig.Id), nameof(ConsumerConfig.Groups), nameof(ConsumerConfig.ApiKeys),
        nameof(ConsumerConfig.Jwt));
    /// <summary><c>consumers[].jwt[]</c>.</summary>
    internal static readonly string[] JwtIdentityProperties =
        ConfigReader.Names(nameof(JwtIdentityConfig.Issuer), nameof(JwtIdentityConfig.Subject), nameof(JwtIdentityConfig.Claim),
        nameof(JwtIdentityConfig.Values));
    /// <summary><c>apiKeys</c>.</summary>
    internal static readonly string[] OptionsProperties =
        ConfigReader.Names(nameof(ApiKeyOptionsConfig.Header), nameof(ApiKeyOptionsConfig.QueryParameter),
        nameof(ApiKeyOptionsConfig.ConsumerHeader));

    public static List<ConsumerConfig> BindConsumers(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", nameof(GatewayConfig.Consumers), false, (e, p) =>
        {
            r.CheckUnknown(e, p, ConsumerProperties);
            return new ConsumerConfig
            {
                Id = r.String(e, p, nameof(ConsumerConfig.Id), required: true) ?? "",
                Groups = r.Strings(e, p, nameof(ConsumerConfig.Groups)),
                ApiKeys = r.Strings(e, p, nameof(ConsumerConfig.ApiKeys)),
                Jwt = r.Objects(e, p, nameof(ConsumerConfig.Jwt), false, (j, jp) =>
                {
                    r.CheckUnknown(j, jp, JwtIdentityProperties);
                    return new JwtIdentityConfig
                    {
                        Issuer = r.String(j, jp, nameof(JwtIdentityConfig.Issuer), required: true) ?? "",
                        Subject = r.String(j, jp, nameof(JwtIdentityConfig.Subject)),
                        Claim = r.String(j, jp, nameof(JwtIdentityConfig.Claim)),
                        Values = r.Strings(j, jp, nameof(JwtIdentityConfig.Values)),
                    };
                }),
            };
        });

    public static ApiKeyOptionsConfig BindOptions(JsonElement root, ConfigReader r)
    {
        var d = new ApiKeyOptionsConfig();
        if (!r.TryGet(root, "$", nameof(ConsumerConfig.ApiKeys), false, out var e) || !r.IsObject(e, "$.apiKeys")) return d;
        r.CheckUnknown(e, "$.apiKeys", OptionsProperties);
        return new ApiKeyOptionsConfig
        {
            Header = r.String(e, "$.apiKeys", nameof(ApiKeyOptionsConfig.Header)) ?? d.Header,
            QueryParameter = r.String(e, "$.apiKeys", nameof(ApiKeyOptionsConfig.QueryParameter)),
            ConsumerHeader = r.String(e, "$.apiKeys", nameof(ApiKeyOptionsConfig.ConsumerHeader)) ?? d.ConsumerHeader,
        };
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Consumers.Count; i++)
        {
            var c = config.Consumers[i];
            string p = $"$.consumers[{i}]";
            if (c.Id.Length == 0) errors.Add(new ConfigError(p + ".id", "must not be empty"));
            else if (!ids.Add(c.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate consumer id '{c.Id}'"));
            else if (c.Id.Any(ch => ch < 0x21 || ch > 0x7E))
                errors.Add(new ConfigError(p + ".id", "a consumer id is forwarded in a header: use printable ASCII without spaces"));
            for (int k = 0; k < c.ApiKeys.Count; k++)
            {
                var key = c.ApiKeys[k];
                if (!ApiKeys.TryParseHash(key, out _))
                    errors.Add(new ConfigError($"{p}.apiKeys[{k}]", "expected \"sha256:<64 hex digits>\" (a hash, never the key itself: `fastgate hash-key <key>` prints it)"));
                else if (hashes.TryGetValue(key.ToLowerInvariant(), out var owner))
                    errors.Add(new ConfigError($"{p}.apiKeys[{k}]", $"this key already belongs to consumer '{owner}'"));
                else hashes[key.ToLowerInvariant()] = c.Id;
            }
        }
        ValidateJwtIdentities(config, errors);
        var issuerIds = config.JwtIssuers.Select(i => i.Id).ToArray();
        for (int i = 0; i < config.Routes.Count; i++)
        {
            var route = config.Routes[i];
            for (int j = 0; j < route.Auth.Count; j++)
                if (AuthRequirement.CheckScheme(route.Auth[j], issuerIds, config.Devices.Count > 0) is { } error)
                    errors.Add(new ConfigError($"$.routes[{i}].auth[{j}]", error));
            if ((route.Scopes.Count > 0 || route.Claims.Count > 0) && !route.Auth.Any(s => s.StartsWith("jwt", StringComparison.Ordinal)))
                errors.Add(new ConfigError($"$.routes[{i}].{(route.Scopes.Count > 0 ? "scopes" : "claims")}",
                    "scopes and claims come from tokens: list \"jwt\" (or \"jwt:<issuer>\") in the route's auth"));
        }
    }

    /// <summary>consumers[].jwt: a known issuer, exactly one of subject or claim+values, no identity owned twice.</summary>
    private static void ValidateJwtIdentities(GatewayConfig config, List<ConfigError> errors)
    {
        var owners = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Consumers.Count; i++)
        {
            var c = config.Consumers[i];
            for (int k = 0; k < c.Jwt.Count; k++)
            {
                var j = c.Jwt[k];
                string p = $"$.consumers[{i}].jwt[{k}]";
                int issuer = JwtConfigBinder.CheckIssuerReference(config.JwtIssuers, j.Issuer, p + ".issuer", errors);
                if ((j.Subject is null) == (j.Claim is null))
                {
                    errors.Add(new ConfigError(p, "give either subject (the token's subject claim) or claim with values, not both"));
                    continue;
                }
                if (j.Subject is { } subject)
                {
                    if (subject.Length == 0) errors.Add(new ConfigError(p + ".subject", "must not be empty"));
                    if (j.Values.Count > 0) errors.Add(new ConfigError(p + ".values", "values go with claim, not with subject"));
                    if (issuer >= 0) Own($"{issuer}\u001fsub\u001f{subject}", p + ".subject", c.Id, owners, errors);
                    continue;
                }
                if (j.Claim!.Length == 0) errors.Add(new ConfigError(p + ".claim", "must not be empty"));
                if (j.Values.Count == 0) errors.Add(new ConfigError(p + ".values", "list at least one claim value this consumer owns"));
                for (int v = 0; v < j.Values.Count; v++)
                    if (issuer >= 0) Own($"{issuer}\u001f{j.Claim}\u001f{j.Values[v]}", $"{p}.values[{v}]", c.Id, owners, errors);
            }
        }
    }

    private static void Own(string identity, string path, string consumer, Dictionary<string, string> owners, List<ConfigError> errors)
    {
        if (owners.TryGetValue(identity, out var owner) && owner != consumer)
            errors.Add(new ConfigError(path, $"this JWT identity already belongs to consumer '{owner}'"));
        else owners[identity] = consumer;
    }
}
