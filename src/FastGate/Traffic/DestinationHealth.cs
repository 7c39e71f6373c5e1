using System.Collections.Concurrent;
using FastGate.Observability;
using Prometheus;

namespace FastGate.Traffic;

/// <summary>What /admin/clusters and the state gauge say about a destination.</summary>
public enum DestinationState : byte
{
    /// <summary>In rotation.</summary>
    Healthy,
    /// <summary>Failed its active health checks (unhealthyThreshold in a row).</summary>
    Unhealthy,
    /// <summary>Ejected by outlier detection until <see cref="DestinationHealth.EjectedUntil"/>.</summary>
    Ejected,
}

/// <summary>
/// The live health of one destination (a cluster id and an address), kept by the runtime across config reloads
/// (<see cref="DestinationHealthStore"/>): the snapshot's <see cref="Proxy.DestinationModel"/> points here. Every field
/// is a plain word written with Interlocked/Volatile, so the request path reads it without locks. Timestamps are in
/// the units of the cluster's <see cref="TimeProvider"/> (0: never).
/// </summary>
public sealed class DestinationHealth
{
    // request path (Pick/Report)
    internal int InFlight;
    internal int Consecutive5xx;
    internal int ConsecutiveGatewayFailures;
    private long _ejectedUntil;
    // outlier detection bookkeeping
    internal int EjectionMultiplier;
    internal long EjectionCount;
    internal long LastEjectedAt;
    internal long MultiplierDecayAt;
    // active checks (written by the one health-check loop only)
    private int _activeUnhealthy;
    internal int ProbeStreak; // consecutive probes that disagree with the current active state
    internal int ProbeSuccessesSinceEjection;
    internal long NextCheckAt;
    internal int Probing;
    internal long LastCheckAt;
    internal long LastCheckWallTicks;
    internal volatile string? LastCheckResult;
    /// <summary>When the destination last became usable again (for slow start); 0: usable since it was added.</summary>
    private long _usableSince;

    internal DestinationHealth(string clusterId, string address, GatewayMetrics? metrics)
    {
        ClusterId = clusterId;
        Address = address;
        if (metrics is not null)
        {
            Ejections = metrics.DestinationEjections.WithLabels(clusterId, address);
            ChecksPassed = metrics.HealthChecks.WithLabels(clusterId, address, "success");
            ChecksFailed = metrics.HealthChecks.WithLabels(clusterId, address, "failure");
        }
    }

    /// <summary>A destination with no runtime behind it (tests, models built by hand): same behaviour, no metrics.</summary>
    public static DestinationHealth Standalone(string clusterId, string address) => new(clusterId, address, null);

    public string ClusterId { get; }
    public string Address { get; }
    internal Counter.Child? Ejections { get; }
    internal Counter.Child? ChecksPassed { get; }
    internal Counter.Child? ChecksFailed { get; }

    public bool ActiveHealthy => Volatile.Read(ref _activeUnhealthy) == 0;
    public long EjectedUntil => Volatile.Read(ref _ejectedUntil);
    public int InFlightCount => Volatile.Read(ref InFlight);
    public long Ejected => Volatile.Read(ref EjectionCount);
    public long UsableSince => Volatile.Read(ref _usableSince);

    /// <summary>Usable for new tries at <paramref name="now"/>: passing its checks and not ejected.</summary>
    public bool IsUsable(long now) => Volatile.Read(ref _activeUnhealthy) == 0 && Volatile.Read(ref _ejectedUntil) <= now;

    public DestinationState StateAt(long now) =>
        Volatile.Read(ref _ejectedUntil) > now ? DestinationState.Ejected
        : Volatile.Read(ref _activeUnhealthy) != 0 ? DestinationState.Unhealthy
        : DestinationState.Healthy;

    /// <summary>Ejects until <paramref name="until"/> unless another thread ejected it since <paramref name="seen"/>.</summary>
    internal bool TryEject(long seen, long until) => Interlocked.CompareExchange(ref _ejectedUntil, until, seen) == seen;

    /// <summary>Ends an ejection early (its active checks passed again); the slow start runs from now.</summary>
    internal void EndEjection(long now)
    {
        long until = Volatile.Read(ref _ejectedUntil);
        if (until > now && Interlocked.CompareExchange(ref _ejectedUntil, now, until) == until) Volatile.Write(ref _usableSince, now);
    }

    /// <summary>The active checks' verdict changed (or was reset when the cluster's checks were removed).</summary>
    internal void SetActiveHealthy(bool healthy, long now)
    {
        int was = Interlocked.Exchange(ref _activeUnhealthy, healthy ? 0 : 1);
        if (healthy && was != 0) Volatile.Write(ref _usableSince, Math.Max(now, Volatile.Read(ref _ejectedUntil)));
    }

    internal void NoteEjectionEnds(long until) => Volatile.Write(ref _usableSince, until);
}

/// <summary>
/// The runtime's destination health, keyed by cluster id and destination address, so a reload that keeps a
/// destination keeps its state (ejection, check streaks, counters). Owned by <see cref="Proxy.UpstreamPoolStore"/>
/// (the runtime-lived store every snapshot is compiled with).
/// </summary>
public sealed class DestinationHealthStore
{
    private readonly ConcurrentDictionary<(string Cluster, string Address), DestinationHealth> _entries = new();

    public DestinationHealthStore(GatewayMetrics metrics) => Metrics = metrics;

    public GatewayMetrics Metrics { get; }

    public DestinationHealth GetOrCreate(string clusterId, string address) =>
        _entries.GetOrAdd((clusterId, address), k => new DestinationHealth(k.Cluster, k.Address, Metrics));

    /// <summary>Forgets destinations that the config in force no longer has (their metric series go too).</summary>
    public void Retain(IEnumerable<(string Cluster, string Address)> keep)
    {
        var set = keep.ToHashSet();
        foreach (var key in _entries.Keys)
        {
            if (set.Contains(key) || !_entries.TryRemove(key, out _)) continue;
            Metrics.DestinationEjections.RemoveLabelled(key.Cluster, key.Address);
            Metrics.HealthChecks.RemoveLabelled(key.Cluster, key.Address, "success");
            Metrics.HealthChecks.RemoveLabelled(key.Cluster, key.Address, "failure");
            foreach (var s in StateLabels) Metrics.DestinationState.RemoveLabelled(key.Cluster, key.Address, s);
        }
    }

    public int Count => _entries.Count;

    internal static readonly string[] StateLabels = ["healthy", "unhealthy", "ejected"];
}
