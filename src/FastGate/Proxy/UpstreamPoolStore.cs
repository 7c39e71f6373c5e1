using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using FastGate.Observability;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace FastGate.Proxy;

/// <summary>
/// Upstream pools keyed by destination and pool settings, so that a reload keeping a destination keeps its
/// warm connections. Also owns the socket factory that turns upstream sockets into pipes.
/// </summary>
public sealed class UpstreamPoolStore : IDisposable
{
    private readonly ConcurrentDictionary<string, UpstreamPool> _pools = new(StringComparer.Ordinal);
    // Continuations run on the socket's I/O thread instead of hopping to the thread pool: the proxy loop never
    // blocks, and on a small machine each hop costs more than the work it schedules.
    private readonly SocketConnectionContextFactory _factory = new(
        new SocketConnectionFactoryOptions { UnsafePreferInlineScheduling = true }, NullLogger.Instance);

    /// <param name="metrics">The metrics of the gateway the pools belong to (snapshots compiled with this store count there too).</param>
    public UpstreamPoolStore(GatewayMetrics metrics)
    {
        Metrics = metrics;
        Health = new Traffic.DestinationHealthStore(metrics);
    }

    /// <summary>Destination health (checks, ejections, in-flight counts), kept across reloads like the pools.</summary>
    public Traffic.DestinationHealthStore Health { get; }

    public GatewayMetrics Metrics { get; }

    /// <param name="tls">TLS settings of an https:// destination (part of the key: changed settings get a new pool).</param>
    public UpstreamPool GetOrCreate(string clusterId, EndPoint endPoint, int maxConnections, int maxIdle, TimeSpan idleTimeout,
        UpstreamTlsModel? tls = null)
    {
        string key = $"{clusterId}|{endPoint}|{maxConnections}|{maxIdle}|{idleTimeout.Ticks}|{tls?.Key ?? "plain"}";
        if (_pools.TryGetValue(key, out var pool)) return pool;
        lock (_added)
        {
            pool = _pools.GetOrAdd(key, _ => new UpstreamPool(endPoint, _factory, maxConnections, maxIdle, idleTimeout,
                Metrics.UpstreamConnectionsOpened.WithLabels(clusterId), Metrics, tls, clusterId));
            if (Array.IndexOf(_list, pool) < 0) _list = [.. _list, pool];
            return pool;
        }
    }

    // every pool, for the heartbeat's idle eviction: copied on add (config compiles), walked without a copy each second
    // (ConcurrentDictionary.Values copies the values into a new list)
    private readonly object _added = new();
    private volatile UpstreamPool[] _list = [];

    public IEnumerable<UpstreamPool> Pools => _pools.Values;

    private readonly ConcurrentDictionary<string, Http2Upstream> _http2 = new(StringComparer.Ordinal);

    /// <summary>
    /// The HTTP/2 path's upstream client of a cluster (Proxy/Http2Upstream.cs), kept while its settings are unchanged;
    /// the TLS settings are those of its first https:// destination (a cluster's destinations share its tls section).
    /// </summary>
    internal Http2Upstream Http2Upstream(Configuration.ClusterConfig cluster, Configuration.GatewayConfig config, DestinationModel[] destinations)
    {
        UpstreamTlsModel? tls = null;
        foreach (var d in destinations)
            if (d.Pool.Tls is { } t) { tls = t; break; }
        string key = $"{cluster.Id}|{cluster.Protocol}|{cluster.MaxConnectionsPerDestination}|{cluster.IdleConnectionTimeout.Ticks}|{config.Limits.UpstreamConnectTimeout.Ticks}|{tls?.Key ?? "plain"}";
        return _http2.GetOrAdd(key, _ => new Http2Upstream(cluster, config.Limits.UpstreamConnectTimeout, tls));
    }

    internal void EvictIdle()
    {
        long now = Stopwatch.GetTimestamp();
        foreach (var pool in _list) pool.EvictIdle(now);
    }

    public void Dispose()
    {
        foreach (var pool in _pools.Values) pool.CloseAll();
        foreach (var upstream in _http2.Values) upstream.Dispose();
        _factory.Dispose();
    }
}
