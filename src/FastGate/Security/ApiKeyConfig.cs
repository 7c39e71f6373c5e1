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
    public static List<ConsumerConfig> BindConsumers(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", "consumers", false, (e, p) =>
        {
            r.CheckUnknown(e, p, "id", "groups", "apiKeys");
            return new ConsumerConfig
            {
                Id = r.String(e, p, "id", required: true) ?? "",
                Groups = r.Strings(e, p, "groups"),
                ApiKeys = r.Strings(e, p, "apiKeys"),
            };
        });

    public static ApiKeyOptionsConfig BindOptions(JsonElement root, ConfigReader r)
    {
        var d = new ApiKeyOptionsConfig();
        if (!r.TryGet(root, "$", "apiKeys", false, out var e) || !r.IsObject(e, "$.apiKeys")) return d;
        r.CheckUnknown(e, "$.apiKeys", "header", "queryParameter", "consumerHeader");
        return new ApiKeyOptionsConfig
        {
            Header = r.String(e, "$.apiKeys", "header") ?? d.Header,
            QueryParameter = r.String(e, "$.apiKeys", "queryParameter"),
            ConsumerHeader = r.String(e, "$.apiKeys", "consumerHeader") ?? d.ConsumerHeader,
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
            if (c.Id.Length > 0 && !ids.Add(c.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate consumer id '{c.Id}'"));
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
}
