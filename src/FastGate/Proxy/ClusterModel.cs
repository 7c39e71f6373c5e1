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
}

/// <summary>A compiled cluster: its destinations and how one is chosen for a request.</summary>
public sealed class ClusterModel
{
    private int _next = -1;

    public ClusterModel(string id, DestinationModel[] destinations, ClusterResilience resilience)
    {
        Id = id;
        Destinations = destinations;
        Resilience = resilience;
    }

    public string Id { get; }
    /// <summary>Retry policy and budget, circuit breaker (Proxy/ClusterResilience.cs).</summary>
    public ClusterResilience Resilience { get; }
    public DestinationModel[] Destinations { get; }

    /// <summary>Round-robin over all destinations (kept for callers that have no exchange).</summary>
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
    /// usable. Synchronous, lock-free and allocation-free: it runs on every request.
    /// </summary>
    public DestinationModel Pick(Pipeline.Exchange exchange, DestinationModel? avoid)
    {
        var d = Destinations;
        if (d.Length == 1) return d[0];
        uint i = (uint)Interlocked.Increment(ref _next);
        var chosen = d[i % (uint)d.Length];
        return ReferenceEquals(chosen, avoid) ? d[(i + 1) % (uint)d.Length] : chosen;
    }
}

/// <summary>One upstream address and its connection pool.</summary>
public sealed class DestinationModel
{
    public DestinationModel(string address, string authority, UpstreamPool pool)
    {
        Address = address;
        Authority = Encoding.ASCII.GetBytes(authority);
        Pool = pool;
    }

    public string Address { get; }
    /// <summary>"host:port", sent as the Host header unless the route preserves the client's.</summary>
    public byte[] Authority { get; }
    public UpstreamPool Pool { get; }

    /// <summary>
    /// Reports how one try ended, for passive health (outlier detection). Called once per try by the forward loop;
    /// must be lock-free and allocation-free.
    /// </summary>
    public void Report(UpstreamOutcome outcome)
    {
    }
}
