using System.Text;
using FastGate.Http;

namespace FastGate.Routing;

/// <summary>
/// Picks the most specific route for a request: exact host before wildcard suffix before any host; exact path
/// before prefix, longer prefix before shorter; routes restricted to methods before routes for any method;
/// then declaration order. Entries are sorted once at compile time, so the first match wins.
/// </summary>
public sealed class Router
{
    private readonly RouteEntry[] _entries;

    internal Router(IEnumerable<RouteEntry> entries)
    {
        _entries = entries
            .OrderByDescending(e => e.HostKind switch { HostMatchKind.Exact => 2, HostMatchKind.Suffix => 1, _ => 0 })
            .ThenByDescending(e => e.HostKind == HostMatchKind.Suffix ? e.Host.Length : 0)
            .ThenByDescending(e => e.PathKind switch { PathMatchKind.Exact => 2, PathMatchKind.Prefix => 1, _ => 0 })
            .ThenByDescending(e => e.Path.Length)
            .ThenByDescending(e => e.MethodMask != 0 || e.OtherMethods.Length > 0)
            .ThenBy(e => e.Route.Order)
            .ToArray();
    }

    public int EntryCount => _entries.Length;

    public RouteModel? Match(RequestHead request)
    {
        var host = HostWithoutPort(request[request.Host]);
        var path = request.Path.IsEmpty ? "/"u8 : request[request.Path];
        uint methodBit = 1u << (int)request.Method;
        foreach (var e in _entries)
        {
            if (!MatchHost(e, host) || !MatchPath(e, path)) continue;
            if (e.MethodMask != 0 || e.OtherMethods.Length > 0)
            {
                if (request.Method != HttpMethod.Other ? (e.MethodMask & methodBit) == 0 : !MatchOther(e, request[request.MethodRange]))
                    continue;
            }
            return e.Route;
        }
        return null;
    }

    private static bool MatchOther(RouteEntry e, ReadOnlySpan<byte> method)
    {
        foreach (var m in e.OtherMethods) if (method.SequenceEqual(m)) return true;
        return false;
    }

    public static ReadOnlySpan<byte> HostWithoutPort(ReadOnlySpan<byte> host)
    {
        if (host.IsEmpty) return host;
        if (host[0] == (byte)'[')
        {
            int close = host.IndexOf((byte)']');
            return close < 0 ? host : host[..(close + 1)];
        }
        int colon = host.IndexOf((byte)':');
        return colon < 0 ? host : host[..colon];
    }

    private static bool MatchHost(RouteEntry e, ReadOnlySpan<byte> host) => e.HostKind switch
    {
        HostMatchKind.Any => true,
        HostMatchKind.Exact => Ascii.EqualsIgnoreCase(host, e.Host),
        _ => host.Length > e.Host.Length && Ascii.EqualsIgnoreCase(host[^e.Host.Length..], e.Host),
    };

    private static bool MatchPath(RouteEntry e, ReadOnlySpan<byte> path)
    {
        switch (e.PathKind)
        {
            case PathMatchKind.Any: return true;
            case PathMatchKind.Exact: return path.SequenceEqual(e.Path);
            default:
                // Segment-aware: "/api" matches "/api" and "/api/x", not "/apix". A prefix ending in '/' is plain.
                if (!path.StartsWith(e.Path)) return false;
                return path.Length == e.Path.Length || e.Path[^1] == (byte)'/' || path[e.Path.Length] == (byte)'/' || path[e.Path.Length] == (byte)'?';
        }
    }
}
