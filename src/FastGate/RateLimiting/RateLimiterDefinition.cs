using System.Text;

namespace FastGate.RateLimiting;

public enum RateLimitAlgorithm { Gcra, SlidingWindow, Concurrency }

/// <summary>What happens to a request that has no value for the limiter's key.</summary>
public enum MissingKeyBehavior { Deny, Allow, SharedBucket }

public enum RateLimitScope { Local, Cluster }

/// <summary>
/// What a cluster limiter does when its store (Redis) fails or is too slow: <c>Allow</c> admits (fail open, nothing
/// counted), <c>Deny</c> refuses with 503, <c>Local</c> decides with a local limiter of the same settings on each gateway.
/// </summary>
public enum StoreFailureMode { Allow, Deny, Local }

/// <summary>
/// A compiled, immutable limiter definition. Two definitions are equal when every setting is equal; the
/// <see cref="RateLimiterStore"/> keys state by that equality, so a reload that keeps a definition keeps its buckets.
/// Build one with <see cref="Create"/>, which reports every problem as a message instead of throwing.
/// </summary>
public sealed class RateLimiterDefinition : IEquatable<RateLimiterDefinition>
{
    public const int DefaultMaxKeys = 1_000_000;
    public const int DefaultRejectStatusCode = 429;
    public static readonly TimeSpan DefaultStoreTimeout = TimeSpan.FromMilliseconds(50);

    /// <summary>Largest <see cref="Rate"/> for the sliding window (its counters are 20-bit fields of one word).</summary>
    public const long MaxSlidingWindowLimit = (1L << 20) - 1;

    public string Id { get; }
    public RateLimitAlgorithm Algorithm { get; }
    /// <summary>Requests (cost units) per <see cref="Per"/>; for <c>concurrency</c>, the number in flight.</summary>
    public long Rate { get; }
    public TimeSpan Per { get; }
    /// <summary>GCRA bucket size (requests admitted at once from a full bucket). Equals Rate for the other algorithms.</summary>
    public long Burst { get; }
    public int MaxKeys { get; }
    public MissingKeyBehavior MissingKey { get; }
    public int RejectStatusCode { get; }
    /// <summary>Allowed responses carry RateLimit-Policy / RateLimit (rejections always do).</summary>
    public bool QuotaHeaders { get; }
    public bool LegacyHeaders { get; }
    public RateLimitScope Scope { get; }
    public StoreFailureMode OnStoreFailure { get; }
    public TimeSpan StoreTimeout { get; }

    /// <summary>Seconds advertised as the policy window (<c>w</c>): time to refill the whole burst, rounded up.</summary>
    public long PolicyWindowSeconds { get; }

    // Pre-encoded header fragments (derived data, not part of equality).
    internal readonly byte[] PolicyHeaderLine;   // RateLimit-Policy: "id";q=..;w=..\r\n
    internal readonly byte[] RateLimitPrefix;    // RateLimit: "id";r=
    internal readonly byte[] LegacyLimitLine;    // X-RateLimit-Limit: N\r\n

    private RateLimiterDefinition(string id, RateLimitAlgorithm algorithm, long rate, TimeSpan per, long burst, int maxKeys,
        MissingKeyBehavior missingKey, int status, bool quotaHeaders, bool legacyHeaders, RateLimitScope scope,
        StoreFailureMode onStoreFailure, TimeSpan storeTimeout)
    {
        Id = id; Algorithm = algorithm; Rate = rate; Per = per; Burst = burst; MaxKeys = maxKeys; MissingKey = missingKey;
        RejectStatusCode = status; QuotaHeaders = quotaHeaders; LegacyHeaders = legacyHeaders; Scope = scope;
        OnStoreFailure = onStoreFailure; StoreTimeout = storeTimeout;

        long limit = HeaderLimit;
        PolicyWindowSeconds = algorithm switch
        {
            RateLimitAlgorithm.Gcra => CeilSeconds(per.Ticks * (decimal)burst / rate),
            RateLimitAlgorithm.SlidingWindow => CeilSeconds(per.Ticks),
            _ => 0,
        };
        string policy = algorithm == RateLimitAlgorithm.Concurrency
            ? $"RateLimit-Policy: \"{id}\";q={limit}\r\n"
            : $"RateLimit-Policy: \"{id}\";q={limit};w={PolicyWindowSeconds}\r\n";
        PolicyHeaderLine = Encoding.ASCII.GetBytes(policy);
        RateLimitPrefix = Encoding.ASCII.GetBytes($"RateLimit: \"{id}\";r=");
        LegacyLimitLine = Encoding.ASCII.GetBytes($"X-RateLimit-Limit: {limit}\r\n");
    }

    /// <summary>The quota advertised in headers: the burst for GCRA, the rate otherwise.</summary>
    public long HeaderLimit => Algorithm == RateLimitAlgorithm.Gcra ? Burst : Rate;

    private static long CeilSeconds(decimal ticks)
    {
        decimal s = Math.Ceiling(ticks / TimeSpan.TicksPerSecond);
        return s < 1 ? 1 : s > int.MaxValue ? int.MaxValue : (long)s;
    }

    /// <summary>
    /// Validates and compiles a definition. Returns null and appends one message per problem to <paramref name="errors"/>
    /// when a setting is invalid. <paramref name="burst"/> defaults to <paramref name="rate"/>.
    /// </summary>
    public static RateLimiterDefinition? Create(
        ICollection<string> errors,
        string id,
        RateLimitAlgorithm algorithm,
        long rate,
        TimeSpan per,
        long? burst = null,
        int maxKeys = DefaultMaxKeys,
        MissingKeyBehavior missingKey = MissingKeyBehavior.SharedBucket,
        int rejectStatusCode = DefaultRejectStatusCode,
        bool quotaHeaders = false,
        bool legacyHeaders = false,
        RateLimitScope scope = RateLimitScope.Local,
        StoreFailureMode onStoreFailure = StoreFailureMode.Local,
        TimeSpan? storeTimeout = null)
    {
        int before = errors.Count;
        string where = string.IsNullOrEmpty(id) ? "rateLimits[?]" : $"rateLimits['{id}']";
        if (string.IsNullOrWhiteSpace(id)) errors.Add($"{where}: id is required");
        else
        {
            foreach (char c in id)
            {
                if (c < 0x21 || c > 0x7E || c == '"' || c == '\\')
                {
                    errors.Add($"{where}: id may contain only visible ASCII characters other than '\"' and '\\'");
                    break;
                }
            }
            if (id.Length > 64) errors.Add($"{where}: id is longer than 64 characters");
        }
        if (!Enum.IsDefined(algorithm)) errors.Add($"{where}: unknown algorithm");
        if (rate < 1) errors.Add($"{where}: rate must be at least 1 (got {rate})");
        long b = burst ?? rate;
        if (algorithm == RateLimitAlgorithm.Gcra)
        {
            if (b < 1) errors.Add($"{where}: burst must be at least 1 (got {b})");
            if (per < TimeSpan.FromMilliseconds(1)) errors.Add($"{where}: per must be at least 1ms (got {per})");
            if (per > TimeSpan.FromDays(366)) errors.Add($"{where}: per must be at most 366 days");
            if (rate >= 1 && per > TimeSpan.Zero && per.Ticks / rate < 1)
                errors.Add($"{where}: rate {rate} per {per} is finer than 100ns per request");
            if (b > 1_000_000_000) errors.Add($"{where}: burst must be at most 1,000,000,000");
            if (rate >= 1 && b >= 1 && per.Ticks * (decimal)b / rate > TimeSpan.FromDays(366).Ticks)
                errors.Add($"{where}: burst x per / rate (the time to refill the burst) must be at most 366 days");
        }
        else if (algorithm == RateLimitAlgorithm.SlidingWindow)
        {
            if (per < TimeSpan.FromMilliseconds(1)) errors.Add($"{where}: per must be at least 1ms (got {per})");
            if (per > TimeSpan.FromDays(366)) errors.Add($"{where}: per must be at most 366 days");
            if (rate > MaxSlidingWindowLimit) errors.Add($"{where}: slidingWindow rate must be at most {MaxSlidingWindowLimit}");
            if (burst is not null && burst != rate) errors.Add($"{where}: burst does not apply to slidingWindow (use rate)");
            b = rate;
        }
        else
        {
            if (rate > int.MaxValue) errors.Add($"{where}: concurrency rate must be at most {int.MaxValue}");
            b = rate;
        }
        if (scope == RateLimitScope.Cluster && algorithm == RateLimitAlgorithm.SlidingWindow)
            errors.Add($"{where}: scope 'cluster' supports gcra and concurrency (use gcra for a shared request rate)");
        if (maxKeys < 1) errors.Add($"{where}: maxKeys must be at least 1 (got {maxKeys})");
        if (maxKeys > 100_000_000) errors.Add($"{where}: maxKeys must be at most 100,000,000");
        if (!Enum.IsDefined(missingKey)) errors.Add($"{where}: unknown missingKey behaviour");
        if (rejectStatusCode < 400 || rejectStatusCode > 599) errors.Add($"{where}: status code must be 4xx or 5xx (got {rejectStatusCode})");
        if (!Enum.IsDefined(scope)) errors.Add($"{where}: unknown scope");
        if (!Enum.IsDefined(onStoreFailure)) errors.Add($"{where}: unknown onStoreFailure");
        TimeSpan timeout = storeTimeout ?? DefaultStoreTimeout;
        if (timeout <= TimeSpan.Zero || timeout > TimeSpan.FromSeconds(30)) errors.Add($"{where}: storeTimeout must be in (0, 30s]");
        if (errors.Count != before) return null;
        return new RateLimiterDefinition(id, algorithm, rate, per, b, maxKeys, missingKey, rejectStatusCode, quotaHeaders,
            legacyHeaders, scope, onStoreFailure, timeout);
    }

    public bool Equals(RateLimiterDefinition? other) =>
        other is not null && (ReferenceEquals(this, other) ||
            Id == other.Id && Algorithm == other.Algorithm && Rate == other.Rate && Per == other.Per &&
            Burst == other.Burst && MaxKeys == other.MaxKeys && MissingKey == other.MissingKey &&
            RejectStatusCode == other.RejectStatusCode && QuotaHeaders == other.QuotaHeaders &&
            LegacyHeaders == other.LegacyHeaders && Scope == other.Scope && OnStoreFailure == other.OnStoreFailure &&
            StoreTimeout == other.StoreTimeout);

    public override bool Equals(object? obj) => Equals(obj as RateLimiterDefinition);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Id, StringComparer.Ordinal); h.Add(Algorithm); h.Add(Rate); h.Add(Per); h.Add(Burst); h.Add(MaxKeys);
        h.Add(MissingKey); h.Add(RejectStatusCode); h.Add(QuotaHeaders); h.Add(LegacyHeaders); h.Add(Scope);
        h.Add(OnStoreFailure); h.Add(StoreTimeout);
        return h.ToHashCode();
    }

    /// <summary>Settings that change the shared Redis state's meaning (used to version cluster keys).</summary>
    internal string StateFingerprint => $"{Algorithm}:{Rate}:{Per.Ticks}:{Burst}";

    public override string ToString() => $"{Id} ({Algorithm} {Rate}/{Per}, burst {Burst}, {Scope})";
}
