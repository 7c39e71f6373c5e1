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
        // the previous request's strings are kept where the bytes repeat (a connection's requests mostly do: the
        // method, Host, User-Agent...), so the transaction finds its derived values again (WafTransaction's memos)
        request.Method = Same(request.Method, r[r.MethodRange]);
        request.Uri = Same(request.Uri, r[r.Target]);
        request.Protocol = r.IsHttp11 ? "HTTP/1.1" : "HTTP/1.0";
        request.RemoteAddress = Same(request.RemoteAddress, x.ClientIp);
        request.Body = null;
        var headers = request.Headers;
        int n = 0;
        foreach (var h in r.Headers)
        {
            if (n < headers.Count)
            {
                var (name, value) = headers[n];
                headers[n] = (Same(name, r[h.Name]), Same(value, r[h.Value]));
            }
            else headers.Add((Encoding.Latin1.GetString(r[h.Name]), Encoding.Latin1.GetString(r[h.Value])));
            n++;
        }
        if (headers.Count > n) headers.RemoveRange(n, headers.Count - n);
        var tx = x.WafScratch;
        if (tx is null) x.WafScratch = tx = new WafTransaction(profile.Rules, request);
        else tx.Reset(profile.Rules, request);
        x.Waf = tx;
        if (tx.Evaluate(1)) return profile.Mode == WafMode.Block;
        if (r.HasBody) { x.WafBodyPending = true; return false; }
        return tx.Evaluate(2) && profile.Mode == WafMode.Block;
    }

    /// <summary><paramref name="previous"/> when it holds exactly <paramref name="bytes"/> (as Latin-1), else a new string.</summary>
    internal static string Same(string previous, ReadOnlySpan<byte> bytes)
    {
        if (previous.Length == bytes.Length)
        {
            int i = 0;
            while (i < bytes.Length && previous[i] == bytes[i]) i++;
            if (i == bytes.Length) return previous;
        }
        return Encoding.Latin1.GetString(bytes);
    }

    /// <summary>Phase 2 with the body. True when the request is to be refused (block mode).</summary>
    public static bool InspectBody(WafProfile profile, WafTransaction tx, ReadOnlySpan<byte> body)
    {
        tx.SetBody(body.Length > 0 ? body.ToArray() : null);
        return tx.Evaluate(2) && profile.Mode == WafMode.Block;
    }
}
