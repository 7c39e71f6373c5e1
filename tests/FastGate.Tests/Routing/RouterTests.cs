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
    private static readonly ClusterModel Cluster = new("c", [], FastGate.Traffic.ClusterTraffic.Default, new ClusterResilience("c", new(), new(), new GatewayMetrics()));
    private static readonly string[] Hosts = ["*", "a.example.com", "b.example.com", "*.example.com", "*.b.example.com", "other.test"];
    private static readonly string[] Paths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/ab", "/b", "/a/b/c", "/c/", "/a/x"];
    private static readonly string[] Methods = ["GET", "POST", "PURGE"];
    private static readonly string[] RequestHosts = ["a.example.com", "b.example.com", "x.b.example.com", "y.example.com", "example.com", "other.test", "none"];
    private static readonly string[] RequestPaths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/b/c/d", "/ab", "/abc", "/b", "/b/x", "/c", "/c/", "/c/x", "/a/x", "/a/xy", "/z"];

    private static RouteEntry Entry(RouteModel route, string host, PathMatchKind kind, string path, string[] methods) => new()
    {
        Route = route, Host = HostPattern.Parse(host), PathKind = kind, Path = Encoding.ASCII.GetBytes(path), Methods = MethodSet.Parse(methods),
    };

    private static string Describe(RouteEntry e) =>
        $"{e.Route.Id} host={e.Host} path={e.PathKind}:{Encoding.ASCII.GetString(e.Path)}";

    /// <summary>The semantics README states, as a linear scan over entries sorted once.</summary>
    private static RouteModel? Reference(List<RouteEntry> entries, RequestHead request)
    {
        var host = Encoding.ASCII.GetString(request.CanonicalHost);
        var path = Encoding.ASCII.GetString(request.CanonicalPath);
        var method = Encoding.ASCII.GetString(request[request.MethodRange]);
        var sorted = entries
            .OrderByDescending(e => e.Host.Kind switch { HostKind.Exact => 2, HostKind.Suffix => 1, _ => 0 })
            .ThenByDescending(e => e.Host.Kind == HostKind.Suffix ? e.Host.Key.Length : 0)
            .ThenByDescending(e => e.PathKind switch { PathMatchKind.Exact => 2, PathMatchKind.Prefix => 1, _ => 0 })
            // "/a/b/" and "/a/b" are one exact path (it matches with or without the trailing '/')
            .ThenByDescending(e => e.PathKind == PathMatchKind.Exact && e.Path.Length > 1 && e.Path[^1] == (byte)'/' ? e.Path.Length - 1 : e.Path.Length)
            .ThenByDescending(e => !e.Methods.IsAny)
            .ThenBy(e => e.Route.Order);
        foreach (var e in sorted)
        {
            var eh = Encoding.ASCII.GetString(e.Host.Key);
            bool hostOk = e.Host.Kind switch
            {
                HostKind.Any => true,
                HostKind.Exact => host == eh,
                _ => host.Length > eh.Length && host.EndsWith(eh, StringComparison.Ordinal),
            };
            var ep = Encoding.ASCII.GetString(e.Path);
            bool pathOk = e.PathKind switch
            {
                PathMatchKind.Any => true,
                PathMatchKind.Exact => path == ep || (ep.Length > 1 && (ep[^1] == '/' ? path == ep[..^1] : path == ep + "/")),
                _ => path.StartsWith(ep, StringComparison.Ordinal) && (path.Length == ep.Length || ep[^1] == '/' || path[ep.Length] == '/'),
            };
            // written out from the README, not through MethodSet.Matches
            bool methodOk = e.Methods.IsAny
                            || (request.Method != FastGate.Http.HttpMethod.Other && (e.Methods.Mask & (1u << (int)request.Method)) != 0)
                            || e.Methods.Others.Any(m => Encoding.ASCII.GetString(m) == method);
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
                    + string.Join("\n", entries.Select(Describe)));
                compared++;
            }
        }
        Assert.Equal(150 * RequestHosts.Length * RequestPaths.Length * Methods.Length, compared);
    }

    /// <summary>One route set for the README's rules ("Routes match on host ..."), in file order.</summary>
    private static readonly Lazy<Router> Readme = new(() =>
    {
        RouteModel R(string id, int order) => new() { Id = id, Cluster = Cluster, Metrics = new RouteMetrics("router-test", new GatewayMetrics()), Order = order };
        (string Id, string Host, PathMatchKind Kind, string Path, string[] Methods)[] table =
        [
            ("api", "*", PathMatchKind.Prefix, "/api", []),
            ("status", "*", PathMatchKind.Exact, "/api/status", []),
            ("v1", "*", PathMatchKind.Prefix, "/api/v1", []),
            ("api-post", "*", PathMatchKind.Prefix, "/api", ["POST"]),
            ("wildcard", "*.example.com", PathMatchKind.Prefix, "/api", []),
            ("exact-host", "a.example.com", PathMatchKind.Any, "", []),
            ("longer-wildcard", "*.b.example.com", PathMatchKind.Prefix, "/api", []),
            ("docs-first", "*", PathMatchKind.Prefix, "/docs", []),
            ("docs-second", "*", PathMatchKind.Prefix, "/docs", []),
            ("purge", "*", PathMatchKind.Prefix, "/cache", ["PURGE"]),
            ("catch-all", "*", PathMatchKind.Any, "", []),
        ];
        return new Router(table.Select((t, i) => Entry(R(t.Id, i), t.Host, t.Kind, t.Path, t.Methods)));
    });

    [Theory]
    // pathPrefix is segment-aware: /api matches /api and /api/x, not /apix
    [InlineData("GET", "other.test", "/api", "api")]
    [InlineData("GET", "other.test", "/api/x", "api")]
    [InlineData("GET", "other.test", "/apix", "catch-all")]
    // exact path before prefix; longer prefix before shorter
    [InlineData("GET", "other.test", "/api/status", "status")]
    [InlineData("GET", "other.test", "/api/status/x", "api")]
    [InlineData("GET", "other.test", "/api/v1/users", "v1")]
    // method-restricted first (for the same path), but a longer prefix still wins
    [InlineData("POST", "other.test", "/api/x", "api-post")]
    [InlineData("POST", "other.test", "/api/v1/x", "v1")]
    [InlineData("PURGE", "other.test", "/cache/x", "purge")]
    [InlineData("GET", "other.test", "/cache/x", "catch-all")]
    // exact host, then wildcard (longer suffix first), then any; a wildcard does not match the bare domain
    [InlineData("GET", "a.example.com", "/api/x", "exact-host")]
    [InlineData("GET", "x.example.com", "/api/x", "wildcard")]
    [InlineData("GET", "x.b.example.com", "/api/x", "longer-wildcard")]
    [InlineData("GET", "example.com", "/api/x", "api")]
    // then file order
    [InlineData("GET", "other.test", "/docs/a", "docs-first")]
    // the canonical host and path: lower-case, no trailing dot, no port; "//" merged and %61 decoded; case kept in paths
    [InlineData("GET", "A.Example.COM.", "/x", "exact-host")]
    [InlineData("GET", "a.example.com:8080", "/x", "exact-host")]
    [InlineData("GET", "other.test", "//api//x", "api")]
    [InlineData("GET", "other.test", "/%61pi/x", "api")]
    [InlineData("GET", "other.test", "/API/x", "catch-all")]
    public void ReadmeRules_PickTheMostSpecificRoute(string method, string host, string path, string expected)
    {
        var request = Parse($"{method} {path} HTTP/1.1\nHost: {host}\n\n");
        Assert.Equal(expected, Readme.Value.Match(request)?.Id);
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
        foreach (int i in new[] { 0, 1, 77_777, 199_998, 199_999 })
        {
            var host = i % 2 == 0 ? "any.test" : $"t{i % 100}.example.com";
            Assert.Same(routes[i], router.Match(Parse($"GET /svc/{i}/x HTTP/1.1\nHost: {host}\n\n")));
        }
        Assert.Null(router.Match(Parse("GET /svc/1/x HTTP/1.1\nHost: any.test\n\n"))); // route 1 is for its host only
    }

    /// <summary>
    /// Router and policy read the same host, method and path strings alike: a route and a rule written with the same
    /// hosts, path (exact, or prefix as "/p/*") and methods match exactly the same requests (issue 12).
    /// </summary>
    [Fact]
    public void RouteAndRule_WithTheSameConditions_MatchTheSameRequests()
    {
        string[] hosts = ["*", "a.example.com", "*.example.com", "*.b.example.com", "A.Example.COM.", "*.B.example.com."];
        string[] exactPaths = ["/", "/a", "/a/b", "/ab"];
        string[] prefixes = ["/a", "/a/b", "/b"];
        string[][] methods = [[], ["GET"], ["POST", "PURGE"]];
        string[] requestPaths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/ab", "/abc", "/b", "/b/x", "/c", "//a/b", "/%61/b"];
        int compared = 0;
        foreach (var host in hosts)
        foreach (var (kind, path) in exactPaths.Select(p => (PathMatchKind.Exact, p)).Concat(prefixes.Select(p => (PathMatchKind.Prefix, p))))
        foreach (var m in methods)
        {
            var route = new RouteModel { Id = "r", Cluster = Cluster, Metrics = new RouteMetrics("router-test", new GatewayMetrics()), Order = 0 };
            var router = new Router([Entry(route, host, kind, path, m)]);
            var pattern = kind == PathMatchKind.Exact ? path : path + "/*";
            var methodList = string.Join(", ", m.Select(x => $"\"{x}\""));
            var policy = Compile($$"""
                "policies": [ { "id": "p", "match": { "hosts": ["{{host}}"], "paths": ["{{pattern}}"]{{(m.Length > 0 ? $", \"methods\": [{methodList}]" : "")}} }, "actions": [ { "type": "deny" } ] } ]
                """);
            foreach (var rh in RequestHosts)
            foreach (var rp in requestPaths)
            foreach (var rm in Methods)
            {
                var request = Parse($"{rm} {rp} HTTP/1.1\nHost: {rh}\n\n");
                bool routed = router.Match(request) is not null;
                bool ruled = Evaluate(policy, request).Verdict == FastGate.Policy.PolicyVerdict.Deny;
                Assert.True(routed == ruled, $"{rm} {rh}{rp}: route ({host} {kind} {path} [{methodList}]) {routed}, rule {ruled}");
                compared++;
            }
        }
        Assert.Equal(hosts.Length * (exactPaths.Length + prefixes.Length) * methods.Length * RequestHosts.Length * requestPaths.Length * Methods.Length, compared);
    }
}
