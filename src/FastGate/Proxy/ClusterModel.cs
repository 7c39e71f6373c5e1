using System.Text;

namespace FastGate.Proxy;

/// <summary>How one try against a destination ended, as the forward loop saw it (fed to passive health).</summary>
public enum UpstreamOutcome : byte
{
    /// <summary>A response head arrived that is not a failure (anything but 5xx, or a 5xx the cluster does not count).</summary>
    Success,
    /// <summary>The TCP (or TLS) connection could not be opened: the request was never sent.</summary>
    ConnectFailed,
    /// <summary>No response head within the response timeout (or the connect timed out).</summary>
    Timeout,
    /// <summary>The connection broke before a complete response head (reset, EOF, malformed head).</summary>
    Reset,
    /// <summary>A 5xx response head (502/503/504 and others).</summary>
    ServerError,
    /// <summary>
    /// The try ended for a reason that says nothing about the destination (the client went away or sent a bad body,
    /// the request timed out before it was sent, a stale pooled connection): it only releases the in-flight count.
    /// </summary>
    Abandoned,
}

/// <summary>A compiled cluster: its destinations and how one is chosen for a request (src/FastGate/Traffic).</summary>
public sealed class ClusterModel
{
    private int _next = -1;

    public ClusterModel(string id, DestinationModel[] destinations, global::FastGate.Traffic.ClusterTraffic traffic, ClusterResilience resilience)
    {
        Id = id;
        Destinations = destinations;
        Traffic = traffic;
        Resilience = resilience;
        for (int i = 0; i < destinations.Length; i++)
        {
            destinations[i].Cluster = this;
            destinations[i].Index = i;
        }
        var weights = destinations.Select(d => d.Weight).ToArray();
        Schedule = destinations.Length == 0 ? [0] : global::FastGate.Traffic.RoundRobinSchedule.Build(weights);
        WeightPrefix = new long[Math.Max(1, destinations.Length)];
        long sum = 0;
        for (int i = 0; i < destinations.Length; i++) WeightPrefix[i] = sum += weights[i];
        if (traffic.Policy == global::FastGate.Traffic.BalancingPolicy.ConsistentHash && destinations.Length > 0)
            Ring = new global::FastGate.Traffic.HashRing(destinations.Select(d => (d.Address, d.Weight)).ToArray());
    }

    public string Id { get; }
    /// <summary>What the user wrote for this cluster (the h2 upstream reads its protocol and connection settings).</summary>
    public Configuration.ClusterConfig? Config { get; init; }
    public Configuration.UpstreamProtocol Protocol => Config?.Protocol ?? Configuration.UpstreamProtocol.Http1;
    /// <summary>The HTTP/2 path's upstream client for this cluster (shared across reloads by UpstreamPoolStore).</summary>
    internal Http2Upstream? Http2 { get; init; }
    /// <summary>Retry policy and budget, circuit breaker (Proxy/ClusterResilience.cs).</summary>
    public ClusterResilience Resilience { get; }
    public DestinationModel[] Destinations { get; }
    /// <summary>Health checks, outlier detection and balancing settings.</summary>
    public global::FastGate.Traffic.ClusterTraffic Traffic { get; }
    /// <summary>Destination indexes in smooth weighted round-robin order (one cycle).</summary>
    internal int[] Schedule { get; }
    /// <summary>Running sums of the destinations' weights (weighted random).</summary>
    internal long[] WeightPrefix { get; }
    /// <summary>The consistent-hash ring (consistentHash only).</summary>
    internal global::FastGate.Traffic.HashRing? Ring { get; }

    internal uint NextTicket() => (uint)Interlocked.Increment(ref _next);

    /// <summary>Round-robin over all destinations (kept for callers that have no exchange; no health, no in-flight count).</summary>
    public DestinationModel Next()
    {
        var d = Destinations;
        if (d.Length == 1) return d[0];
        uint i = (uint)Interlocked.Increment(ref _next);
        return d[i % (uint)d.Length];
    }

    /// <summary>
    /// The destination for one try of <paramref name="exchange"/>: the cluster's balancing policy over its usable
    /// destinations, never <paramref name="avoid"/> (the destination a previous try failed on) when another one is
    /// usable; when none is usable, panic mode: all of them. Synchronous, lock-free and allocation-free: it runs on
    /// every request. Counts a try in flight on the destination: call <see cref="DestinationModel.Report"/> exactly once
    /// for each Pick.
    /// </summary>
    public DestinationModel Pick(Pipeline.Exchange exchange, DestinationModel? avoid)
    {
        var d = Destinations;
        var chosen = d.Length == 1 ? d[0] : d[global::FastGate.Traffic.Balancer.Pick(this, exchange, avoid)];
        Interlocked.Increment(ref chosen.Health.InFlight);
        return chosen;
    }
}

/// <summary>One upstream address, its connection pool and its (runtime-kept) health.</summary>
public sealed class DestinationModel
{
    public DestinationModel(string address, string authority, UpstreamPool pool)
        : this(address, authority, pool, 1, global::FastGate.Traffic.DestinationHealth.Standalone("", address))
    {
    }

    public DestinationModel(string address, string authority, UpstreamPool pool, int weight, global::FastGate.Traffic.DestinationHealth health)
    {
        Address = address;
        Authority = Encoding.ASCII.GetBytes(authority);
        Pool = pool;
        Weight = weight;
        Health = health;
    }

    public string Address { get; }
    /// <summary>"host:port", sent as the Host header unless the route preserves the client's.</summary>
    public byte[] Authority { get; }
    public UpstreamPool Pool { get; }
    public int Weight { get; }
    /// <summary>The live state (kept across reloads by the runtime, keyed by cluster id and address).</summary>
    public global::FastGate.Traffic.DestinationHealth Health { get; }
    /// <summary>The cluster this destination belongs to (set when the cluster is built).</summary>
    public ClusterModel? Cluster { get; internal set; }
    /// <summary>Position in <see cref="ClusterModel.Destinations"/>.</summary>
    public int Index { get; internal set; }

    /// <summary>
    /// Reports how one try ended, for passive health (outlier detection). Called once per try by the forward loop;
    /// must be lock-free and allocation-free.
    /// </summary>
    public void Report(UpstreamOutcome outcome)
    {
        Interlocked.Decrement(ref Health.InFlight);
        global::FastGate.Traffic.OutlierDetector.Report(this, outcome);
    }
}
