using System.Text;
using FastGate.Http;
using FastGate.Pipeline;

namespace FastGate.Waf;

/// <summary>The WAF's two steps on the request path: phase 1 in Admission.Decide, phase 2 on the buffered body.</summary>
public static class WafStep
{
    /// <summary>Phase 1 (and 2 when there is no body). True when the request is to be refused (block mode).</summary>
    public static bool Inspect(WafProfile profile, Exchange x)
    {
        var r = x.Request;
        // the exchange's request view and transaction are reused request after request (their lists and caches too)
        var request = x.WafRequestScratch ??= new WafRequest();
        request.Method = Encoding.Latin1.GetString(r[r.MethodRange]);
        request.Uri = Encoding.Latin1.GetString(r[r.Target]);
        request.Protocol = r.IsHttp11 ? "HTTP/1.1" : "HTTP/1.0";
        request.RemoteAddress = Encoding.Latin1.GetString(x.ClientIp);
        request.Body = null;
        request.Headers.Clear();
        foreach (var h in r.Headers) request.Headers.Add((Encoding.Latin1.GetString(r[h.Name]), Encoding.Latin1.GetString(r[h.Value])));
        var tx = x.WafScratch;
        if (tx is null) x.WafScratch = tx = new WafTransaction(profile.Rules, request);
        else tx.Reset(profile.Rules, request);
        x.Waf = tx;
        if (tx.Evaluate(1)) return profile.Mode == WafMode.Block;
        if (r.HasBody) { x.WafBodyPending = true; return false; }
        return tx.Evaluate(2) && profile.Mode == WafMode.Block;
    }

    /// <summary>Phase 2 with the body. True when the request is to be refused (block mode).</summary>
    public static bool InspectBody(WafProfile profile, WafTransaction tx, ReadOnlySpan<byte> body)
    {
        tx.SetBody(body.Length > 0 ? body.ToArray() : null);
        return tx.Evaluate(2) && profile.Mode == WafMode.Block;
    }
}
