using FastGate.Routing;
using System.Buffers;
using System.Text;
using System.Text.RegularExpressions;
using FastGate.Http;

namespace FastGate.Policy;

/// <summary>What one evaluation knows about the request, computed once: host without port, normalised path segments.</summary>
internal readonly ref struct RequestView
{
    public RequestView(RequestHead head, ReadOnlySpan<byte> host, ReadOnlySpan<byte> path, ReadOnlySpan<ByteRange> segments,
        ClientAddress client, int routeIndex, Security.ConsumerModel? consumer = null, Security.DeviceModel? device = null)
    {
        Head = head;
        Consumer = consumer;
        Device = device;
        Host = host;
        Path = path;
        Segments = segments;
        MethodBit = 1u << (int)head.Method;
        Client = client.Value;
        RouteIndex = routeIndex;
    }

    public RequestHead Head { get; }
    public ReadOnlySpan<byte> Host { get; }
    public ReadOnlySpan<byte> Path { get; }
    public ReadOnlySpan<ByteRange> Segments { get; }
    public uint MethodBit { get; }
    public UInt128 Client { get; }
    public int RouteIndex { get; }
    /// <summary>The consumer an API key identified, or null.</summary>
    public Security.ConsumerModel? Consumer { get; }
    /// <summary>The allowlisted device of the connection's client certificate, or null.</summary>
    public Security.DeviceModel? Device { get; }
}

/// <summary>A token identity a rule names: the index of its issuer in jwtIssuers (-1: none) and the subject.</summary>
internal readonly record struct SubjectCondition(int IssuerIndex, string Subject);

internal enum FieldKind : byte { Present, Absent, Equals, OneOf, Regex }

/// <summary>A header or query condition. Several fields with the name: the condition holds when any one does.</summary>
internal sealed class FieldCondition
{
    public required byte[] Name { get; init; }
    public required FieldKind Kind { get; init; }
    public byte[][] Values { get; init; } = [];
    public Regex? Regex { get; init; }

    /// <summary>Regex inputs up to this many bytes are widened on the stack; longer ones use a pooled char array.</summary>
    public const int MaxStackRegexInput = 512;

    public bool MatchesValue(ReadOnlySpan<byte> value)
    {
        switch (Kind)
        {
            case FieldKind.Equals:
                return value.SequenceEqual(Values[0]);
            case FieldKind.OneOf:
                foreach (var v in Values) if (value.SequenceEqual(v)) return true;
                return false;
            case FieldKind.Regex:
                return IsMatch(Regex!, value);
            default:
                return true;
        }
    }

    /// <summary>Runs a regex over bytes: each byte becomes one char (Latin-1), so ASCII patterns behave as expected.</summary>
    public static bool IsMatch(Regex regex, ReadOnlySpan<byte> value)
    {
        if (value.Length <= MaxStackRegexInput)
        {
            Span<char> chars = stackalloc char[value.Length];
            Encoding.Latin1.GetChars(value, chars);
            return regex.IsMatch(chars);
        }
        var rented = ArrayPool<char>.Shared.Rent(value.Length);
        try
        {
            int n = Encoding.Latin1.GetChars(value, rented);
            return regex.IsMatch(rented.AsSpan(0, n));
        }
        finally
        {
            ArrayPool<char>.Shared.Return(rented);
        }
    }

    public bool MatchesHeaders(RequestHead head)
    {
        foreach (ref readonly var f in head.Headers)
        {
            if (f.Name.Length != Name.Length || !Ascii.EqualsIgnoreCase(head[f.Name], Name)) continue;
            if (Kind == FieldKind.Present) return true;
            if (Kind == FieldKind.Absent) return false;
            if (MatchesValue(head[f.Value])) return true;
        }
        return Kind == FieldKind.Absent;
    }

    /// <summary>Query parameters: names and values are compared after percent-decoding ('+' is a space).</summary>
    public bool MatchesQuery(ReadOnlySpan<byte> query)
    {
        if (!query.IsEmpty && query[0] == (byte)'?') query = query[1..];
        while (!query.IsEmpty)
        {
            int amp = query.IndexOf((byte)'&');
            var pair = amp < 0 ? query : query[..amp];
            query = amp < 0 ? default : query[(amp + 1)..];
            if (pair.IsEmpty) continue;
            int eq = pair.IndexOf((byte)'=');
            var rawName = eq < 0 ? pair : pair[..eq];
            var rawValue = eq < 0 ? default : pair[(eq + 1)..];
            if (!NameEquals(rawName)) continue;
            if (Kind == FieldKind.Present) return true;
            if (Kind == FieldKind.Absent) return false;
            if (DecodedValueMatches(rawValue)) return true;
        }
        return Kind == FieldKind.Absent;
    }

    private bool NameEquals(ReadOnlySpan<byte> raw)
    {
        if (raw.IndexOfAny((byte)'%', (byte)'+') < 0) return raw.SequenceEqual(Name);
        if (raw.Length > 256 || raw.Length < Name.Length) return false;
        Span<byte> buf = stackalloc byte[raw.Length];
        int n = RequestPath.PercentDecode(raw, buf, plusAsSpace: true, keepSlash: false);
        return buf[..n].SequenceEqual(Name);
    }

    private bool DecodedValueMatches(ReadOnlySpan<byte> raw)
    {
        if (raw.IndexOfAny((byte)'%', (byte)'+') < 0) return MatchesValue(raw);
        if (raw.Length <= 1024)
        {
            Span<byte> buf = stackalloc byte[raw.Length];
            int n = RequestPath.PercentDecode(raw, buf, plusAsSpace: true, keepSlash: false);
            return MatchesValue(buf[..n]);
        }
        var rented = ArrayPool<byte>.Shared.Rent(raw.Length);
        try
        {
            int n = RequestPath.PercentDecode(raw, rented, plusAsSpace: true, keepSlash: false);
            return MatchesValue(rented.AsSpan(0, n));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }
}

/// <summary>
/// A compiled <c>match</c>. Host, method and path are normally enforced by the index (host table, method mask,
/// path trie); <see cref="MatchesResidual"/> checks the rest in a fixed order: route, non-standard method,
/// headers, query, client IPs, consumers, not. <see cref="MatchesAll"/> checks everything (for <c>not</c>,
/// explain and tests).
/// </summary>
internal sealed class MatchCondition
{
    public HostPattern[] Hosts { get; init; } = [];
    /// <summary>The listed methods (the router's <see cref="MethodSet"/>); any when none is listed.</summary>
    public MethodSet Methods { get; init; } = MethodSet.Any;
    public PathPattern[] Paths { get; init; } = [];
    public ulong[]? Routes { get; init; }
    public FieldCondition[] Headers { get; init; } = [];
    public FieldCondition[] Query { get; init; } = [];
    public CidrSet[]? ClientIps { get; init; }
    /// <summary>consumers/consumerGroups were given: the request's consumer must be listed or in a listed group.</summary>
    public bool RequiresConsumer { get; init; }
    public string[] Consumers { get; init; } = [];
    public string[] ConsumerGroups { get; init; } = [];
    /// <summary>Token identities (issuer index, subject): the request's token is one of them.</summary>
    public SubjectCondition[] Subjects { get; init; } = [];
    /// <summary>Device ids: the connection's client certificate is an allowlisted device among them.</summary>
    public string[] Devices { get; init; } = [];
    /// <summary>Token scopes: the consumer (a JWT) carries at least one.</summary>
    public string[] Scopes { get; init; } = [];
    /// <summary>Token claims: each present with one of its values.</summary>
    public Security.ClaimRequirement[] Claims { get; init; } = [];
    public MatchCondition? Not { get; init; }

    public bool MatchesAll(in RequestView v)
    {
        if (Hosts.Length > 0)
        {
            bool any = false;
            foreach (var h in Hosts) if (h.Matches(v.Host)) { any = true; break; }
            if (!any) return false;
        }
        if ((Methods.Mask & v.MethodBit) == 0) return false;
        if (Paths.Length > 0)
        {
            bool any = false;
            foreach (var p in Paths) if (p.Matches(v.Path, v.Segments)) { any = true; break; }
            if (!any) return false;
        }
        return MatchesResidual(v);
    }

    public bool MatchesResidual(in RequestView v)
    {
        if (Routes is { } routes && ((uint)v.RouteIndex >= (uint)(routes.Length * 64) || (routes[v.RouteIndex >> 6] & (1UL << v.RouteIndex)) == 0))
            return false;
        if (v.MethodBit == 1 && !Methods.IsAny && !Methods.MatchesOther(v.Head[v.Head.MethodRange])) return false;
        foreach (var h in Headers) if (!h.MatchesHeaders(v.Head)) return false;
        if (Query.Length > 0)
        {
            var q = v.Head[v.Head.Query];
            foreach (var c in Query) if (!c.MatchesQuery(q)) return false;
        }
        if (ClientIps is { } sets)
        {
            bool any = false;
            foreach (var s in sets) if (s.Contains(v.Client)) { any = true; break; }
            if (!any) return false;
        }
        if (RequiresConsumer && !MatchesConsumer(v.Consumer)) return false;
        if (Subjects.Length > 0 && !MatchesSubject(v.Consumer)) return false;
        if (Devices.Length > 0 && !MatchesDevice(v.Device)) return false;
        if (Scopes.Length > 0 && !MatchesScopes(v.Consumer)) return false;
        if (Claims.Length > 0)
        {
            if (v.Consumer is not { } c) return false;
            foreach (var claim in Claims) if (!c.HasClaim(claim.Name, claim.Values)) return false;
        }
        if (Not is { } not && not.MatchesAll(v)) return false;
        return true;
    }

    private bool MatchesConsumer(Security.ConsumerModel? consumer)
    {
        // a token that no consumer owns is a subject only: consumers rules never match it
        if (consumer is not { IsConsumer: true }) return false;
        foreach (var id in Consumers) if (string.Equals(id, consumer.Id, StringComparison.Ordinal)) return true;
        foreach (var g in ConsumerGroups)
            foreach (var cg in consumer.Groups)
                if (string.Equals(g, cg, StringComparison.Ordinal)) return true;
        return false;
    }

    private bool MatchesSubject(Security.ConsumerModel? identity)
    {
        if (identity is not { Scheme: Security.AuthScheme.Jwt, Subject: { } subject }) return false;
        foreach (var s in Subjects)
            if (s.IssuerIndex == identity.IssuerIndex && string.Equals(s.Subject, subject, StringComparison.Ordinal)) return true;
        return false;
    }

    private bool MatchesDevice(Security.DeviceModel? device)
    {
        if (device is null) return false;
        foreach (var id in Devices) if (string.Equals(id, device.Id, StringComparison.Ordinal)) return true;
        return false;
    }

    private bool MatchesScopes(Security.ConsumerModel? consumer)
    {
        if (consumer is null) return false;
        foreach (var s in Scopes) if (consumer.HasScope(s)) return true;
        return false;
    }
}
