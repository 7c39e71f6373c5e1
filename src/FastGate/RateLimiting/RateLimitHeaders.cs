using System.Buffers.Text;
using System.Text;

namespace FastGate.RateLimiting;

/// <summary>
/// Writes rate-limit response headers into a byte span without allocating. Format (draft-ietf-httpapi-ratelimit-headers-08
/// and later, structured fields):
/// <code>
/// Retry-After: 3                          (rejections only)
/// RateLimit-Policy: "per-ip";q=100;w=1    (rejections, and allowed responses when quotaHeaders is on)
/// RateLimit: "per-ip";r=0;t=3
/// X-RateLimit-Limit: 100                  (legacy, when legacyHeaders is on)
/// X-RateLimit-Remaining: 0
/// X-RateLimit-Reset: 3                    (seconds from now, not an epoch)
/// </code>
/// Each line ends with CRLF.
/// </summary>
public static class RateLimitHeaders
{
    private static ReadOnlySpan<byte> RetryAfter => "Retry-After: "u8;
    private static ReadOnlySpan<byte> TParam => ";t="u8;
    private static ReadOnlySpan<byte> LegacyRemaining => "X-RateLimit-Remaining: "u8;
    private static ReadOnlySpan<byte> LegacyReset => "X-RateLimit-Reset: "u8;
    private static ReadOnlySpan<byte> Crlf => "\r\n"u8;

    /// <summary>Upper bound of bytes <see cref="Write"/> needs for a definition.</summary>
    public static int MaxLength(RateLimiterDefinition definition) =>
        RetryAfter.Length + 22 + definition.PolicyHeaderLine.Length + definition.RateLimitPrefix.Length + 48 +
        definition.LegacyLimitLine.Length + LegacyRemaining.Length + LegacyReset.Length + 48;

    /// <summary>
    /// Writes the headers a response needs for <paramref name="decision"/>. Returns the bytes written, 0 when there is
    /// nothing to write, or -1 when <paramref name="dest"/> is too small (nothing useful was written).
    /// </summary>
    public static int Write(Span<byte> dest, in RateLimitDecision decision, RateLimiterDefinition definition)
    {
        var outcome = decision.Outcome;
        if (outcome == RateLimitOutcome.NotLimited) return 0;
        bool rejected = outcome != RateLimitOutcome.Allowed;
        bool quota = outcome is RateLimitOutcome.Allowed or RateLimitOutcome.Rejected;
        if (!rejected && !definition.QuotaHeaders && !definition.LegacyHeaders) return 0;
        int pos = 0;
        if (rejected)
        {
            if (!Append(dest, ref pos, RetryAfter) || !AppendNumber(dest, ref pos, decision.RetryAfterSeconds) ||
                !Append(dest, ref pos, Crlf)) return -1;
        }
        if (quota && (rejected || definition.QuotaHeaders))
        {
            if (!Append(dest, ref pos, definition.PolicyHeaderLine) || !Append(dest, ref pos, definition.RateLimitPrefix) ||
                !AppendNumber(dest, ref pos, decision.Remaining)) return -1;
            if (definition.Algorithm != RateLimitAlgorithm.Concurrency &&
                (!Append(dest, ref pos, TParam) || !AppendNumber(dest, ref pos, decision.ResetSeconds))) return -1;
            if (!Append(dest, ref pos, Crlf)) return -1;
        }
        if (quota && definition.LegacyHeaders)
        {
            if (!Append(dest, ref pos, definition.LegacyLimitLine) ||
                !Append(dest, ref pos, LegacyRemaining) || !AppendNumber(dest, ref pos, decision.Remaining) || !Append(dest, ref pos, Crlf))
                return -1;
            if (definition.Algorithm != RateLimitAlgorithm.Concurrency &&
                (!Append(dest, ref pos, LegacyReset) || !AppendNumber(dest, ref pos, decision.ResetSeconds) || !Append(dest, ref pos, Crlf)))
                return -1;
        }
        return pos;
    }

    private static bool Append(Span<byte> dest, ref int pos, ReadOnlySpan<byte> s)
    {
        if (!s.TryCopyTo(dest.Slice(pos))) return false;
        pos += s.Length;
        return true;
    }

    private static bool AppendNumber(Span<byte> dest, ref int pos, long value)
    {
        if (!Utf8Formatter.TryFormat(value, dest.Slice(pos), out int n)) return false;
        pos += n;
        return true;
    }
}

/// <summary>Pre-encoded bodies for rate-limit rejections (JSON, <see cref="ContentType"/>).</summary>
public static class RateLimitResponses
{
    public static ReadOnlySpan<byte> ContentType => "application/json"u8;
    public static ReadOnlySpan<byte> TooManyRequestsBody => "{\"error\":\"too_many_requests\",\"status\":429}\n"u8;
    public static ReadOnlySpan<byte> StoreUnavailableBody => "{\"error\":\"rate_limit_store_unavailable\",\"status\":503}\n"u8;
    public static ReadOnlySpan<byte> MissingKeyBody => "{\"error\":\"rate_limit_key_missing\"}\n"u8;

    private static readonly byte[][] s_custom = new byte[200][];

    /// <summary>The body for a decision: 429 body, 503 body, or a small JSON body for a custom status (cached).</summary>
    public static ReadOnlySpan<byte> BodyFor(in RateLimitDecision decision)
    {
        switch (decision.Outcome)
        {
            case RateLimitOutcome.StoreUnavailable: return StoreUnavailableBody;
            case RateLimitOutcome.MissingKeyRejected: return MissingKeyBody;
        }
        int status = decision.StatusCode;
        if (status == 429 || status < 400 || status > 599) return TooManyRequestsBody;
        ref byte[] slot = ref s_custom[status - 400];
        return Volatile.Read(ref slot) ?? (slot = Encoding.ASCII.GetBytes($"{{\"error\":\"rate_limited\",\"status\":{status}}}\n"));
    }
}
