using FastGate.Configuration;

namespace FastGate.Policy;

/// <summary>What a rule's allow/deny/respond action does when the rule decides.</summary>
public enum RuleDecision : byte { None, Allow, Deny, Respond }

/// <summary>
/// One policy rule, compiled: its condition and its actions precomputed as bytes. Immutable. The proxy applies
/// the actions of <see cref="PolicyResult.Matched"/> rules (see docs/policies.md for the order).
/// </summary>
public sealed class CompiledRule
{
    public required string Id { get; init; }
    /// <summary>Position in <see cref="CompiledPolicy.Rules"/> and in the config's policies list.</summary>
    public required int Index { get; init; }
    public required PolicyMode Mode { get; init; }
    public RuleDecision Decision { get; init; }
    /// <summary>Status of a deny/respond decision (0 otherwise).</summary>
    public int Status { get; init; }
    /// <summary>
    /// Deny/respond: "HTTP/1.1 403 Forbidden\r\nContent-Type: ...\r\nContent-Length: N\r\n" (no Date, no blank line).
    /// Write it, then the cached Date line (and "Connection: close\r\n" if closing), then "\r\n", then <see cref="ResponseBody"/>.
    /// </summary>
    public byte[] ResponseHead { get; init; } = [];
    public byte[] ResponseBody { get; init; } = [];

    /// <summary>setRequestHeaders: "Name: value\r\n" lines to append to the upstream head.</summary>
    public byte[] SetRequestHeaderLines { get; init; } = [];
    /// <summary>The lower-case names set by <see cref="SetRequestHeaderLines"/>: drop the client's fields with these names.</summary>
    public byte[][] SetRequestHeaderNames { get; init; } = [];
    /// <summary>removeRequestHeaders: lower-case names to drop (compare ASCII case-insensitively).</summary>
    public byte[][] RemoveRequestHeaderNames { get; init; } = [];
    public byte[] SetResponseHeaderLines { get; init; } = [];
    public byte[][] SetResponseHeaderNames { get; init; } = [];
    public byte[][] RemoveResponseHeaderNames { get; init; } = [];
    /// <summary>rewritePath: the path (with no query) to forward instead of the request's; null when absent.</summary>
    public byte[]? RewritePath { get; init; }
    /// <summary>route: the cluster to send to instead of the route's; null when absent.</summary>
    public string? RouteToCluster { get; init; }
    /// <summary>Index of <see cref="RouteToCluster"/> in the cluster id list given to the compiler, or -1.</summary>
    public int RouteToClusterIndex { get; init; } = -1;
    /// <summary>requireAuth schemes (empty when the rule has no requireAuth action).</summary>
    public string[] RequireAuthSchemes { get; init; } = [];
    /// <summary>requireAuth compiled (schemes, scopes, claims); null when the rule has no requireAuth action.</summary>
    public Security.AuthRequirement? RequireAuth { get; init; }
    /// <summary>rateLimit limiter ids (empty when none).</summary>
    public string[] RateLimiters { get; init; } = [];

    public bool HasRequestHeaderActions => SetRequestHeaderLines.Length > 0 || RemoveRequestHeaderNames.Length > 0;
    public bool HasResponseHeaderActions => SetResponseHeaderLines.Length > 0 || RemoveResponseHeaderNames.Length > 0;

    internal MatchCondition Match { get; init; } = new();

    public override string ToString() => Id;
}
