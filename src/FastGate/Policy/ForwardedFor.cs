using System.Buffers.Binary;
using FastGate.Http;

namespace FastGate.Policy;

/// <summary>
/// The client behind trusted proxies: X-Forwarded-For read right to left, on the bytes of the parsed head, without
/// allocating. Semantics (docs/policies.md, trustedProxies):
/// <list type="bullet">
/// <item>Only called when the TCP peer is a trusted proxy. Entries are read from the right (the last header line's
/// last entry first); trusted addresses are skipped; the first address that is not trusted is the client.</item>
/// <item>When every entry is trusted, the left-most is the client.</item>
/// <item>An entry that is not an IP address (empty, "unknown", a host name, a zone id, anything malformed) stops the
/// walk: the client is then the last address read before it (necessarily a trusted proxy, which wrote the bad entry
/// or passed it on), or the peer itself when the right-most entry is already bad. Nothing to the left of a bad entry
/// is believed, so garbage cannot move the client to an address of an attacker's choosing.</item>
/// <item>Entries may carry a port ("192.0.2.1:4711", "[2001:db8::1]:4711"); IPv4-mapped IPv6 counts as IPv4.</item>
/// </list>
/// </summary>
public static class ForwardedFor
{
    /// <summary>Room for the text of any address (IPv6 in its longest form is 39 bytes).</summary>
    public const int MaxTextLength = 48;

    /// <summary>
    /// Finds the client in the request's X-Forwarded-For fields. False when there is no usable entry (the peer stays
    /// the client); otherwise <paramref name="client"/> and its canonical text in <paramref name="text"/>.
    /// </summary>
    public static bool TryResolve(RequestHead head, CidrSet trusted, Span<byte> text, out ClientAddress client, out int textLength)
    {
        client = default;
        textLength = 0;
        bool found = false;
        var headers = head.Headers;
        for (int h = headers.Length - 1; h >= 0; h--)
        {
            if (headers[h].Known != KnownHeader.XForwardedFor) continue;
            var value = head[headers[h].Value];
            int end = value.Length;
            while (true)
            {
                int comma = value[..end].LastIndexOf((byte)',');
                if (!AddressText.TryParse(value[(comma + 1)..end].Trim(" \t"u8), out var address)) goto Done;
                client = address;
                found = true;
                if (!trusted.Contains(address.Value)) goto Done;
                if (comma < 0) break;
                end = comma;
            }
        }
    Done:
        if (found) textLength = AddressText.Format(client, text);
        return found;
    }
}

/// <summary>IP address text to <see cref="ClientAddress"/> and back, on bytes, without allocating.</summary>
public static class AddressText
{
    /// <summary>
    /// Strict parse: dotted-quad IPv4 (no leading zeros) or IPv6 (RFC 4291 text, optionally with a trailing dotted
    /// quad), either optionally with a port ("1.2.3.4:80", "[::1]:80"; brackets also without a port). No zone ids.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> s, out ClientAddress address)
    {
        address = default;
        if (s.IsEmpty) return false;
        if (s[0] == (byte)'[')
        {
            int close = s.IndexOf((byte)']');
            if (close < 0) return false;
            var rest = s[(close + 1)..];
            if (!rest.IsEmpty && (rest[0] != (byte)':' || !IsPort(rest[1..]))) return false;
            return TryParseV6(s[1..close], out address);
        }
        int colon = s.IndexOf((byte)':');
        if (colon < 0) return TryParseV4(s, out uint v4) && Set(v4, out address);
        if (s[(colon + 1)..].IndexOf((byte)':') < 0)
        {
            // exactly one colon: IPv4 with a port
            return IsPort(s[(colon + 1)..]) && TryParseV4(s[..colon], out uint p4) && Set(p4, out address);
        }
        return TryParseV6(s, out address);
    }

    private static bool Set(uint v4, out ClientAddress address)
    {
        address = new ClientAddress(((UInt128)0xFFFF << 32) | v4, true);
        return true;
    }

    private static bool IsPort(ReadOnlySpan<byte> s)
    {
        if (s.IsEmpty || s.Length > 5) return false;
        int v = 0;
        foreach (byte b in s)
        {
            if ((uint)(b - '0') > 9) return false;
            v = v * 10 + (b - '0');
        }
        return v <= 65535;
    }

    private static bool TryParseV4(ReadOnlySpan<byte> s, out uint value)
    {
        value = 0;
        int parts = 0, i = 0;
        while (true)
        {
            int start = i, octet = 0;
            while (i < s.Length && (uint)(s[i] - '0') <= 9)
            {
                octet = octet * 10 + (s[i] - '0');
                if (octet > 255 || i - start == 3) return false;
                i++;
            }
            int digits = i - start;
            if (digits == 0 || (digits > 1 && s[start] == (byte)'0')) return false;
            value = (value << 8) | (uint)octet;
            if (++parts == 4) return i == s.Length;
            if (i == s.Length || s[i] != (byte)'.') return false;
            i++;
        }
    }

    private static bool TryParseV6(ReadOnlySpan<byte> s, out ClientAddress address)
    {
        address = default;
        Span<ushort> groups = stackalloc ushort[8];
        int n = 0, compressAt = -1, i = 0;
        if (s.Length < 2) return false;
        if (s[0] == (byte)':')
        {
            if (s[1] != (byte)':') return false;
            compressAt = 0;
            i = 2;
        }
        while (i < s.Length)
        {
            if (n == 8) return false;
            int start = i, value = 0;
            while (i < s.Length && i - start < 5 && HexValue(s[i]) is int d and >= 0)
            {
                value = (value << 4) | d;
                i++;
            }
            if (i < s.Length && s[i] == (byte)'.')
            {
                // a dotted quad in the last 32 bits
                if (n > 6 || !TryParseV4(s[start..], out uint v4)) return false;
                groups[n++] = (ushort)(v4 >> 16);
                groups[n++] = (ushort)v4;
                i = s.Length;
                break;
            }
            int digits = i - start;
            if (digits == 0 || digits > 4) return false;
            groups[n++] = (ushort)value;
            if (i == s.Length) break;
            if (s[i] != (byte)':') return false;
            i++;
            if (i < s.Length && s[i] == (byte)':')
            {
                if (compressAt >= 0) return false;
                compressAt = n;
                i++;
            }
            else if (i == s.Length) return false; // a trailing single colon
        }
        if (compressAt < 0 ? n != 8 : n > 7) return false;
        Span<byte> bytes = stackalloc byte[16];
        bytes.Clear();
        int zeros = 8 - n;
        for (int g = 0, k = 0; g < 8; g++)
        {
            ushort v = 0;
            if (compressAt >= 0 && g >= compressAt && g < compressAt + zeros) v = 0;
            else v = groups[k++];
            BinaryPrimitives.WriteUInt16BigEndian(bytes[(g * 2)..], v);
        }
        var value128 = BinaryPrimitives.ReadUInt128BigEndian(bytes);
        bool mapped = (value128 >> 32) == 0xFFFF;
        address = new ClientAddress(value128, mapped);
        return true;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>
    /// Canonical text (RFC 5952: lower-case hex, no leading zeros, the longest run of two or more zero groups as "::",
    /// the first on a tie); IPv4 (and IPv4-mapped) as a dotted quad. <paramref name="dest"/> needs 39 bytes at most.
    /// </summary>
    public static int Format(ClientAddress address, Span<byte> dest)
    {
        int n = 0;
        if (address.IsIPv4)
        {
            uint v = (uint)address.Value;
            for (int shift = 24; shift >= 0; shift -= 8)
            {
                n += WriteDecimal((v >> shift) & 0xFF, dest[n..]);
                if (shift > 0) dest[n++] = (byte)'.';
            }
            return n;
        }
        Span<ushort> g = stackalloc ushort[8];
        for (int k = 0; k < 8; k++) g[k] = (ushort)(address.Value >> (112 - 16 * k));
        int bestStart = -1, bestLength = 1;
        for (int k = 0; k < 8;)
        {
            if (g[k] != 0) { k++; continue; }
            int start = k;
            while (k < 8 && g[k] == 0) k++;
            if (k - start > bestLength) { bestStart = start; bestLength = k - start; }
        }
        for (int k = 0; k < 8; k++)
        {
            if (k == bestStart)
            {
                dest[n++] = (byte)':';
                if (k == 0) dest[n++] = (byte)':';
                k += bestLength - 1;
                if (k == 7) break;
                continue;
            }
            n += WriteHex(g[k], dest[n..]);
            if (k < 7) dest[n++] = (byte)':';
        }
        return n;
    }

    private static int WriteDecimal(uint v, Span<byte> dest)
    {
        if (v >= 100) { dest[0] = (byte)('0' + v / 100); dest[1] = (byte)('0' + v / 10 % 10); dest[2] = (byte)('0' + v % 10); return 3; }
        if (v >= 10) { dest[0] = (byte)('0' + v / 10); dest[1] = (byte)('0' + v % 10); return 2; }
        dest[0] = (byte)('0' + v);
        return 1;
    }

    private static int WriteHex(ushort v, Span<byte> dest)
    {
        int n = 0;
        bool started = false;
        for (int shift = 12; shift >= 0; shift -= 4)
        {
            int d = (v >> shift) & 0xF;
            if (d == 0 && !started && shift > 0) continue;
            started = true;
            dest[n++] = (byte)"0123456789abcdef"[d];
        }
        return n;
    }
}
