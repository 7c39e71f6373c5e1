using System.Text;
using FastGate.Http;

namespace FastGate.Configuration;

/// <summary>The <c>http</c> section: how the canonical request is formed (docs/http.md, "The canonical request").</summary>
public sealed record HttpConfig
{
    /// <summary>reject (default, 400 encoded_slash) | keep (one segment, forwarded encoded) | decode (read and forwarded as '/').</summary>
    public EscapedSlashAction EscapedSlashes { get; init; } = EscapedSlashAction.Reject;
    /// <summary>drop (default: names that read as a protected one) | reject (400) | dropAll (every name with '_').</summary>
    public UnderscoreHeaderAction UnderscoreHeaders { get; init; } = UnderscoreHeaderAction.Drop;
}

/// <summary>Binds and checks the <c>http</c> section, and writes route paths in the canonical form requests are matched in.</summary>
internal static class HttpConfigBinder
{
    /// <summary><c>http</c>.</summary>
    internal static readonly string[] Properties =
        ConfigReader.Names(nameof(HttpConfig.EscapedSlashes), nameof(HttpConfig.UnderscoreHeaders));

    public static HttpConfig Bind(System.Text.Json.JsonElement root, ConfigReader r)
    {
        const string path = "$.http";
        if (!r.TryGet(root, "$", nameof(GatewayConfig.Http), false, out var e) || !r.IsObject(e, path)) return new HttpConfig();
        r.CheckUnknown(e, path, Properties);
        var d = new HttpConfig();
        return new HttpConfig
        {
            EscapedSlashes = r.String(e, path, nameof(HttpConfig.EscapedSlashes)) switch
            {
                null => d.EscapedSlashes,
                "reject" => EscapedSlashAction.Reject,
                "keep" => EscapedSlashAction.Keep,
                "decode" => EscapedSlashAction.Decode,
                var other => Invalid(r, path + ".escapedSlashes", other, "reject, keep or decode", d.EscapedSlashes),
            },
            UnderscoreHeaders = r.String(e, path, nameof(HttpConfig.UnderscoreHeaders)) switch
            {
                null => d.UnderscoreHeaders,
                "drop" => UnderscoreHeaderAction.Drop,
                "reject" => UnderscoreHeaderAction.Reject,
                "dropAll" => UnderscoreHeaderAction.DropAll,
                var other => Invalid(r, path + ".underscoreHeaders", other, "drop, reject or dropAll", d.UnderscoreHeaders),
            },
        };
    }

    private static T Invalid<T>(ConfigReader r, string path, string value, string expected, T fallback)
    {
        r.Error(path, $"expected {expected} (found '{value}')");
        return fallback;
    }

    /// <summary>
    /// A route path must be written as requests are matched: canonical (no "//", no encoded unreserved characters,
    /// upper-case escapes, no encoded slash unless escapedSlashes keeps them). Returns the error, or null.
    /// </summary>
    public static string? CheckRoutePath(string path, EscapedSlashAction slashes)
    {
        if (!path.StartsWith('/')) return null; // reported by the validator's own check
        var bytes = Encoding.UTF8.GetBytes(path);
        if (!HttpChars.IsValidTarget(bytes) || path.Contains('?')) return $"'{path}' is not a valid request path";
        if (RequestCanonicalizer.HasDotSegment(bytes)) return $"'{path}' has a '.' or '..' segment, which requests never have";
        var dst = new byte[bytes.Length];
        var reason = RejectReason.None;
        int n = RequestCanonicalizer.Normalize(bytes, dst, slashes, ref reason);
        if (n < 0)
            return reason == RejectReason.EncodedSlash
                ? $"'{path}' has an encoded slash, which http.escapedSlashes 'reject' refuses in every request"
                : $"'{path}' cannot be matched by any request ({RejectReasons.Name(reason)})";
        var canonical = Encoding.ASCII.GetString(dst, 0, n);
        return canonical == path ? null : $"'{path}' is not in canonical form: requests are matched as '{canonical}'; write that";
    }
}
