using System.Text.Json;
using FastGate.RateLimiting;

namespace FastGate.Configuration;

/// <summary>One entry of the top-level <c>rateLimits</c> list.</summary>
public sealed record RateLimitConfig
{
    public string Id { get; init; } = "";
    public string Algorithm { get; init; } = "gcra";
    public long Rate { get; init; }
    public TimeSpan Per { get; init; } = TimeSpan.FromSeconds(1);
    public long? Burst { get; init; }
    /// <summary>clientIp, consumer, apiKey, subject (a token's issuer and subject), route, device, header:&lt;name&gt;, claim:&lt;name&gt;, or several (composite).</summary>
    public IReadOnlyList<string> Key { get; init; } = ["clientIp"];
    public string MissingKey { get; init; } = "shared";
    public int MaxKeys { get; init; } = RateLimiterDefinition.DefaultMaxKeys;
    public int Status { get; init; } = 429;
    public bool Headers { get; init; }
    public bool LegacyHeaders { get; init; }
    public string Scope { get; init; } = "local";
    public string OnStoreFailure { get; init; } = "local";
    public TimeSpan? StoreTimeout { get; init; }
    /// <summary>"requests" (each request costs 1) or "tokens" (an LLM token quota: a request is refused while the key
    /// is out of tokens, and each response is charged the tokens its body reports; docs/ai-gateway.md).</summary>
    public string Unit { get; init; } = "requests";
    public bool CountsTokens => Unit == "tokens";
    /// <summary>The compiled definition (set by the binder when the entry is valid).</summary>
    public RateLimiterDefinition? Definition { get; init; }
}

public sealed record RedisConfig
{
    /// <summary>A StackExchange.Redis configuration string: "host:port", several endpoints, or Sentinel
    /// ("sentinel1:26379,sentinel2:26379,serviceName=mymaster").</summary>
    public string Connection { get; init; } = "127.0.0.1:6379";
    public string KeyPrefix { get; init; } = "fastgate:rl:";
    /// <summary>This gateway's member id in the cluster (default: host name, process id and a random suffix).</summary>
    public string? Instance { get; init; }
    /// <summary>How often the gateway reports its config version and health (docs/cluster.md).</summary>
    public TimeSpan Heartbeat { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>A member not heard from for this long is dropped from the member list.</summary>
    public TimeSpan MemberTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Cluster concurrency limits: slots held by a gateway that stopped renewing come back after this.</summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>Binds <c>rateLimits</c> and <c>redis</c>; each limiter is checked by <see cref="RateLimiterDefinition.Create"/>.</summary>
internal static class RateLimitConfigBinder
{
    /// <summary><c>rateLimits[]</c>.</summary>
    internal static readonly string[] RateLimitProperties =
        ConfigReader.Names(nameof(RateLimitConfig.Id), nameof(RateLimitConfig.Algorithm), nameof(RateLimitConfig.Rate),
        nameof(RateLimitConfig.Per), nameof(RateLimitConfig.Burst), nameof(RateLimitConfig.Key), nameof(RateLimitConfig.MissingKey),
        nameof(RateLimitConfig.MaxKeys), nameof(RateLimitConfig.Status), nameof(RateLimitConfig.Headers),
        nameof(RateLimitConfig.LegacyHeaders), nameof(RateLimitConfig.Scope), nameof(RateLimitConfig.OnStoreFailure),
        nameof(RateLimitConfig.StoreTimeout), nameof(RateLimitConfig.Unit));
    /// <summary><c>redis</c>.</summary>
    internal static readonly string[] RedisProperties = ConfigReader.Names(nameof(RedisConfig.Connection), nameof(RedisConfig.KeyPrefix),
        nameof(RedisConfig.Instance), nameof(RedisConfig.Heartbeat), nameof(RedisConfig.MemberTimeout), nameof(RedisConfig.LeaseTtl));

    public static readonly string[] KeyKinds = ["clientIp", "consumer", "apiKey", "subject", "route", "device"];

    public static List<RateLimitConfig> BindLimits(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", nameof(GatewayConfig.RateLimits), false, (e, p) =>
        {
            r.CheckUnknown(e, p, RateLimitProperties);
            var keys = new List<string>();
            if (r.TryGet(e, p, nameof(RateLimitConfig.Key), false, out var k))
            {
                if (k.ValueKind == JsonValueKind.String) keys.Add(k.GetString()!);
                else keys.AddRange(r.Strings(e, p, nameof(RateLimitConfig.Key)));
            }
            if (keys.Count == 0) keys.Add("clientIp");
            for (int i = 0; i < keys.Count; i++)
            {
                var key = keys[i];
                bool ok = KeyKinds.Contains(key) || (key.StartsWith("header:", StringComparison.Ordinal) && key.Length > 7)
                          || (key.StartsWith("claim:", StringComparison.Ordinal) && key.Length > 6);
                if (!ok) r.Error(p + ".key", $"'{key}' is not a key: use clientIp, consumer, apiKey, subject, route, device, header:<name>, claim:<name> or a list of them");
            }
            var c = new RateLimitConfig
            {
                Id = r.String(e, p, nameof(RateLimitConfig.Id), required: true) ?? "",
                Algorithm = r.String(e, p, nameof(RateLimitConfig.Algorithm)) ?? "gcra",
                Rate = r.Integer(e, p, nameof(RateLimitConfig.Rate), 1, long.MaxValue) ?? 0,
                Per = r.Duration(e, p, nameof(RateLimitConfig.Per)) ?? TimeSpan.FromSeconds(1),
                Burst = r.Integer(e, p, nameof(RateLimitConfig.Burst), 1, long.MaxValue),
                Key = keys,
                MissingKey = r.String(e, p, nameof(RateLimitConfig.MissingKey)) ?? "shared",
                MaxKeys = (int)(r.Integer(e, p, nameof(RateLimitConfig.MaxKeys), 1, 100_000_000) ?? RateLimiterDefinition.DefaultMaxKeys),
                Status = (int)(r.Integer(e, p, nameof(RateLimitConfig.Status), 100, 599) ?? 429),
                Headers = r.Bool(e, p, nameof(RateLimitConfig.Headers)) ?? false,
                LegacyHeaders = r.Bool(e, p, nameof(RateLimitConfig.LegacyHeaders)) ?? false,
                Scope = r.String(e, p, nameof(RateLimitConfig.Scope)) ?? "local",
                OnStoreFailure = r.String(e, p, nameof(RateLimitConfig.OnStoreFailure)) ?? "local",
                StoreTimeout = r.Duration(e, p, nameof(RateLimitConfig.StoreTimeout)),
                Unit = r.String(e, p, nameof(RateLimitConfig.Unit)) ?? "requests",
            };
            if (c.Unit is not ("requests" or "tokens")) r.Error(p + ".unit", $"'{c.Unit}' is not requests or tokens");
            else if (c.CountsTokens && c.Algorithm != "gcra")
                r.Error(p + ".algorithm", "a token quota (unit tokens) uses gcra: responses are charged after the fact, which only gcra can do");
            if (!r.TryGet(e, p, nameof(RateLimitConfig.Rate), false, out _)) r.Error(p + ".rate", "is required");
            var algorithm = c.Algorithm switch
            {
                "gcra" => RateLimitAlgorithm.Gcra,
                "slidingWindow" => RateLimitAlgorithm.SlidingWindow,
                "concurrency" => RateLimitAlgorithm.Concurrency,
                _ => (RateLimitAlgorithm?)null,
            };
            if (algorithm is null) { r.Error(p + ".algorithm", $"'{c.Algorithm}' is not gcra, slidingWindow or concurrency"); return c; }
            MissingKeyBehavior? missing = c.MissingKey switch { "deny" => MissingKeyBehavior.Deny, "allow" => MissingKeyBehavior.Allow, "shared" => MissingKeyBehavior.SharedBucket, _ => null };
            if (missing is null) { r.Error(p + ".missingKey", $"'{c.MissingKey}' is not deny, allow or shared"); return c; }
            RateLimitScope? scope = c.Scope switch { "local" => RateLimitScope.Local, "cluster" => RateLimitScope.Cluster, _ => null };
            if (scope is null) { r.Error(p + ".scope", $"'{c.Scope}' is not local or cluster"); return c; }
            StoreFailureMode? failure = c.OnStoreFailure switch { "allow" => StoreFailureMode.Allow, "deny" => StoreFailureMode.Deny, "local" => StoreFailureMode.Local, _ => null };
            if (failure is null) { r.Error(p + ".onStoreFailure", $"'{c.OnStoreFailure}' is not allow, deny or local"); return c; }
            if (c.Rate <= 0) return c;
            var errors = new List<string>();
            var definition = RateLimiterDefinition.Create(errors, c.Id, algorithm.Value, c.Rate, c.Per, c.Burst, c.MaxKeys, missing.Value,
                c.Status, c.Headers, c.LegacyHeaders, scope.Value, failure.Value, c.StoreTimeout);
            foreach (var error in errors) r.Error(p, error);
            return c with { Definition = definition };
        });

    public static RedisConfig? BindRedis(JsonElement root, ConfigReader r)
    {
        if (!r.TryGet(root, "$", nameof(GatewayConfig.Redis), false, out var e) || !r.IsObject(e, "$.redis")) return null;
        r.CheckUnknown(e, "$.redis", RedisProperties);
        var d = new RedisConfig();
        var c = new RedisConfig
        {
            Connection = r.String(e, "$.redis", nameof(RedisConfig.Connection)) ?? d.Connection,
            KeyPrefix = r.String(e, "$.redis", nameof(RedisConfig.KeyPrefix)) ?? d.KeyPrefix,
            Instance = r.String(e, "$.redis", nameof(RedisConfig.Instance)),
            Heartbeat = r.Duration(e, "$.redis", nameof(RedisConfig.Heartbeat)) ?? d.Heartbeat,
            MemberTimeout = r.Duration(e, "$.redis", nameof(RedisConfig.MemberTimeout)) ?? d.MemberTimeout,
            LeaseTtl = r.Duration(e, "$.redis", nameof(RedisConfig.LeaseTtl)) ?? d.LeaseTtl,
        };
        if (c.Instance is { } id && (id.Length is 0 or > 64 || id.Any(ch => ch < 0x21 || ch > 0x7E)))
            r.Error("$.redis.instance", "must be 1-64 visible ASCII characters");
        if (c.Heartbeat < TimeSpan.FromMilliseconds(100) || c.Heartbeat > TimeSpan.FromMinutes(1))
            r.Error("$.redis.heartbeat", "must be between 100ms and 1m");
        if (c.MemberTimeout < 2 * c.Heartbeat)
            r.Error("$.redis.memberTimeout", "must be at least twice the heartbeat (a member would drop out between two heartbeats)");
        if (c.LeaseTtl < TimeSpan.FromMilliseconds(300) || c.LeaseTtl > TimeSpan.FromHours(1))
            r.Error("$.redis.leaseTtl", "must be between 300ms and 1h");
        return c;
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.RateLimits.Count; i++)
        {
            var l = config.RateLimits[i];
            if (l.Id.Length > 0 && !ids.Add(l.Id)) errors.Add(new ConfigError($"$.rateLimits[{i}].id", $"duplicate rate limit id '{l.Id}'"));
            if (l.Scope == "cluster" && config.Redis is null)
                errors.Add(new ConfigError($"$.rateLimits[{i}].scope", "scope 'cluster' needs a top-level \"redis\": { \"connection\": \"host:port\" }"));
        }
        for (int i = 0; i < config.Routes.Count; i++)
        {
            var refs = config.Routes[i].RateLimits;
            for (int j = 0; j < refs.Count; j++)
                if (!ids.Contains(refs[j]))
                    errors.Add(new ConfigError($"$.routes[{i}].rateLimits[{j}]", $"unknown rate limit '{refs[j]}'" + Hint(refs[j], ids)));
        }
        // rateLimit actions in policies are checked by PolicyValidator against the same ids.
    }

    private static string Hint(string name, HashSet<string> ids) =>
        ConfigReader.Suggest(name, ids.ToArray()) is { } s ? $"; did you mean '{s}'?" : "";
}
