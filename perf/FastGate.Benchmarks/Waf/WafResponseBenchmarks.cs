using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Waf;

namespace FastGate.Benchmarks.Waf;

/// <summary>
/// The response phases (3 and 4) with the Debian CRS 3.3.4 at paranoia level 1, on a reused transaction after a
/// benign GET's request phases: a 4 KB HTML page (the RESPONSE-95x rules' @pmFromFile and @rx over the body), the
/// same head with no body read, and a page that leaks a SQL error (951230, then 959100 denies). Measured figures:
/// docs/waf.md "Response inspection cost".
/// </summary>
[MemoryDiagnoser]
public class WafResponseBenchmarks
{
    private WafRuleSet _rules = null!;
    private byte[] _page = [], _leak = [];
    private readonly List<(string, string)> _headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "4096"), ("Cache-Control", "no-cache")];
    private WafTransaction? _tx;
    private readonly WafRequest _get = Get();

    [GlobalSetup]
    public void Setup()
    {
        _rules = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs", ParanoiaLevel = 1 });
        if (_rules.Errors.Count > 0) throw new InvalidOperationException(string.Join("\n", _rules.Errors));
        var sb = new StringBuilder("<html><head><title>Shop</title></head><body>");
        for (int i = 0; sb.Length < 4096 - 20; i++) sb.Append("<p>Item ").Append(i).Append(": a very ordinary product description.</p>");
        _page = Encoding.ASCII.GetBytes(sb.ToString().PadRight(4096 - 14)[..(4096 - 14)] + "</body></html>");
        _leak = Encoding.ASCII.GetBytes("<html><body>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version</body></html>");
    }

    private static WafRequest Get()
    {
        var r = new WafRequest { Method = "GET", Uri = "/products/42?sort=price&page=2", RemoteAddress = "198.51.100.7" };
        r.Headers.Add(("Host", "shop.example.com"));
        r.Headers.Add(("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"));
        r.Headers.Add(("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        return r;
    }

    private WafTransaction Request()
    {
        var tx = _tx;
        if (tx is null) _tx = tx = new WafTransaction(_rules, _get);
        else tx.Reset(_rules, _get);
        tx.Evaluate(1);
        tx.Evaluate(2);
        return tx;
    }

    /// <summary>The request phases alone (what the response cases add to).</summary>
    [Benchmark(Baseline = true)]
    public bool RequestOnly() => Request().Interruption is not null;

    [Benchmark]
    public bool HeadersOnly()
    {
        var tx = Request();
        return tx.EvaluateResponseHeaders(200, "HTTP/1.1", _headers) || tx.EvaluateResponseBody(default, hasBody: false);
    }

    [Benchmark]
    public bool Html4KB()
    {
        var tx = Request();
        return tx.EvaluateResponseHeaders(200, "HTTP/1.1", _headers) || tx.EvaluateResponseBody(_page, hasBody: true);
    }

    [Benchmark]
    public bool SqlErrorLeak()
    {
        var tx = Request();
        return tx.EvaluateResponseHeaders(200, "HTTP/1.1", _headers) || tx.EvaluateResponseBody(_leak, hasBody: true);
    }
}
