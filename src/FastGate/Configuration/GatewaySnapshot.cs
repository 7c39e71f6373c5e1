using System.Diagnostics;
using FastGate.Http;
using FastGate.Proxy;
using FastGate.Routing;

namespace FastGate.Configuration;

/// <summary>
/// Everything the request path needs, compiled from one config and never changed afterwards. The runtime swaps
/// whole snapshots; a request reads one at its start and uses it to the end.
/// </summary>
public sealed class GatewaySnapshot
{
    public required GatewayConfig Config { get; init; }
    public required HttpLimits Limits { get; init; }
    public required Router Router { get; init; }
    public required IReadOnlyList<RouteModel> Routes { get; init; }
    public required IReadOnlyList<ClusterModel> Clusters { get; init; }
    /// <summary>The compiled policy (rule index = position in the config's policies list).</summary>
    public required Policy.CompiledPolicy Policy { get; init; }
    /// <summary>Limiters of each policy rule's rateLimit actions, by rule index.</summary>
    public RateLimiting.CompiledLimiter[][] RuleLimiters { get; init; } = [];
    /// <summary>API-key lookup (digests only) and the consumer header.</summary>
    public Security.ApiKeyAuthenticator Authenticator { get; init; } = Security.ApiKeyAuthenticator.Empty;
    /// <summary>Bearer tokens from the configured jwtIssuers (disabled when there are none).</summary>
    public Security.JwtAuthenticator Jwt { get; init; } = Security.JwtAuthenticator.Empty;
    /// <summary>Allowlisted client certificates (mTLS devices) and the device header.</summary>
    public Security.DeviceTable Devices { get; init; } = Security.DeviceTable.Empty;
    /// <summary>Peers whose X-Forwarded-For names the client (trustedProxies); empty: the peer is the client.</summary>
    public FastGate.Policy.CidrSet TrustedProxies { get; init; } = FastGate.Policy.CidrSet.Empty;
    public bool HasTrustedProxies => TrustedProxies.RangeCount > 0;
    /// <summary>The metrics of the runtime this snapshot was compiled for (routes and limiters hold children of its registry).</summary>
    public required Observability.GatewayMetrics Metrics { get; init; }
    /// <summary>Content hash of the config text.</summary>
    public required string Version { get; init; }
    public required DateTimeOffset LoadedAt { get; init; }

    public long HeaderTimeoutTicks { get; init; }
    public long KeepAliveTimeoutTicks { get; init; }
    public long UpstreamResponseTimeoutTicks { get; init; }
    public TimeSpan UpstreamConnectTimeout { get; init; }
    public TimeSpan DrainTimeout { get; init; }
    // slow clients after the head (see ProxyConnection.Timeouts.cs)
    public long BodyIdleTimeoutTicks { get; init; } = long.MaxValue;
    public long MinRateGraceTicks { get; init; }
    /// <summary>Bytes per second; 0: no check.</summary>
    public long MinRequestBodyRate { get; init; }
    /// <summary>Bytes per second; 0: no check.</summary>
    public long MinResponseRate { get; init; }
    /// <summary>Bodies up to this size are read before an upstream connection is leased (0: never).</summary>
    public int RequestBufferBytes { get; init; }

    internal static long ToTicks(TimeSpan t) => (long)(t.TotalSeconds * Stopwatch.Frequency);
}
