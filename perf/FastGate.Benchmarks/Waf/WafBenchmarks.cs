using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Waf;

namespace FastGate.Benchmarks.Waf;

/// <summary>
/// One WAF inspection (phases 1 and 2) with the Debian CRS 3.3.4 at paranoia level 1: a benign browser GET and a
/// benign 4 KB form POST, and the allocation per inspected request (issue 16's "What it must show"). Needs the
/// modsecurity-crs package (tests/install-deps.sh). Measured figures: docs/waf.md "Speed".
/// </summary>
[MemoryDiagnoser]
public class WafInspectionBenchmarks
{
    private WafRuleSet _rules = null!;
    private byte[] _form = [];

    [GlobalSetup]
    public void Setup()
    {
        _rules = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs", ParanoiaLevel = 1 });
        if (_rules.Errors.Count > 0) throw new InvalidOperationException(string.Join("\n", _rules.Errors));
        var sb = new StringBuilder();
        for (int i = 0; sb.Length < 4096; i++) sb.Append(i == 0 ? "" : "&").Append("field").Append(i).Append("=some+ordinary+text+value+").Append(i);
        _form = Encoding.ASCII.GetBytes(sb.ToString()[..4096]);
    }

    private static WafRequest Browser(string method, string uri)
    {
        var r = new WafRequest { Method = method, Uri = uri, RemoteAddress = "198.51.100.7" };
        r.Headers.Add(("Host", "shop.example.com"));
        r.Headers.Add(("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"));
        r.Headers.Add(("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        r.Headers.Add(("Accept-Language", "en-US,en;q=0.5"));
        r.Headers.Add(("Cookie", "session=3f9a1c; theme=dark"));
        return r;
    }

    [Benchmark(Baseline = true)]
    public bool BenignGet()
    {
        var tx = new WafTransaction(_rules, Browser("GET", "/products/42?sort=price&page=2"));
        return tx.Evaluate(1) || tx.Evaluate(2);
    }

    private WafTransaction? _reused;
    private readonly WafRequest _get = Browser("GET", "/products/42?sort=price&page=2");

    /// <summary>As on the request path: the exchange's transaction (its collections, tables, caches) reset per request.</summary>
    [Benchmark]
    public bool BenignGetReused()
    {
        var tx = _reused;
        if (tx is null) _reused = tx = new WafTransaction(_rules, _get);
        else tx.Reset(_rules, _get);
        return tx.Evaluate(1) || tx.Evaluate(2);
    }

    private WafTransaction? _plainTx;
    private readonly WafRequest _plain = Plain();

    private static WafRequest Plain()
    {
        var r = new WafRequest { Method = "GET", Uri = "/", RemoteAddress = "127.0.0.1" };
        r.Headers.Add(("Host", "127.0.0.1:18001"));
        return r;
    }

    /// <summary>wrk's `GET /` with its one Host header (the compare rows' request), on a reused transaction as a
    /// keep-alive connection runs it: what the kept per-connection results (operator results, transformed values)
    /// save shows here.</summary>
    [Benchmark]
    public bool PlainGetReused()
    {
        var tx = _plainTx;
        if (tx is null) _plainTx = tx = new WafTransaction(_rules, _plain);
        else tx.Reset(_rules, _plain);
        return tx.Evaluate(1) || tx.Evaluate(2);
    }

    [Benchmark]
    public bool FormPost4K()
    {
        var r = Browser("POST", "/account/settings");
        r.Headers.Add(("Content-Type", "application/x-www-form-urlencoded"));
        r.Headers.Add(("Content-Length", _form.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var tx = new WafTransaction(_rules, r);
        if (tx.Evaluate(1)) return true;
        tx.SetBody(_form);
        return tx.Evaluate(2);
    }
}
