using System.Collections.Concurrent;
using System.Diagnostics;
using FastGate.Configuration;
using FastGate.Observability;
using Microsoft.AspNetCore.Connections;

namespace FastGate.Proxy;

/// <summary>
/// The live state shared by every connection: the current snapshot (swapped atomically), the upstream pools,
/// the open connections, and a heartbeat that enforces timeouts and expires idle upstream connections.
/// </summary>
public sealed class GatewayRuntime : IDisposable
{
    private static readonly TimeSpan HeartbeatInterval = TimeSpan.FromMilliseconds(250);
    private readonly ConcurrentDictionary<ProxyConnection, byte> _connections = new();
    private readonly Timer _heartbeat;
    private readonly Microsoft.Extensions.ObjectPool.ObjectPool<ConnectionState> _states = ConnectionState.CreatePool(1024);
    private GatewaySnapshot _current;
    private volatile bool _draining;
    private long _ticks;

    public GatewayRuntime(GatewaySnapshot initial, UpstreamPoolStore pools, TimeProvider? time = null, RateLimiting.RateLimiterStore? limiters = null,
        Security.JwtKeyStore? jwtKeys = null)
    {
        JwtKeys = jwtKeys ?? new Security.JwtKeyStore(time);
        _current = initial;
        Pools = pools;
        Limiters = limiters ?? new RateLimiting.RateLimiterStore(time ?? TimeProvider.System);
        s_live.TryAdd(this, 0);
        Observability = new GatewayObservability(initial.Config.Observability, time);
        GatewayMetrics.EnsureRegistered();
        GatewayMetrics.SetConfigInForce(null, initial.Version, initial.LoadedAt);
        _heartbeat = new Timer(_ => OnHeartbeat(), null, HeartbeatInterval, HeartbeatInterval);
    }

    public GatewaySnapshot Current => Volatile.Read(ref _current);
    public UpstreamPoolStore Pools { get; }
    /// <summary>Rate limiter state, kept across reloads for unchanged definitions.</summary>
    public RateLimiting.RateLimiterStore Limiters { get; }
    /// <summary>JWT issuer key sets (fetched JWKS), kept across reloads for unchanged sources.</summary>
    public Security.JwtKeyStore JwtKeys { get; }
    /// <summary>Access log, alerts, anomaly detection and blocks; outlives snapshots (see GatewayObservability.Apply).</summary>
    public GatewayObservability Observability { get; }
    public bool IsDraining => _draining;
    public int ConnectionCount => _connections.Count;

    /// <summary>Replaces the snapshot. Requests already running keep the one they started with.</summary>
    public void Swap(GatewaySnapshot next)
    {
        var previous = Interlocked.Exchange(ref _current, next);
        GatewayMetrics.SetConfigInForce(previous.Version, next.Version, next.LoadedAt);
        if (!ReferenceEquals(previous.Config.Observability, next.Config.Observability)) Observability.Apply(next.Config.Observability);
    }

    internal ConnectionState RentState() => _states.Get();

    internal void ReturnState(ConnectionState state) => _states.Return(state);

    /// <summary>Kestrel connection middleware entry point: one call per client connection.</summary>
    public async Task OnConnectionAsync(ConnectionContext context)
    {
        var connection = new ProxyConnection(context, this);
        _connections.TryAdd(connection, 0);
        GatewayMetrics.ActiveConnections.Inc();
        try
        {
            await connection.RunAsync().ConfigureAwait(false);
        }
        finally
        {
            _connections.TryRemove(connection, out _);
            GatewayMetrics.ActiveConnections.Dec();
            connection.Dispose();
        }
    }

    /// <summary>Stops taking new requests on kept-alive connections and wakes the idle ones so they close.</summary>
    public void BeginDrain()
    {
        _draining = true;
        foreach (var c in _connections.Keys) c.RequestClose();
    }

    private void OnHeartbeat()
    {
        long now = Stopwatch.GetTimestamp();
        foreach (var c in _connections.Keys) c.CheckTimeout(now);
        Pools.EvictIdle();
        foreach (var issuer in Current.Jwt.Issuers) issuer.Keys.Tick(); // scheduled JWKS refreshes
        if (++_ticks % 20 == 0)
        {
            foreach (var l in Limiters.Limiters) l.Sweep(); // idle keys that have refilled completely
        }
    }

    // One scrape callback for every live runtime (prometheus-net callbacks cannot be removed).
    private static readonly ConcurrentDictionary<GatewayRuntime, byte> s_live = Register();

    private static ConcurrentDictionary<GatewayRuntime, byte> Register()
    {
        var live = new ConcurrentDictionary<GatewayRuntime, byte>();
        Prometheus.Metrics.DefaultRegistry.AddBeforeCollectCallback(() =>
        {
            foreach (var runtime in live.Keys)
            {
                foreach (var l in runtime.Limiters.Limiters)
                {
                    GatewayMetrics.RateLimitKeys.WithLabels(l.Definition.Id).Set(l.KeyCount);
                    GatewayMetrics.RateLimitOverflow.WithLabels(l.Definition.Id).Set(l.OverflowHits);
                }
                var policy = runtime.Current.Policy;
                for (int i = 0; i < policy.Rules.Length; i++)
                {
                    if (policy.Rules[i].Mode == Configuration.PolicyMode.Report)
                        GatewayMetrics.PolicyReportMatches.WithLabels(policy.Rules[i].Id).Set(policy.ReportCount(i));
                }
                foreach (var cluster in runtime.Current.Clusters)
                {
                    foreach (var d in cluster.Destinations)
                    {
                        GatewayMetrics.UpstreamConnections.WithLabels(cluster.Id, d.Address, "open").Set(d.Pool.OpenConnections);
                        GatewayMetrics.UpstreamConnections.WithLabels(cluster.Id, d.Address, "idle").Set(d.Pool.IdleConnections);
                    }
                }
            }
        });
        return live;
    }

    public void Dispose()
    {
        _heartbeat.Dispose();
        s_live.TryRemove(this, out _);
        Pools.Dispose();
        Limiters.Dispose();
        Observability.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}
