namespace FastGate.RateLimiting;

public enum RateLimitOutcome : byte
{
    /// <summary>Admitted; the cost was debited.</summary>
    Allowed = 0,
    /// <summary>Over the limit: reject with the limiter's status (429 by default) and Retry-After.</summary>
    Rejected = 1,
    /// <summary>The request had no key and the limiter's missingKey is deny.</summary>
    MissingKeyRejected = 2,
    /// <summary>The cluster store failed or timed out and onStoreFailure is deny: reject with 503.</summary>
    StoreUnavailable = 3,
    /// <summary>The request had no key and missingKey is allow: not counted, no quota headers.</summary>
    NotLimited = 4,
}

/// <summary>
/// The result of one acquire. <see cref="ResetSeconds"/> and <see cref="RetryAfterSeconds"/> are whole seconds,
/// rounded up from the exact time (so a client that waits RetryAfterSeconds is admitted, if nothing else spent the quota).
/// </summary>
public readonly struct RateLimitDecision
{
    public RateLimitDecision(RateLimitOutcome outcome, long limit, long remaining, long resetSeconds, long retryAfterSeconds, int statusCode)
        : this(outcome, limit, remaining, resetSeconds, retryAfterSeconds, statusCode, default) { }

    internal RateLimitDecision(RateLimitOutcome outcome, long limit, long remaining, long resetSeconds, long retryAfterSeconds,
        int statusCode, RateLimitLease lease)
    {
        Lease = lease;
        Outcome = outcome;
        Limit = limit;
        _remaining = remaining < 0 ? 0 : remaining;
        _reset = resetSeconds < 0 ? 0 : resetSeconds;
        RetryAfterSeconds = retryAfterSeconds < 0 ? 0 : retryAfterSeconds;
        StatusCode = statusCode;
    }

    /// <summary>An allowed decision whose remaining and reset are converted only when read (no division on the hot path).</summary>
    internal RateLimitDecision(long limit, long rawRemaining, long rawReset, DecisionScale scale)
    {
        Outcome = RateLimitOutcome.Allowed;
        Limit = limit;
        _remaining = rawRemaining;
        _reset = rawReset;
        _scale = scale;
    }

    private readonly long _remaining, _reset;
    private readonly DecisionScale? _scale;

    public RateLimitOutcome Outcome { get; }
    /// <summary>True when the request may go on (Allowed or NotLimited).</summary>
    public bool IsAllowed => Outcome is RateLimitOutcome.Allowed or RateLimitOutcome.NotLimited;
    /// <summary>The advertised quota (burst for GCRA, rate for the sliding window, slots for concurrency).</summary>
    public long Limit { get; }
    public long Remaining => _scale is null ? _remaining : _remaining / _scale.Token;
    /// <summary>Seconds until the quota is whole again (GCRA: bucket full; sliding window: current window ends).</summary>
    public long ResetSeconds => _scale is null ? _reset : _reset <= 0 ? 0 : (_reset + _scale.Second - 1) / _scale.Second;
    /// <summary>Seconds to wait before retrying (0 when allowed).</summary>
    public long RetryAfterSeconds { get; }
    /// <summary>HTTP status for a rejection (0 when allowed).</summary>
    public int StatusCode { get; }
    /// <summary>Concurrency limiters: the slot to release when the response completes (empty otherwise).</summary>
    public RateLimitLease Lease { get; }

    public static RateLimitDecision NotLimited => new(RateLimitOutcome.NotLimited, 0, 0, 0, 0, 0);

    public override string ToString() =>
        $"{Outcome} limit={Limit} remaining={Remaining} reset={ResetSeconds}s retryAfter={RetryAfterSeconds}s status={StatusCode}";
}

/// <summary>Units of a limiter's raw state: one token and one second.</summary>
internal sealed class DecisionScale(long token, long second)
{
    public readonly long Token = token;
    public readonly long Second = second;
}
