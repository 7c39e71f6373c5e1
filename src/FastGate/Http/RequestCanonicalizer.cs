using System.Text;

namespace FastGate.Http;

/// <summary>What the canonical path does with an encoded '/' or '\' (%2F, %5C) in the path.</summary>
public enum EscapedSlashAction : byte
{
    /// <summary>400 encoded_slash (the default: an upstream that decodes it would see other segments).</summary>
    Reject,
    /// <summary>Kept as "%2F" / "%5C": one segment for routes and rules, forwarded encoded (only for upstreams that do not decode it).</summary>
    Keep,
    /// <summary>Decoded to '/' (both): routes and rules see the segments the upstream will see, and that path is forwarded.</summary>
    Decode,
}

/// <summary>What happens to a header whose name has '_' and reads as a protected name with '-' ("X_Consumer_Id").</summary>
public enum UnderscoreHeaderAction : byte
{
    /// <summary>Not forwarded (the default); other underscore names are forwarded.</summary>
    Drop,
    /// <summary>400 underscore_header.</summary>
    Reject,
    /// <summary>No header with '_' in its name is forwarded (as nginx's default underscores_in_headers off).</summary>
    DropAll,
}

/// <summary>
/// One canonical view of a parsed request, computed once right after its head is parsed: the path (RFC 3986
/// normalisation: unreserved escapes decoded, other escapes upper-cased, "//" merged, encoded dot segments refused,
/// encoded slashes by <see cref="EscapedSlashAction"/>), the host (lower case, no trailing dot, no port) and the
/// spelling of header names that an upstream would fold onto a protected name. Routing, policy, authentication and
/// the forwarded head all use it, so what the gateway decides on is what the upstream acts on (docs/http.md).
/// Pure and allocation-free; a request already in canonical form costs two vectorised scans.
/// </summary>
public static class RequestCanonicalizer
{
    public static bool Apply(RequestHead head, HttpLimits limits, out RejectReason reason)
    {
        reason = RejectReason.None;
        if (!CanonicalizeAuthority(head, ref reason)) return false;
        if (!CanonicalizePath(head, limits.EscapedSlashes, ref reason)) return false;
        return CheckUnderscoreNames(head, limits, ref reason);
    }

    private static bool CanonicalizeAuthority(RequestHead head, ref RejectReason reason)
    {
        var authority = head[head.Host];
        if (authority.IsEmpty)
        {
            head.SetCanonicalAuthority(head.Host, copied: false, 0);
            return true;
        }
        // a reg-name's percent-escapes are legal in RFC 3986 but no client needs them, and an upstream may read them
        // as another name: refused
        if (authority.IndexOf((byte)'%') >= 0) { reason = RejectReason.InvalidHost; return false; }
        int hostLength = HostLength(authority);
        bool trailingDot = hostLength > 1 && authority[hostLength - 1] == (byte)'.';
        // an empty label ("a..b", ".a", ".") names no host; an upstream or resolver may read it as another one
        if (hostLength == 0 || (authority[0] != (byte)'[' && (authority[0] == (byte)'.' || authority[..hostLength].IndexOf(".."u8) >= 0)))
        {
            reason = RejectReason.InvalidHost;
            return false;
        }
        bool upper = authority[..hostLength].IndexOfAnyInRange((byte)'A', (byte)'Z') >= 0;
        if (!trailingDot && !upper)
        {
            head.SetCanonicalAuthority(head.Host, copied: false, hostLength);
            return true;
        }
        // the authority is written at the end of the scratch area, the path at its start
        var scratch = head.CanonicalScratch(head.Length * 2);
        int start = head.Length;
        var name = authority[..(trailingDot ? hostLength - 1 : hostLength)];
        Ascii.ToLower(name, scratch[start..], out int written);
        authority[hostLength..].CopyTo(scratch[(start + written)..]);
        head.SetCanonicalAuthority(new ByteRange(start, written + authority.Length - hostLength), copied: true, written);
        return true;
    }

    /// <summary>The length of the host part of an authority (an IP literal keeps its brackets).</summary>
    public static int HostLength(ReadOnlySpan<byte> authority)
    {
        if (authority.IsEmpty) return 0;
        if (authority[0] == (byte)'[')
        {
            int close = authority.IndexOf((byte)']');
            return close < 0 ? authority.Length : close + 1;
        }
        int colon = authority.IndexOf((byte)':');
        return colon < 0 ? authority.Length : colon;
    }

    private static bool CanonicalizePath(RequestHead head, EscapedSlashAction slashes, ref RejectReason reason)
    {
        var path = head[head.Path];
        if (head.IsAsteriskForm || (path.IndexOf((byte)'%') < 0 && path.IndexOf("//"u8) < 0))
        {
            // literal "." and ".." segments never get here: the parser refuses them
            head.SetCanonicalPath(head.Path, copied: false);
            return true;
        }
        var dst = head.CanonicalScratch(head.Length * 2);
        int length = Normalize(path, dst, slashes, ref reason);
        if (length < 0) return false;
        if (dst[..length].SequenceEqual(path)) head.SetCanonicalPath(head.Path, copied: false);
        else head.SetCanonicalPath(new ByteRange(0, length), copied: true);
        return true;
    }

    /// <summary>
    /// Writes the canonical form of <paramref name="path"/> (origin-form path, escapes already checked for two hex
    /// digits by the parser) to <paramref name="dst"/>; returns its length, or -1 with <paramref name="reason"/> set.
    /// Never longer than the input. Also used at compile time for route and rule paths.
    /// </summary>
    public static int Normalize(ReadOnlySpan<byte> path, Span<byte> dst, EscapedSlashAction slashes, ref RejectReason reason)
    {
        int o = 0;
        for (int i = 0; i < path.Length; i++)
        {
            byte b = path[i];
            if (b == (byte)'%')
            {
                if (i + 2 >= path.Length || Hex(path[i + 1]) < 0 || Hex(path[i + 2]) < 0) { reason = RejectReason.InvalidRequestTarget; return -1; }
                int v = Hex(path[i + 1]) << 4 | Hex(path[i + 2]);
                i += 2;
                if (v == 0) { reason = RejectReason.InvalidRequestTarget; return -1; }
                if (v is '/' or '\\')
                {
                    if (slashes == EscapedSlashAction.Reject) { reason = RejectReason.EncodedSlash; return -1; }
                    if (slashes == EscapedSlashAction.Keep)
                    {
                        dst[o++] = (byte)'%';
                        dst[o++] = (byte)"0123456789ABCDEF"[v >> 4];
                        dst[o++] = (byte)"0123456789ABCDEF"[v & 15];
                        continue;
                    }
                    b = (byte)'/';
                }
                else if (IsUnreserved(v)) b = (byte)v;
                else
                {
                    dst[o++] = (byte)'%';
                    dst[o++] = (byte)"0123456789ABCDEF"[v >> 4];
                    dst[o++] = (byte)"0123456789ABCDEF"[v & 15];
                    continue;
                }
            }
            if (b == (byte)'/' && o > 0 && dst[o - 1] == (byte)'/') continue; // "//" is one separator
            dst[o++] = b;
        }
        if (HasDotSegment(dst[..o])) { reason = RejectReason.InvalidRequestTarget; return -1; }
        return o;
    }

    /// <summary>True when a segment is "." or ".." (here only from encoded dots: the parser refuses literal ones).</summary>
    public static bool HasDotSegment(ReadOnlySpan<byte> path)
    {
        int i;
        while ((i = path.IndexOf("/."u8)) >= 0)
        {
            var rest = path[(i + 2)..];
            if (rest.IsEmpty || rest[0] == (byte)'/' || (rest[0] == (byte)'.' && (rest.Length == 1 || rest[1] == (byte)'/'))) return true;
            path = rest;
        }
        return false;
    }

    private static bool IsUnreserved(int c) =>
        (uint)(c - 'a') <= 'z' - 'a' || (uint)(c - 'A') <= 'Z' - 'A' || (uint)(c - '0') <= 9 || c is '-' or '.' or '_' or '~';

    private static int Hex(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>
    /// Header names with '_': CGI/WSGI upstreams (and others) fold '_' and '-' together, so "X_Consumer_Id" would
    /// reach them as the gateway's own X-Consumer-Id. Such a name is marked <see cref="KnownHeader.Spoofed"/> (never
    /// forwarded, never matched) or refused, by <see cref="HttpLimits.UnderscoreHeaders"/>.
    /// </summary>
    private static bool CheckUnderscoreNames(RequestHead head, HttpLimits limits, ref RejectReason reason)
    {
        var headers = head.Headers;
        for (int i = 0; i < headers.Length; i++)
        {
            var name = head[headers[i].Name];
            if (name.IndexOf((byte)'_') < 0) continue;
            if (limits.UnderscoreHeaders != UnderscoreHeaderAction.DropAll && !IsProtected(name, limits.ProtectedHeaderNames)) continue;
            if (limits.UnderscoreHeaders == UnderscoreHeaderAction.Reject) { reason = RejectReason.UnderscoreHeader; return false; }
            head.MarkSpoofed(i);
        }
        return true;
    }

    /// <summary>True when <paramref name="name"/>, with every '_' read as '-', equals a protected name (given in lower case).</summary>
    public static bool IsProtected(ReadOnlySpan<byte> name, byte[][] protectedNames)
    {
        foreach (var p in protectedNames)
        {
            if (p.Length != name.Length) continue;
            int k = 0;
            for (; k < p.Length; k++)
            {
                byte c = name[k];
                if (c == (byte)'_') c = (byte)'-';
                else if (c - (byte)'A' <= 'Z' - 'A') c |= 0x20;
                if (c != p[k]) break;
            }
            if (k == p.Length) return true;
        }
        return false;
    }
}
