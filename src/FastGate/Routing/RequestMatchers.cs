using System.Text;
using FastGate.Http;

namespace FastGate.Routing;

public enum HostKind : byte { Any, Exact, Suffix }

/// <summary>
/// A host as routes and policy rules write it: "api.example.com", "*.example.com" (Key ".example.com": at least one
/// more label) or "*". The one host matcher of the gateway: router and policy both compile their hosts with
/// <see cref="Parse"/> and compare against the canonical host (lower case, no trailing dot, no port).
/// </summary>
public readonly record struct HostPattern(HostKind Kind, byte[] Key)
{
    public static readonly HostPattern Any = new(HostKind.Any, []);

    /// <summary>Lower-cases and drops a trailing dot, as the canonical request does with the Host header.</summary>
    public static HostPattern Parse(string host)
    {
        if (host == "*") return Any;
        if (host.StartsWith("*.", StringComparison.Ordinal))
            return new HostPattern(HostKind.Suffix, Encoding.ASCII.GetBytes(host[1..].TrimEnd('.').ToLowerInvariant()));
        return new HostPattern(HostKind.Exact, Encoding.ASCII.GetBytes(host.TrimEnd('.').ToLowerInvariant()));
    }

    public bool Matches(ReadOnlySpan<byte> host) => Kind switch
    {
        HostKind.Any => true,
        HostKind.Exact => Ascii.EqualsIgnoreCase(host, Key),
        _ => host.Length > Key.Length && Ascii.EqualsIgnoreCase(host[^Key.Length..], Key),
    };

    public bool Equals(HostPattern other) => Kind == other.Kind && Key.AsSpan().SequenceEqual(other.Key);
    public override int GetHashCode() => HashCode.Combine(Kind, Key.Length, Key.Length > 0 ? Key[^1] : 0);
    public override string ToString() => Kind switch { HostKind.Any => "*", HostKind.Suffix => "*" + Encoding.ASCII.GetString(Key), _ => Encoding.ASCII.GetString(Key) };
}

/// <summary>
/// A set of request methods as routes and policy rules list them: a bit per known <see cref="HttpMethod"/> and the
/// names of non-standard ones (matched case-sensitively, RFC 9110 section 9.1). Bit 0 (Other) is set when a
/// non-standard method is listed, so a mask test alone rejects every request the set cannot match.
/// </summary>
public sealed class MethodSet
{
    public const uint AllMethods = uint.MaxValue;

    public static readonly MethodSet Any = new(AllMethods, []);

    private MethodSet(uint mask, byte[][] others)
    {
        Mask = mask;
        Others = others;
    }

    /// <summary>Bit (1 &lt;&lt; HttpMethod) per allowed method; <see cref="AllMethods"/> when any method matches.</summary>
    public uint Mask { get; }
    public byte[][] Others { get; }
    public bool IsAny => Mask == AllMethods;

    /// <summary>The set of <paramref name="methods"/>; an empty list means any method.</summary>
    public static MethodSet Parse(IReadOnlyCollection<string> methods)
    {
        if (methods.Count == 0) return Any;
        uint mask = 0;
        var others = new List<byte[]>();
        foreach (var method in methods)
        {
            var bytes = Encoding.ASCII.GetBytes(method);
            var known = HttpRequestParser.ClassifyMethod(bytes);
            if (known == HttpMethod.Other && !others.Exists(o => o.AsSpan().SequenceEqual(bytes))) others.Add(bytes);
            mask |= 1u << (int)known;
        }
        return new MethodSet(mask, others.ToArray());
    }

    /// <summary>The mask test of <see cref="Matches"/> alone (enough for every known method).</summary>
    public static uint Bit(HttpMethod method) => 1u << (int)method;

    public bool Matches(HttpMethod method, ReadOnlySpan<byte> name)
    {
        if ((Mask & Bit(method)) == 0) return false;
        return method != HttpMethod.Other || IsAny || MatchesOther(name);
    }

    /// <summary>Whether a non-standard method name is listed (the second half of <see cref="Matches"/>).</summary>
    public bool MatchesOther(ReadOnlySpan<byte> name)
    {
        foreach (var o in Others) if (name.SequenceEqual(o)) return true;
        return false;
    }
}
