using System.Text;
using FastGate.Http;

namespace FastGate.Policy;

/// <summary>
/// A policy path: exact "/a/b", prefix "/api/*" (the "/api" segment and everything below it) or a template
/// "/users/{id}/orders" where "{id}" is exactly one non-empty segment. Matching is segment by segment on the
/// normalised request path (see <see cref="RequestPath"/>), case-sensitive.
/// </summary>
public sealed class PathPattern
{
    private PathPattern(string text, byte[]?[] literals, string?[] variables, bool prefix)
    {
        Text = text;
        Literals = literals;
        Variables = variables;
        IsPrefix = prefix;
    }

    public string Text { get; }
    /// <summary>Per segment: the literal bytes, or null for a "{name}" wildcard.</summary>
    public byte[]?[] Literals { get; }
    /// <summary>Per segment: the variable name of a wildcard, or null for a literal.</summary>
    public string?[] Variables { get; }
    public bool IsPrefix { get; }
    public int SegmentCount => Literals.Length;
    public bool HasVariables => Array.Exists(Variables, v => v is not null);

    /// <summary>The pattern with variable names erased: two patterns with one shape match exactly the same paths.</summary>
    public string Shape
    {
        get
        {
            var sb = new StringBuilder();
            foreach (var l in Literals) sb.Append('/').Append(l is null ? "{}" : Encoding.Latin1.GetString(l));
            if (IsPrefix) sb.Append("/*");
            return sb.Length == 0 ? "/" : sb.ToString();
        }
    }

    public static bool TryParse(string text, out PathPattern pattern, out string error)
    {
        pattern = null!;
        error = "";
        if (!text.StartsWith('/')) { error = $"'{text}' must start with '/'"; return false; }
        if (text.IndexOfAny(['?', '#']) >= 0) { error = $"'{text}' contains '?' or '#': match the query with 'query' conditions"; return false; }
        foreach (var c in text)
            if (c <= ' ' || c >= 0x7F) { error = $"'{text}' contains a space, control or non-ASCII character; percent-encode it"; return false; }
        var parts = text.Split('/', StringSplitOptions.RemoveEmptyEntries);
        bool prefix = false;
        var literals = new List<byte[]?>();
        var variables = new List<string?>();
        for (int i = 0; i < parts.Length; i++)
        {
            var seg = parts[i];
            if (seg == "*")
            {
                if (i != parts.Length - 1 || !text.EndsWith("/*", StringComparison.Ordinal))
                {
                    error = $"'{text}': '*' is only allowed as the whole last segment, as in '/api/*'";
                    return false;
                }
                prefix = true;
                continue;
            }
            if (seg.Contains('*')) { error = $"'{text}': '*' is only allowed as the whole last segment, as in '/api/*'"; return false; }
            if (seg.StartsWith('{') || seg.EndsWith('}') || seg.Contains('{') || seg.Contains('}'))
            {
                var name = seg.Length >= 2 && seg[0] == '{' && seg[^1] == '}' ? seg[1..^1] : null;
                if (name is null || name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
                {
                    error = $"'{text}': segment '{seg}' must be a whole-segment variable such as '{{id}}' (letters, digits, '_')";
                    return false;
                }
                if (variables.Contains(name)) { error = $"'{text}': variable '{{{name}}}' appears twice"; return false; }
                literals.Add(null);
                variables.Add(name);
                continue;
            }
            var bytes = Encoding.ASCII.GetBytes(seg);
            var decoded = new byte[bytes.Length];
            int n = RequestPath.PercentDecode(bytes, decoded, plusAsSpace: false, keepSlash: true);
            var lit = decoded.AsSpan(0, n);
            if (lit.SequenceEqual("."u8) || lit.SequenceEqual(".."u8))
            {
                error = $"'{text}': '.' and '..' segments never match (request paths are normalised)";
                return false;
            }
            literals.Add(lit.ToArray());
            variables.Add(null);
        }
        pattern = new PathPattern(text, literals.ToArray(), variables.ToArray(), prefix);
        return true;
    }

    /// <summary>Direct match against a normalised path (used by <c>not</c>, explain and tests; the trie does the same).</summary>
    public bool Matches(ReadOnlySpan<byte> path, ReadOnlySpan<ByteRange> segments)
    {
        if (IsPrefix ? segments.Length < Literals.Length : segments.Length != Literals.Length) return false;
        for (int i = 0; i < Literals.Length; i++)
        {
            var lit = Literals[i];
            if (lit is not null && !path.Slice(segments[i].Start, segments[i].Length).SequenceEqual(lit)) return false;
        }
        return true;
    }

    public override string ToString() => Text;
}

/// <summary>
/// Rule matching on the request's canonical path (<see cref="Http.RequestCanonicalizer"/>: "//" merged, unreserved
/// escapes decoded, encoded dot segments and, by default, encoded slashes refused, and that path is what is
/// forwarded): the remaining percent-escapes are decoded except %2F (kept as the three bytes "%2F", so it never
/// splits a segment) and a trailing "/" is ignored. So "/%61dmin" and "/admin/" match "/admin".
/// </summary>
public static class RequestPath
{
    public const int MaxStackPath = 1024;
    public const int MaxStackSegments = 64;

    /// <summary>Splits <paramref name="path"/> into normalised segments; returns the count (needs ≤ path.Length/2+1 slots).</summary>
    public static int Segment(ReadOnlySpan<byte> path, Span<ByteRange> segments)
    {
        int count = 0, start = -1;
        for (int i = 0; i <= path.Length; i++)
        {
            if (i < path.Length && path[i] != (byte)'/')
            {
                if (start < 0) start = i;
                continue;
            }
            if (start < 0) continue;
            // no "." or ".." segment gets here: the canonical path refuses them, encoded or not
            segments[count++] = new ByteRange(start, i - start);
            start = -1;
        }
        return count;
    }

    /// <summary>Decodes %XX (and '+' when asked); invalid escapes stay literal; "%2F" stays encoded when <paramref name="keepSlash"/>.</summary>
    public static int PercentDecode(ReadOnlySpan<byte> src, Span<byte> dst, bool plusAsSpace, bool keepSlash)
    {
        int o = 0;
        for (int i = 0; i < src.Length; i++)
        {
            byte b = src[i];
            if (b == (byte)'%' && i + 2 < src.Length && Hex(src[i + 1]) >= 0 && Hex(src[i + 2]) >= 0)
            {
                int v = Hex(src[i + 1]) * 16 + Hex(src[i + 2]);
                if (v == '/' && keepSlash)
                {
                    dst[o++] = (byte)'%';
                    dst[o++] = (byte)'2';
                    dst[o++] = (byte)'F';
                }
                else dst[o++] = (byte)v;
                i += 2;
            }
            else dst[o++] = plusAsSpace && b == (byte)'+' ? (byte)' ' : b;
        }
        return o;
    }

    private static int Hex(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}
