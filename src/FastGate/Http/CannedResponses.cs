using System.Text;

namespace FastGate.Http;

/// <summary>
/// Pre-encoded error responses, one pair (keep-alive / close) per <see cref="RejectReason"/>. The Date line is
/// inserted between the encoded prefix and suffix when written.
/// </summary>
public static class CannedResponses
{
    private static readonly byte[][] s_prefix = new byte[RejectReasons.Count * 2][];
    private static readonly byte[][] s_suffix = new byte[RejectReasons.Count][];

    static CannedResponses()
    {
        for (int i = 0; i < RejectReasons.Count; i++)
        {
            var reason = (RejectReason)i;
            int status = RejectReasons.StatusCode(reason);
            string body = "{\"error\":\"" + StatusText(status).ToLowerInvariant().Replace(' ', '_') + "\",\"reason\":\"" + RejectReasons.Name(reason) + "\"}\n";
            string head = "HTTP/1.1 " + status + " " + StatusText(status) + "\r\nContent-Type: application/json\r\nContent-Length: " + body.Length + "\r\n"
                          + Challenge(reason);
            s_prefix[i * 2] = Encoding.ASCII.GetBytes(head);
            s_prefix[i * 2 + 1] = Encoding.ASCII.GetBytes(head + "Connection: close\r\n");
            s_suffix[i] = Encoding.ASCII.GetBytes("\r\n" + body);
        }
    }

    /// <summary>The WWW-Authenticate lines of a 401/403 (RFC 9110 section 11.6.1, RFC 6750 section 3).</summary>
    private static string Challenge(RejectReason reason) => reason switch
    {
        RejectReason.AuthenticationRequired => "WWW-Authenticate: ApiKey realm=\"fastgate\"\r\nWWW-Authenticate: Bearer realm=\"fastgate\"\r\n",
        RejectReason.InvalidToken => "WWW-Authenticate: Bearer realm=\"fastgate\", error=\"invalid_token\"\r\n",
        RejectReason.InsufficientScope => "WWW-Authenticate: Bearer realm=\"fastgate\", error=\"insufficient_scope\"\r\n",
        _ => "",
    };

    /// <summary>Writes the reason's response; a non-empty <paramref name="requestId"/> is sent as X-Request-Id.</summary>
    public static void Write(ref HeadWriter writer, RejectReason reason, bool close, ReadOnlySpan<byte> extraHeaders = default,
        ReadOnlySpan<byte> requestId = default)
    {
        writer.Write(s_prefix[(int)reason * 2 + (close ? 1 : 0)]);
        writer.Write(DateHeader.Line);
        if (!requestId.IsEmpty) writer.WriteHeader("X-Request-Id: "u8, requestId);
        writer.Write(extraHeaders);
        writer.Write(s_suffix[(int)reason]);
    }

    private static readonly byte[][] s_statusText = Enumerable.Range(0, 600).Select(i => Encoding.ASCII.GetBytes(StatusText(i))).ToArray();

    public static ReadOnlySpan<byte> StatusTextBytes(int status) => (uint)status < 600 ? s_statusText[status] : "Unknown"u8;

    public static string StatusText(int status) => status switch
    {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    };
}
