using System.Text;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Proxy;
using FastGate.Routing;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Routing;

/// <summary>
/// The indexed router (host table → path trie) against the reference semantics: every entry in specificity order,
/// the first that matches wins, on random route sets and requests (issue 19, item 13).
/// </summary>
public class RouterTests
{
    private static readonly ClusterModel Cluster = new("c", []);
    private static readonly string[] Hosts = ["*", "a.example.com", "b.example.com", "*.example.com", "*.b.example.com", "other.test"];
    private static readonly string[] Paths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/ab", "/b", "/a/b/c", "/c/", "/a/x"];
    private static readonly string[] Methods = ["GET", "POST", "PURGE"];
    private static readonly string[] RequestHosts = ["a.example.com", "b.example.com", "x.b.example.com", "y.example.com", "example.com", "other.test", "none"];
    private static readonly string[] RequestPaths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/b/c/d", "/ab", "/abc", "/b", "/b/x", "/c", "/c/", "/c/x", "/a/x", "/a/xy", "/z"];

    private static RouteEntry Entry(RouteModel route, string host, PathMatchKind kind, string path, string[] methods)
    {
        uint mask = 0;
        var other = new List<byte[]>();
        foreach (var m in methods)
        {
            var known = HttpRequestParser.ClassifyMethod(Encoding.ASCII.GetBytes(m));
            if (known == FastGate.Http.HttpMethod.Other) other.Add(Encoding.ASCII.GetBytes(m));
            else mask |= 1u << (int)known;
        }
        var (hk, h) = host == "*" ? (HostMatchKind.Any, "") : host.StartsWith("*.") ? (HostMatchKind.Suffix, host[1..]) : (HostMatchKind.Exact, host);
        return new RouteEntry
        {
            Route = route, HostKind = hk, Host = Encoding.ASCII.GetBytes(h), PathKind = kind, Path = Encoding.ASCII.GetBytes(path),
            MethodMask = mask, OtherMethods = other.ToArray(),
        };
    }

    /// <summary>The semantics README states, as a linear scan over entries sorted once.</summary>
    private static RouteModel? Reference(List<RouteEntry> entries, RequestHead request)
    {
        var host = Encoding.ASCII.GetString(request.CanonicalHost);
        var path = Encoding.ASCII.GetString(request.CanonicalPath);
        var method = Encoding.ASCII.GetString(request[request.MethodRange]);
        var sorted = entries
            .OrderByDescending(e => e.HostKind switch { HostMatchKind.Exact => 2, HostMatchKind.Suffix => 1, _ => 0 })
            .ThenByDescending(e => e.HostKind == HostMatchKind.Suffix ? e.Host.Length : 0)
            .ThenByDescending(e => e.PathKind switch { PathMatchKind.Exact => 2, PathMatchKind.Prefix => 1, _ => 0 })
            .ThenByDescending(e => e.Path.Length)
            .ThenByDescending(e => e.MethodMask != 0 || e.OtherMethods.Length > 0)
            .ThenBy(e => e.Route.Order);
        foreach (var e in sorted)
        {
            var eh = Encoding.ASCII.GetString(e.Host);
            bool hostOk = e.HostKind switch
            {
                HostMatchKind.Any => true,
                HostMatchKind.Exact => host == eh,
                _ => host.Length > eh.Length && host.EndsWith(eh, StringComparison.Ordinal),
            };
            var ep = Encoding.ASCII.GetString(e.Path);
            bool pathOk = e.PathKind switch
            {
                PathMatchKind.Any => true,
                PathMatchKind.Exact => path == ep,
                _ => path.StartsWith(ep, StringComparison.Ordinal) && (path.Length == ep.Length || ep[^1] == '/' || path[ep.Length] == '/'),
            };
            bool methodOk = (e.MethodMask == 0 && e.OtherMethods.Length == 0)
                            || (e.MethodMask & (1u << (int)request.Method)) != 0
                            || e.OtherMethods.Any(m => Encoding.ASCII.GetString(m) == method);
            if (hostOk && pathOk && methodOk) return e.Route;
        }
        return null;
    }

    [Fact]
    public void Index_MatchesTheReference_OnRandomRouteSets()
    {
        var rng = new Random(19);
        int compared = 0;
        for (int set = 0; set < 150; set++)
        {
            var entries = new List<RouteEntry>();
            int routes = rng.Next(1, 14);
            for (int i = 0; i < routes; i++)
            {
                var route = new RouteModel { Id = "r" + i, Cluster = Cluster, Metrics = new RouteMetrics("router-test", new GatewayMetrics()), Order = i };
                var kind = (PathMatchKind)rng.Next(3);
                var path = kind == PathMatchKind.Any ? "" : Paths[rng.Next(Paths.Length)];
                if (kind == PathMatchKind.Prefix && path == "/") kind = PathMatchKind.Any; // as the compiler does
                var methods = rng.Next(3) == 0 ? new[] { Methods[rng.Next(Methods.Length)] } : [];
                foreach (var host in Enumerable.Range(0, rng.Next(1, 3)).Select(_ => Hosts[rng.Next(Hosts.Length)]).Distinct())
                    entries.Add(Entry(route, host, kind, kind == PathMatchKind.Any ? "" : path, methods));
            }
            var router = new Router(entries);
            foreach (var h in RequestHosts)
            foreach (var p in RequestPaths)
            foreach (var m in Methods)
            {
                var request = Parse($"{m} {p} HTTP/1.1\nHost: {h}\n\n");
                Assert.True(ReferenceEquals(Reference(entries, request), router.Match(request)),
                    $"set {set}: {m} {h}{p}: expected {Reference(entries, request)?.Id ?? "none"}, got {router.Match(request)?.Id ?? "none"}\n"
                    + string.Join("\n", entries.Select(RouteEntry.Describe)));
                compared++;
            }
        }
        Assert.Equal(150 * RequestHosts.Length * RequestPaths.Length * Methods.Length, compared);
    }

    [Fact]
    public void TwoHundredThousandRoutes_EachFoundByItsOwnPath()
    {
        var entries = new List<RouteEntry>();
        var routes = new RouteModel[200_000];
        var metrics = new RouteMetrics("router-test", new GatewayMetrics());
        for (int i = 0; i < routes.Length; i++)
        {
            routes[i] = new RouteModel { Id = "r" + i, Cluster = Cluster, Metrics = metrics, Order = i };
            entries.Add(Entry(routes[i], i % 2 == 0 ? "*" : $"t{i % 100}.example.com", PathMatchKind.Prefix, $"/svc/{i}", []));
        }
        var router = new Router(entries);
        Assert.Equal(200_000, router.EntryCount);
        foreach (int i in new[] { 0, 1, 77_777, 199_998, 199_999 })
        {
            var host = i % 2 == 0 ? "any.test" : $"t{i % 100}.example.com";
            Assert.Same(routes[i], router.Match(Parse($"GET /svc/{i}/x HTTP/1.1\nHost: {host}\n\n")));
        }
        Assert.Null(router.Match(Parse("GET /svc/1/x HTTP/1.1\nHost: any.test\n\n"))); // route 1 is for its host only
    }
}
