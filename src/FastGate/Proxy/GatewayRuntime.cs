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
        Metrics = initial.Metrics;
        if (!ReferenceEquals(pools.Metrics, Metrics)) throw new ArgumentException("the upstream pools belong to another gateway's metrics", nameof(pools));
        if (limiters is not null && !ReferenceEquals(limiters.Metrics, Metrics)) throw new ArgumentException("the limiter store belongs to another gateway's metrics", nameof(limiters));
        if (jwtKeys is not null && !ReferenceEquals(jwtKeys.Metrics, Metrics)) throw new ArgumentException("the JWT key store belongs to another gateway's metrics", nameof(jwtKeys));
        JwtKeys = jwtKeys ?? new Security.JwtKeyStore(time, metrics: Metrics);
        _current = initial;
        Pools = pools;
        Limiters = limiters ?? new RateLimiting.RateLimiterStore(time ?? TimeProvider.System, metrics: Metrics);
        Observability = new GatewayObservability(initial.Config.Observability, time, metrics: Metrics);
        // tracing is set up once per runtime (its exporter outlives snapshots; a changed tracing section needs a restart)
        Tracing = GatewayTracing.Create(initial.Config.Tracing, typeof(GatewayRuntime).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");
        Metrics.SetConfigInForce(null, initial.Version, initial.LoadedAt);
        Metrics.Registry.AddBeforeCollectCallback(CollectGauges);
        _heartbeat = new Timer(_ => OnHeartbeat(), null, HeartbeatInterval, HeartbeatInterval);
        HealthChecks = new Traffic.HealthChecker(() => Current.Clusters, time ?? TimeProvider.System);
        Observability.ClusterHealth = ClusterHealth;
    }

    /// <summary>Active health checks of the clusters in force (one timer for all destinations).</summary>
    public Traffic.HealthChecker HealthChecks { get; }

    /// <summary>How many of a cluster's destinations are usable now (null: no such cluster); feeds the upstreamDown alert.</summary>
    public (int Usable, int Total)? ClusterHealth(string clusterId)
    {
        foreach (var c in Current.Clusters)
        {
            if (c.Id != clusterId) continue;
            long now = c.Traffic.Time.GetTimestamp();
            int usable = 0;
            foreach (var d in c.Destinations) if (d.Health.IsUsable(now)) usable++;
            return (usable, c.Destinations.Length);
        }
        return null;
    }

    public GatewaySnapshot Current => Volatile.Read(ref _current);
    /// <summary>This gateway's metrics and their registry (what its admin /metrics exports); the snapshots it runs are compiled against them.</summary>
    public GatewayMetrics Metrics { get; }
    public UpstreamPoolStore Pools { get; }
    /// <summary>Rate limiter state, kept across reloads for unchanged definitions.</summary>
    public RateLimiting.RateLimiterStore Limiters { get; }
    /// <summary>JWT issuer key sets (fetched JWKS), kept across reloads for unchanged sources.</summary>
    public Security.JwtKeyStore JwtKeys { get; }
    /// <summary>Access log, alerts, anomaly detection and blocks; outlives snapshots (see GatewayObservability.Apply).</summary>
    public GatewayObservability Observability { get; }
    /// <summary>OpenTelemetry spans, or null when tracing is off (no span is then ever started).</summary>
    public GatewayTracing? Tracing { get; }
    public bool IsDraining => _draining;
    public int ConnectionCount => _connections.Count;

    /// <summary>Replaces the snapshot. Requests already running keep the one they started with.</summary>
    public void Swap(GatewaySnapshot next)
    {
        if (!ReferenceEquals(next.Metrics, Metrics)) throw new ArgumentException("the snapshot was compiled for another gateway's metrics", nameof(next));
        var previous = Interlocked.Exchange(ref _current, next);
        Metrics.SetConfigInForce(previous.Version, next.Version, next.LoadedAt);
        if (!ReferenceEquals(previous.Config.Observability, next.Config.Observability)) Observability.Apply(next.Config.Observability);
    }

    internal ConnectionState RentState() => _states.Get();

    internal void ReturnState(ConnectionState state) => _states.Return(state);

    /// <summary>Kestrel connection middleware entry point: one call per client connection.</summary>
    public async Task OnConnectionAsync(ConnectionContext context)
    {
        var connection = new ProxyConnection(context, this);
        _connections.TryAdd(connection, 0);
        Metrics.ActiveConnections.Inc();
        try
        {
            await connection.RunAsync().ConfigureAwait(false);
        }
        finally
        {
            _connections.TryRemove(connection, out _);
            Metrics.ActiveConnections.Dec();
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
        foreach (var c in _connections) c.Key.CheckTimeout(now); // enumerated in place: Keys copies every connection into a new array, each second (8 KB a tick at 1,000 connections)
        Pools.EvictIdle();
        foreach (var issuer in Current.Jwt.Issuers) issuer.Keys.Tick(); // scheduled JWKS refreshes
        if (++_ticks % 20 == 0)
        {
            foreach (var l in Limiters.Limiters) l.Sweep(); // idle keys that have refilled completely
        }
    }

    /// <summary>Before each scrape of this runtime's registry: the gauges read from live state.</summary>
    private void CollectGauges()
    {
        foreach (var l in Limiters.Limiters)
        {
            Metrics.RateLimitKeys.WithLabels(l.Definition.Id).Set(l.KeyCount);
            Metrics.RateLimitOverflow.WithLabels(l.Definition.Id).Set(l.OverflowHits);
            if (l.Definition.Scope == RateLimiting.RateLimitScope.Cluster) Metrics.RateLimitStoreCalls.WithLabels(l.Definition.Id).Set(l.Counters.StoreCalls.Value);
        }
        var current = Current;
        var policy = current.Policy;
        for (int i = 0; i < policy.Rules.Length; i++)
        {
            if (policy.Rules[i].Mode == Configuration.PolicyMode.Report)
                Metrics.PolicyReportMatches.WithLabels(policy.Rules[i].Id).Set(policy.ReportCount(i));
        }
        foreach (var cluster in current.Clusters)
        {
            foreach (var d in cluster.Destinations)
            {
                Metrics.UpstreamConnections.WithLabels(cluster.Id, d.Address, "open").Set(d.Pool.OpenConnections);
                Metrics.UpstreamConnections.WithLabels(cluster.Id, d.Address, "idle").Set(d.Pool.IdleConnections);
            }
        }
        Traffic.HealthChecker.CollectGauges(current, Metrics);
    }

    public void Dispose()
    {
        _heartbeat.Dispose();
        Tracing?.Dispose(); // flushes what is queued
        HealthChecks.Dispose();
        Pools.Dispose();
        Limiters.Dispose();
        Observability.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}
