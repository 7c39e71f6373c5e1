using System.Text;

namespace FastGate.Proxy;

/// <summary>A compiled cluster: its destinations, used round-robin.</summary>
public sealed class ClusterModel
{
    private int _next = -1;

    public ClusterModel(string id, DestinationModel[] destinations)
    {
        Id = id;
        Destinations = destinations;
    }

    public string Id { get; }
    public DestinationModel[] Destinations { get; }

    public DestinationModel Next()
    {
        var d = Destinations;
        if (d.Length == 1) return d[0];
        uint i = (uint)Interlocked.Increment(ref _next);
        return d[i % (uint)d.Length];
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
}
