using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace FastGate.Policy;

/// <summary>An inclusive range of 128-bit addresses (IPv4 lives in ::ffff:0:0/96, as in <see cref="ClientAddress"/>).</summary>
public readonly record struct AddressRange(UInt128 Start, UInt128 End);

/// <summary>CIDR text to an <see cref="AddressRange"/>. Strict: dotted-quad IPv4, no zone ids, no host bits.</summary>
public static class Cidr
{
    public static bool TryParse(string text, out AddressRange range, out string error)
    {
        range = default;
        error = "";
        var s = text.Trim();
        int slash = s.IndexOf('/');
        var addressText = slash < 0 ? s : s[..slash];
        bool v6 = addressText.Contains(':');
        if (addressText.Contains('%'))
        {
            error = $"'{text}' is not a CIDR: zone ids are not allowed";
            return false;
        }
        if (!v6 && !IsDottedQuad(addressText) || !IPAddress.TryParse(addressText, out var ip))
        {
            error = $"'{text}' is not a CIDR such as 10.0.0.0/8, 192.0.2.1 or 2001:db8::/32";
            return false;
        }
        int maxBits = v6 ? 128 : 32;
        int bits = maxBits;
        if (slash >= 0 && (!int.TryParse(s.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out bits) || bits > maxBits))
        {
            error = $"'{text}' has an invalid prefix length (0-{maxBits} for {(v6 ? "IPv6" : "IPv4")})";
            return false;
        }
        UInt128 value = ToUInt128(ip);
        int hostBits = maxBits - bits;
        UInt128 hostMask = hostBits == 128 ? UInt128.MaxValue : (UInt128.One << hostBits) - UInt128.One;
        if ((value & hostMask) != UInt128.Zero)
        {
            var net = FromUInt128(value & ~hostMask, v6);
            error = $"'{text}' has host bits set; did you mean '{net}/{bits}'?";
            return false;
        }
        range = new AddressRange(value, value | hostMask);
        return true;
    }

    private static bool IsDottedQuad(string s)
    {
        int dots = 0;
        foreach (var c in s)
        {
            if (c == '.') dots++;
            else if (!char.IsAsciiDigit(c)) return false;
        }
        return dots == 3;
    }

    public static UInt128 ToUInt128(IPAddress ip) => ClientAddress.From(ip).Value;

    private static IPAddress FromUInt128(UInt128 v, bool v6)
    {
        Span<byte> b = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(b, v);
        return v6 ? new IPAddress(b) : new IPAddress(b[12..]);
    }
}

/// <summary>
/// A set of addresses as disjoint, sorted, merged ranges; membership is a binary search (17 steps at 100,000
/// entries), allocation-free. Immutable once built.
/// </summary>
public sealed class CidrSet
{
    private readonly UInt128[] _starts;
    private readonly UInt128[] _ends;

    public static readonly CidrSet Empty = new([], []);

    private CidrSet(UInt128[] starts, UInt128[] ends)
    {
        _starts = starts;
        _ends = ends;
    }

    /// <summary>Number of disjoint ranges after merging.</summary>
    public int RangeCount => _starts.Length;

    public static CidrSet Build(IEnumerable<AddressRange> ranges)
    {
        var list = ranges.ToArray();
        if (list.Length == 0) return Empty;
        Array.Sort(list, (a, b) => a.Start.CompareTo(b.Start));
        var starts = new List<UInt128>(list.Length);
        var ends = new List<UInt128>(list.Length);
        UInt128 s = list[0].Start, e = list[0].End;
        for (int i = 1; i < list.Length; i++)
        {
            var r = list[i];
            // Merge overlapping and adjacent ranges (adjacent: e + 1 == r.Start, careful at MaxValue).
            if (r.Start <= e || (e != UInt128.MaxValue && r.Start == e + UInt128.One))
            {
                if (r.End > e) e = r.End;
            }
            else
            {
                starts.Add(s);
                ends.Add(e);
                (s, e) = (r.Start, r.End);
            }
        }
        starts.Add(s);
        ends.Add(e);
        return new CidrSet(starts.ToArray(), ends.ToArray());
    }

    public bool Contains(UInt128 address)
    {
        var starts = _starts;
        int lo = 0, hi = starts.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            if (starts[mid] <= address)
            {
                found = mid;
                lo = mid + 1;
            }
            else hi = mid - 1;
        }
        return found >= 0 && address <= _ends[found];
    }
}

/// <summary>Reads ipLists: inline CIDRs or a file (one CIDR per line, '#' starts a comment, blank lines ignored).</summary>
public static class IpListLoader
{
    /// <summary>Parses the list, adding an error per bad entry (at most 20 per file, then a summary).</summary>
    public static CidrSet Load(Configuration.IpListConfig list, string baseDirectory, string jsonPath, List<Configuration.ConfigError> errors)
    {
        var ranges = new List<AddressRange>();
        for (int i = 0; i < list.Cidrs.Count; i++)
        {
            if (Cidr.TryParse(list.Cidrs[i], out var r, out var error)) ranges.Add(r);
            else errors.Add(new Configuration.ConfigError($"{jsonPath}.cidrs[{i}]", error));
        }
        if (list.File is { } file)
        {
            var full = Path.GetFullPath(Path.Combine(baseDirectory, file));
            string[] lines;
            try
            {
                lines = File.ReadAllLines(full);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                errors.Add(new Configuration.ConfigError(jsonPath + ".file", $"cannot read '{full}': {e.Message}"));
                return CidrSet.Empty;
            }
            int bad = 0;
            for (int n = 0; n < lines.Length; n++)
            {
                var line = lines[n];
                int hash = line.IndexOf('#');
                if (hash >= 0) line = line[..hash];
                line = line.Trim();
                if (line.Length == 0) continue;
                if (Cidr.TryParse(line, out var r, out var error)) ranges.Add(r);
                else if (++bad <= 20) errors.Add(new Configuration.ConfigError(jsonPath + ".file", $"{file} line {n + 1}: {error}"));
            }
            if (bad > 20) errors.Add(new Configuration.ConfigError(jsonPath + ".file", $"{file}: {bad - 20} more malformed lines not shown"));
        }
        return CidrSet.Build(ranges);
    }
}
