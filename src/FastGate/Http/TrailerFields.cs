using System.Text;

namespace FastGate.Http;

/// <summary>
/// Field names a trailer section must not carry (RFC 9110 6.5.1): a recipient that merged them into the head would
/// act on framing, routing, credentials or metadata nobody validated. Relayed trailers are written without them.
/// </summary>
public static class TrailerFields
{
    private static readonly byte[][] s_forbidden =
    [
        // framing and routing
        "content-length"u8.ToArray(), "transfer-encoding"u8.ToArray(), "host"u8.ToArray(), "trailer"u8.ToArray(),
        "te"u8.ToArray(), "connection"u8.ToArray(), "keep-alive"u8.ToArray(), "proxy-connection"u8.ToArray(), "upgrade"u8.ToArray(),
        // request modifiers: controls and conditionals
        "expect"u8.ToArray(), "max-forwards"u8.ToArray(), "range"u8.ToArray(), "if-match"u8.ToArray(), "if-none-match"u8.ToArray(),
        "if-modified-since"u8.ToArray(), "if-unmodified-since"u8.ToArray(), "if-range"u8.ToArray(), "pragma"u8.ToArray(),
        // authentication and cookies
        "authorization"u8.ToArray(), "proxy-authorization"u8.ToArray(), "www-authenticate"u8.ToArray(),
        "proxy-authenticate"u8.ToArray(), "cookie"u8.ToArray(), "set-cookie"u8.ToArray(),
        // response control data and content metadata
        "cache-control"u8.ToArray(), "expires"u8.ToArray(), "age"u8.ToArray(), "date"u8.ToArray(), "vary"u8.ToArray(),
        "location"u8.ToArray(), "retry-after"u8.ToArray(), "warning"u8.ToArray(), "content-type"u8.ToArray(),
        "content-encoding"u8.ToArray(), "content-range"u8.ToArray(), "content-location"u8.ToArray(),
        // what the gateway itself sets on the head
        "forwarded"u8.ToArray(), "x-forwarded-for"u8.ToArray(), "x-forwarded-proto"u8.ToArray(), "x-forwarded-host"u8.ToArray(),
        "x-real-ip"u8.ToArray(), "x-request-id"u8.ToArray(),
    ];

    public static bool IsForbidden(ReadOnlySpan<byte> name)
    {
        foreach (var f in s_forbidden)
            if (f.Length == name.Length && Ascii.EqualsIgnoreCase(f, name)) return true;
        return false;
    }
}
