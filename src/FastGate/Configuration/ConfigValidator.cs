using System.Net;

namespace FastGate.Configuration;

/// <summary>
/// Semantic checks on a bound config, one validator per concern. Every validator runs and adds every error it
/// finds; the config applies only when the list stays empty. Each section checks itself in its own module
/// (Configuration/Sections/, Security/, Policy/, Observability/); what is left here spans sections (timeouts of
/// limits and routes, trusted proxies) or is shared by them (addresses, host names, tokens).
/// </summary>
public static class ConfigValidator
{
    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        ListenerConfigBinder.Validate(config, errors);
        ClusterConfigBinder.Validate(config, errors);
        RouteConfigBinder.Validate(config, errors);
        RateLimitConfigBinder.Validate(config, errors);
        Security.ApiKeyConfigBinder.Validate(config, errors);
        Security.CorsConfigBinder.Validate(config, errors);
        Security.JwtConfigBinder.Validate(config, errors);
        Security.DeviceConfigBinder.Validate(config, errors);
        Policy.PolicyValidator.Validate(config, errors);
        Waf.WafConfigBinder.Validate(config, errors);
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
        ClusterConfigBinder.Warnings(config, warnings);
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

    internal static bool IsHostName(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or ':' or '[' or ']');

    /// <summary>An HTTP token (RFC 9110 tchar+): a method or a header name.</summary>
    internal static bool IsToken(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c));

    internal static string? Suggest(string name, IEnumerable<string> known) => ConfigReader.Suggest(name, known.ToArray());
}
