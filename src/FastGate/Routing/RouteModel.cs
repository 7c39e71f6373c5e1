using System.Text;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Proxy;

namespace FastGate.Routing;

public enum PathMatchKind : byte { Any, Exact, Prefix }

/// <summary>A compiled, immutable route: what it matches, where it sends, how it rewrites.</summary>
public sealed class RouteModel
{
    public required string Id { get; init; }
    public required ClusterModel Cluster { get; init; }
    public required RouteMetrics Metrics { get; init; }
    /// <summary>Bytes removed from the front of the path before forwarding (empty: none).</summary>
    public byte[] StripPrefix { get; init; } = [];
    public bool PreserveHost { get; init; }
    public int Order { get; init; }
    /// <summary>"id" as bytes (a rate-limit key part).</summary>
    public byte[] IdBytes => _idBytes ??= Encoding.ASCII.GetBytes(Id);
    private byte[]? _idBytes;
    /// <summary>Limiters applied to every request of the route (its rateLimits list).</summary>
    public RateLimiting.CompiledLimiter[] Limiters { get; init; } = [];
    /// <summary>The route's auth list (with scopes and claims); null when the route is open.</summary>
    public Security.AuthRequirement? Auth { get; init; }
    public bool ForwardApiKey { get; init; }
    public Security.CorsModel? Cors { get; init; }
    /// <summary>"Strict-Transport-Security: ...\r\n" added to responses on TLS connections, or null.</summary>
    public byte[]? HstsLine { get; init; }
    /// <summary>Key injection: the header name (a client's copy is dropped) and "Name: prefix+secret\r\n", or null.</summary>
    public byte[]? UpstreamCredentialName { get; init; }
    public byte[]? UpstreamCredentialLine { get; init; }
    /// <summary>Total time allowed from the request head to the response head, in Stopwatch ticks (0: none).</summary>
    public long RequestTimeoutTicks { get; init; }
    /// <summary>The route's WAF profile, or null (then the WAF costs nothing).</summary>
    public Waf.WafProfile? Waf { get; init; }
    /// <summary>The unified OpenAI-compatible endpoint (Ai/AiStage): the loop hands the request to it; null: plain proxy.</summary>
    public FastGate.Ai.AiRoute? Ai { get; init; }
}

/// <summary>One (host pattern, path, methods) entry of a route; a route with several hosts has several.</summary>
internal sealed class RouteEntry
{
    public required RouteModel Route { get; init; }
    /// <summary>The host pattern (lower case; a suffix match keeps ".example.com").</summary>
    public HostPattern Host { get; init; } = HostPattern.Any;
    public PathMatchKind PathKind { get; init; }
    public byte[] Path { get; init; } = [];
    public MethodSet Methods { get; init; } = MethodSet.Any;
}
