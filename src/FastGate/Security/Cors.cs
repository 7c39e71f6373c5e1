using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Http;

namespace FastGate.Security;

/// <summary>A named CORS profile, referenced by a route's <c>"cors": "&lt;id&gt;"</c>.</summary>
public sealed record CorsConfig
{
    public string Id { get; init; } = "";
    /// <summary>Exact origins ("https://app.example.com"), wildcards ("https://*.example.com") or "*".</summary>
    public IReadOnlyList<string> Origins { get; init; } = [];
    public IReadOnlyList<string> Methods { get; init; } = ["GET", "HEAD", "POST"];
    public IReadOnlyList<string> Headers { get; init; } = [];
    public bool Credentials { get; init; }
    public IReadOnlyList<string> ExposeHeaders { get; init; } = [];
    public TimeSpan? MaxAge { get; init; }
    /// <summary>Status for a preflight from an origin that is not allowed (no CORS headers are sent).</summary>
    public int PreflightRejectStatus { get; init; } = 403;
}

/// <summary>A compiled CORS profile: origin matching on bytes and pre-encoded header lines.</summary>
public sealed class CorsModel
{
    private readonly byte[][] _exact;
    private readonly (byte[] Scheme, byte[] Suffix)[] _wildcards;
    private readonly bool _any;

    public CorsModel(CorsConfig c)
    {
        Id = c.Id;
        _any = c.Origins.Contains("*");
        _exact = c.Origins.Where(o => o != "*" && !o.Contains("://*.", StringComparison.Ordinal)).Select(o => Encoding.ASCII.GetBytes(o.TrimEnd('/'))).ToArray();
        _wildcards = c.Origins.Where(o => o.Contains("://*.", StringComparison.Ordinal)).Select(o =>
        {
            int i = o.IndexOf("://*.", StringComparison.Ordinal);
            return (Encoding.ASCII.GetBytes(o[..(i + 3)]), Encoding.ASCII.GetBytes(o[(i + 4)..].TrimEnd('/')));
        }).ToArray();
        // Everything but Vary is a grant to one origin: it is sent only beside that origin's Access-Control-Allow-Origin,
        // never on a rejected preflight or to an origin that is not allowed.
        string credentials = c.Credentials ? "Access-Control-Allow-Credentials: true\r\n" : "";
        var preflight = new StringBuilder(credentials);
        preflight.Append("Access-Control-Allow-Methods: ").Append(string.Join(", ", c.Methods)).Append("\r\n");
        if (c.Headers.Count > 0) preflight.Append("Access-Control-Allow-Headers: ").Append(string.Join(", ", c.Headers)).Append("\r\n");
        if (c.MaxAge is { } age) preflight.Append("Access-Control-Max-Age: ").Append((long)age.TotalSeconds).Append("\r\n");
        PreflightGrantLines = Encoding.ASCII.GetBytes(preflight.ToString());
        ResponseGrantLines = Encoding.ASCII.GetBytes(credentials
            + (c.ExposeHeaders.Count > 0 ? $"Access-Control-Expose-Headers: {string.Join(", ", c.ExposeHeaders)}\r\n" : ""));
        PreflightRejectStatus = c.PreflightRejectStatus;
    }

    public string Id { get; }
    /// <summary>"Vary: Origin": on every response of a CORS route to a request with an Origin, allowed or not.</summary>
    public static ReadOnlySpan<byte> VaryLine => "Vary: Origin\r\n"u8;
    /// <summary>An allowed origin's preflight grant (after its Access-Control-Allow-Origin): credentials, methods, headers, max age.</summary>
    public byte[] PreflightGrantLines { get; }
    /// <summary>An allowed origin's grant on an actual response (after its Access-Control-Allow-Origin): credentials, exposed headers.</summary>
    public byte[] ResponseGrantLines { get; }
    public int PreflightRejectStatus { get; }

    public bool IsAllowed(ReadOnlySpan<byte> origin)
    {
        if (_any) return true;
        foreach (var e in _exact) if (Ascii.EqualsIgnoreCase(origin, e)) return true;
        foreach (var (scheme, suffix) in _wildcards)
        {
            if (origin.Length > scheme.Length + suffix.Length && Ascii.EqualsIgnoreCase(origin[..scheme.Length], scheme)
                && Ascii.EqualsIgnoreCase(origin[^suffix.Length..], suffix) && origin[^(suffix.Length + 1)] != (byte)'/')
            {
                var label = origin[scheme.Length..^suffix.Length];
                if (label.Length > 0 && label.IndexOfAny((byte)'/', (byte)'@') < 0) return true;
            }
        }
        return false;
    }

    /// <summary>True for a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method.</summary>
    public static bool IsPreflight(RequestHead request) =>
        request.Method == Http.HttpMethod.Options && request.TryGetHeader("access-control-request-method"u8, out _);
}

internal static class CorsConfigBinder
{
    /// <summary><c>cors[]</c>.</summary>
    internal static readonly string[] Properties =
        ConfigReader.Names(nameof(CorsConfig.Id), nameof(CorsConfig.Origins), nameof(CorsConfig.Methods), nameof(CorsConfig.Headers),
        nameof(CorsConfig.Credentials), nameof(CorsConfig.ExposeHeaders), nameof(CorsConfig.MaxAge),
        nameof(CorsConfig.PreflightRejectStatus));

    public static List<CorsConfig> Bind(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", nameof(GatewayConfig.Cors), false, (e, p) =>
        {
            r.CheckUnknown(e, p, Properties);
            var d = new CorsConfig();
            var methods = r.Strings(e, p, nameof(CorsConfig.Methods));
            return new CorsConfig
            {
                Id = r.String(e, p, nameof(CorsConfig.Id), required: true) ?? "",
                Origins = r.Strings(e, p, nameof(CorsConfig.Origins)),
                Methods = methods.Count > 0 ? methods : d.Methods,
                Headers = r.Strings(e, p, nameof(CorsConfig.Headers)),
                Credentials = r.Bool(e, p, nameof(CorsConfig.Credentials)) ?? false,
                ExposeHeaders = r.Strings(e, p, nameof(CorsConfig.ExposeHeaders)),
                MaxAge = r.Duration(e, p, nameof(CorsConfig.MaxAge)),
                PreflightRejectStatus = (int)(r.Integer(e, p, nameof(CorsConfig.PreflightRejectStatus), 400, 599) ?? 403),
            };
        });

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Cors.Count; i++)
        {
            var c = config.Cors[i];
            string p = $"$.cors[{i}]";
            if (c.Id.Length > 0 && !ids.Add(c.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate cors id '{c.Id}'"));
            if (c.Origins.Count == 0) errors.Add(new ConfigError(p + ".origins", "list at least one origin (or \"*\")"));
            if (c.Credentials && c.Origins.Contains("*"))
                errors.Add(new ConfigError(p + ".origins", "\"*\" cannot be combined with credentials: list the origins"));
            for (int j = 0; j < c.Origins.Count; j++)
            {
                var o = c.Origins[j];
                bool ok = o == "*" || ((o.StartsWith("https://", StringComparison.Ordinal) || o.StartsWith("http://", StringComparison.Ordinal))
                                       && !o[(o.IndexOf("://", StringComparison.Ordinal) + 3)..].Contains('/'));
                if (!ok) errors.Add(new ConfigError($"{p}.origins[{j}]", $"'{o}' is not an origin such as https://app.example.com or https://*.example.com"));
            }
        }
        for (int i = 0; i < config.Routes.Count; i++)
        {
            var id = config.Routes[i].Cors;
            if (id is not null && !ids.Contains(id))
                errors.Add(new ConfigError($"$.routes[{i}].cors", $"unknown cors profile '{id}'"));
        }
    }
}
