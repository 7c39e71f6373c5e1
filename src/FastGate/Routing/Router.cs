using FastGate.Http;
using FastGate.Policy;

namespace FastGate.Routing;

/// <summary>
/// Picks the most specific route for a request's canonical host and path (RequestCanonicalizer): exact host before
/// wildcard suffix (longer first) before any host; within a host, exact path before prefix, longer prefix before
/// shorter, before no path condition (an exact path also matches with a trailing '/'); routes restricted to methods before routes for any method; then declaration
/// order. Routes are indexed as the policy's rules are: a host table, then a trie over path segments, so the cost of
/// a match does not grow with the number of routes. Allocation-free and lock-free.
/// </summary>
public sealed class Router
{
    private readonly ByteKeyTable<RouteNode> _exactHosts;
    private readonly ByteKeyTable<RouteNode> _suffixHosts;
    private readonly RouteNode? _anyHost;

    internal Router(IEnumerable<RouteEntry> entries)
    {
        var list = entries.ToList();
        var exact = new Dictionary<string, RouteNode>(StringComparer.Ordinal);
        var suffix = new Dictionary<string, RouteNode>(StringComparer.Ordinal);
        RouteNode? any = null;
        foreach (var e in list)
        {
            var root = e.Host.Kind switch
            {
                HostKind.Exact => GetOrAdd(exact, e.Host.Key),
                HostKind.Suffix => GetOrAdd(suffix, e.Host.Key),
                _ => any ??= new RouteNode(null),
            };
            root.Add(e);
        }
        foreach (var n in exact.Values.Concat(suffix.Values)) n.Seal();
        any?.Seal();
        _exactHosts = new ByteKeyTable<RouteNode>(exact.Select(p => KeyValuePair.Create(System.Text.Encoding.ASCII.GetBytes(p.Key), p.Value)).ToArray(), ignoreCase: false);
        _suffixHosts = new ByteKeyTable<RouteNode>(suffix.Select(p => KeyValuePair.Create(System.Text.Encoding.ASCII.GetBytes(p.Key), p.Value)).ToArray(), ignoreCase: false);
        _anyHost = any;
    }

    private static RouteNode GetOrAdd(Dictionary<string, RouteNode> table, byte[] host)
    {
        var key = System.Text.Encoding.ASCII.GetString(host);
        if (!table.TryGetValue(key, out var node)) table[key] = node = new RouteNode(null);
        return node;
    }

    public RouteModel? Match(RequestHead request)
    {
        var host = request.CanonicalHost;
        var path = request.CanonicalPath;
        if (_exactHosts.Count > 0 && _exactHosts.Find(host) is { } exact && exact.Match(request, path) is { } r1) return r1;
        // "*.example.com" is keyed ".example.com"; the longest suffix that has a matching route wins
        for (int i = _suffixHosts.FindSuffix(host, 1, out var suffix); i >= 0; i = _suffixHosts.FindSuffix(host, i + 1, out suffix))
            if (suffix!.Match(request, path) is { } r2) return r2;
        return _anyHost?.Match(request, path);
    }

    /// <summary>
    /// The host part of an authority ("example.com:8080" is "example.com", "[::1]:80" is "[::1]"), as sent. Routing
    /// and policy use <see cref="RequestHead.CanonicalHost"/> instead.
    /// </summary>
    public static ReadOnlySpan<byte> HostWithoutPort(ReadOnlySpan<byte> host) => host[..RequestCanonicalizer.HostLength(host)];
}

/// <summary>
/// A node of a host's path trie: the node of the segments "/a/b" holds the routes whose exact path is "/a/b"
/// (<see cref="Exact"/>), whose prefix is "/a/b" (<see cref="Prefix"/>) or "/a/b/" (<see cref="SlashPrefix"/>:
/// plain, the path must go on past "/a/b"); the root also holds routes with no path condition (<see cref="Any"/>).
/// Each list is in priority order: method-restricted first, then declaration order.
/// </summary>
internal sealed class RouteNode
{
    private Dictionary<string, RouteNode>? _building = new(StringComparer.Ordinal);
    private readonly List<RouteEntry>[] _lists = [[], [], [], []];
    private ByteKeyTable<RouteNode>? _children;

    public RouteNode(RouteNode? parent) => Parent = parent;

    public RouteNode? Parent { get; }
    public RouteEntry[] Exact { get; private set; } = [];
    public RouteEntry[] Prefix { get; private set; } = [];
    public RouteEntry[] SlashPrefix { get; private set; } = [];
    public RouteEntry[] Any { get; private set; } = [];

    public void Add(RouteEntry e)
    {
        if (e.PathKind == PathMatchKind.Any) { _lists[3].Add(e); return; }
        var path = System.Text.Encoding.ASCII.GetString(e.Path);
        // an exact path matches with or without a trailing '/' (as policy paths do, and as upstreams that do not
        // route strictly read it): "/a/b/" is stored as "/a/b"
        if (e.PathKind == PathMatchKind.Exact && path.Length > 1 && path[^1] == '/') path = path[..^1];
        // "/a/b" → ["a","b"]; "/a/b/" → ["a","b",""]; "/" → [""]
        var segments = path[1..].Split('/');
        bool slashPrefix = e.PathKind == PathMatchKind.Prefix && segments.Length > 1 && segments[^1].Length == 0;
        int depth = e.PathKind == PathMatchKind.Prefix && (slashPrefix || path == "/") ? segments.Length - 1 : segments.Length;
        var node = this;
        for (int i = 0; i < depth; i++)
        {
            if (!node._building!.TryGetValue(segments[i], out var child)) node._building[segments[i]] = child = new RouteNode(node);
            node = child;
        }
        int list = e.PathKind == PathMatchKind.Exact ? 0 : slashPrefix ? 2 : path == "/" ? 3 : 1;
        node._lists[list].Add(e);
    }

    public void Seal()
    {
        static RouteEntry[] Order(List<RouteEntry> l) =>
            l.OrderByDescending(e => !e.Methods.IsAny).ThenBy(e => e.Route.Order).ToArray();
        Exact = Order(_lists[0]);
        Prefix = Order(_lists[1]);
        SlashPrefix = Order(_lists[2]);
        Any = Order(_lists[3]);
        foreach (var l in _lists) l.Clear();
        foreach (var c in _building!.Values) c.Seal();
        if (_building.Count > 0)
            _children = new ByteKeyTable<RouteNode>(_building.Select(p => KeyValuePair.Create(System.Text.Encoding.ASCII.GetBytes(p.Key), p.Value)).ToArray(), ignoreCase: false);
        _building = null;
    }

    /// <summary>Walks the canonical path down the trie as far as it goes, then takes the deepest route that matches.</summary>
    public RouteModel? Match(RequestHead request, ReadOnlySpan<byte> path)
    {
        var node = this;
        var rest = path.Length > 0 && path[0] == (byte)'/' ? path[1..] : path;
        bool consumed = false; // every segment of the path has been walked
        bool exactHere = false; // ... or all but a final empty one (the path is the node's path plus "/")
        while (true)
        {
            int slash = rest.IndexOf((byte)'/');
            var segment = slash < 0 ? rest : rest[..slash];
            var child = node._children?.Find(segment);
            if (child is null)
            {
                exactHere = slash < 0 && segment.IsEmpty && node.Parent is not null;
                break;
            }
            node = child;
            if (slash < 0) { consumed = exactHere = true; break; }
            rest = rest[(slash + 1)..];
        }
        if (exactHere && Pick(node.Exact, request) is { } exact) return exact;
        for (var n = node; n is not null; n = n.Parent)
        {
            // a "/a/" prefix needs more path after "/a"; the node the walk ended on was the last segment when consumed
            if (!(consumed && ReferenceEquals(n, node)) && Pick(n.SlashPrefix, request) is { } slashPrefix) return slashPrefix;
            if (Pick(n.Prefix, request) is { } prefix) return prefix;
            if (n.Parent is null && Pick(n.Any, request) is { } any) return any;
        }
        return null;
    }

    private static RouteModel? Pick(RouteEntry[] entries, RequestHead request)
    {
        if (entries.Length == 0) return null;
        foreach (var e in entries)
            if (e.Methods.Matches(request.Method, request[request.MethodRange])) return e.Route;
        return null;
    }
}
