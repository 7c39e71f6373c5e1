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

    public GatewayRuntime(GatewaySnapshot initial, UpstreamPoolStore pools, TimeProvider? time = null)
    {
        _current = initial;
        Pools = pools;
        Observability = new GatewayObservability(initial.Config.Observability, time);
        GatewayMetrics.EnsureRegistered();
        GatewayMetrics.SetConfigInForce(null, initial.Version, initial.LoadedAt);
        _heartbeat = new Timer(_ => OnHeartbeat(), null, HeartbeatInterval, HeartbeatInterval);
    }

    public GatewaySnapshot Current => Volatile.Read(ref _current);
    public UpstreamPoolStore Pools { get; }
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
    }

    public void Dispose()
    {
        _heartbeat.Dispose();
        Pools.Dispose();
        Observability.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}
