using FastGate.Http;

namespace FastGate.Proxy;

// Passive health: every try that Pick started is reported exactly once (Report also releases Pick's in-flight
// count). The forward loop calls EndTry where a try ends; the connection's finally reports a try that an exception
// cut short (the client went away mid-relay of an interim head, and the like) as Abandoned.
internal sealed partial class ProxyConnection
{
    private DestinationModel PickDestination(ClusterModel cluster, DestinationModel? avoid)
    {
        EndTry(UpstreamOutcome.Abandoned); // a try never left open (defensive: each path below ends its own)
        var d = cluster.Pick(_exchange, avoid);
        _fw.TryDestination = d;
        return d;
    }

    private void EndTry(UpstreamOutcome outcome)
    {
        var d = _fw.TryDestination;
        if (d is null) return;
        _fw.TryDestination = null;
        d.Report(outcome);
    }

    /// <summary>How a failed connect counts: pool exhaustion is the gateway's own limit, not the destination's fault.</summary>
    private static UpstreamOutcome ConnectOutcome(RejectReason error) => error switch
    {
        RejectReason.UpstreamConnectTimeout => UpstreamOutcome.Timeout,
        RejectReason.UpstreamUnavailable => UpstreamOutcome.Abandoned,
        _ => UpstreamOutcome.ConnectFailed,
    };

    /// <summary>A try that failed before a response head: a reused (possibly stale) connection's reset says little.</summary>
    private static UpstreamOutcome ResponseFailureOutcome(RejectReason error, bool reused) => error switch
    {
        RejectReason.UpstreamResponseTimeout or RejectReason.RequestTimeout => UpstreamOutcome.Timeout,
        RejectReason.UpstreamReset when reused => UpstreamOutcome.Abandoned,
        _ => UpstreamOutcome.Reset,
    };
}
