using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Proxy;
using FastGate.Routing;

namespace FastGate.Benchmarks.Routing;

/// <summary>
/// One route match (host table → path trie) at 10, 10,000 and 200,000 routes; the cost must not grow with the count
/// (the linear scan it replaced took ~56 ms per request at 200,000 routes), and it must be 0 B/op. Also the canonical
/// view of a head that needs rewriting (escapes, "//", upper-case host), which every request pays for at parse.
/// </summary>
[MemoryDiagnoser]
public class RouterBenchmarks
{
    [Params(10, 10_000, 200_000)]
    public int Routes { get; set; }

    private Router _router = null!;
    private readonly RequestHead _hit = new(), _miss = new(), _canonical = new();
    private byte[] _canonicalBytes = [];

    [GlobalSetup]
    public void Setup()
    {
        var metricsRoot = new GatewayMetrics();
        var cluster = new ClusterModel("c", [], FastGate.Traffic.ClusterTraffic.Default, new ClusterResilience("c", new(), new(), metricsRoot));
        var metrics = new RouteMetrics("bench", metricsRoot);
        var entries = new List<RouteEntry>();
        for (int i = 0; i < Routes; i++)
        {
            var route = new RouteModel { Id = "r" + i, Cluster = cluster, Metrics = metrics, Order = i };
            entries.Add(new RouteEntry
            {
                Route = route,
                Host = i % 3 == 0 ? HostPattern.Any : HostPattern.Parse($"t{i % 500}.example.com"),
                PathKind = PathMatchKind.Prefix,
                Path = Encoding.ASCII.GetBytes($"/svc/{i}/v1"),
            });
        }
        _router = new Router(entries);
        int last = Routes - 1;
        Parse(_hit, $"GET /svc/{last}/v1/orders/7 HTTP/1.1\r\nHost: t{last % 500}.example.com\r\n\r\n");
        Parse(_miss, "GET /nothing/here HTTP/1.1\r\nHost: unknown.example.org\r\n\r\n");
        _canonicalBytes = Encoding.ASCII.GetBytes("GET //svc/%31/v1/%7euser/a%2dz HTTP/1.1\r\nHost: T1.Example.COM.:8080\r\nX_Consumer_Id: x\r\n\r\n");
    }

    private static void Parse(RequestHead head, string text)
    {
        if (HttpRequestParser.TryParse(Encoding.ASCII.GetBytes(text), HttpLimits.Default, head, out _, out var reason) != ParseStatus.Complete)
            throw new InvalidOperationException(reason.ToString());
    }

    [Benchmark]
    public RouteModel? MatchHit() => _router.Match(_hit);

    [Benchmark]
    public RouteModel? MatchMiss() => _router.Match(_miss);

    [Benchmark]
    public int ParseWithCanonicalRewrite()
    {
        HttpRequestParser.TryParse(_canonicalBytes, HttpLimits.Default, _canonical, out int consumed, out _);
        return consumed + _canonical.CanonicalPath.Length;
    }
}
