using FastGate.Routing;

namespace FastGate.Proxy;

// The connection's side of the WAF (routes with a profile only): phase 2 on the buffered body before the lease,
// and the per-request record (metrics by profile, rule and outcome; the access log's "waf" field).
internal sealed partial class ProxyConnection
{
    /// <summary>Runs the WAF's phase 2 on the body read so far (the whole body when it fit requestBufferBytes). True: refuse.</summary>
    private bool InspectBody()
    {
        var tx = _exchange.Waf!;
        _exchange.WafBodyPending = false;
        var body = _fw.BufferedLength > 0 && _bodyBuffer is not null ? _bodyBuffer.AsSpan(0, _fw.BufferedLength) : default;
        return Waf.WafStep.InspectBody(_exchange.Route!.Waf!, tx, body);
    }

    private static string? RecordWaf(RouteModel? route, Waf.WafTransaction tx)
    {
        if (route?.Waf is not { } profile) return null;
        profile.Record(tx);
        return Waf.WafProfile.Summary(tx);
    }
}
