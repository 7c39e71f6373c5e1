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
/// A set of addresses as disjoint, sorted, merged ranges. IPv4 ranges (the ::ffff:0:0/96 block) are kept as
/// 32-bit values; a large IPv4 set also gets a 65,536-entry index by the address's top 16 bits, so a lookup
/// binary-searches only the few ranges of one /16 (100,000 entries: about one). IPv6 ranges are searched as
/// 128-bit values. Lookups are allocation-free; the set is immutable once built.
/// </summary>
public sealed class CidrSet
{
    private static readonly UInt128 V4Base = (UInt128)0xFFFF << 32;
    private static readonly UInt128 V4Last = V4Base | uint.MaxValue;
    private const int IndexThreshold = 256;

    private readonly uint[] _v4Starts;
    private readonly uint[] _v4Ends;
    /// <summary>_v4Index[h] = number of IPv4 ranges starting below h &lt;&lt; 16 (65,537 entries), or null.</summary>
    private readonly int[]? _v4Index;
    private readonly UInt128[] _v6Starts;
    private readonly UInt128[] _v6Ends;

    public static readonly CidrSet Empty = Build([]);

    private CidrSet(List<AddressRange> merged)
    {
        var v4s = new List<uint>();
        var v4e = new List<uint>();
        var v6s = new List<UInt128>();
        var v6e = new List<UInt128>();
        foreach (var r in merged)
        {
            // Split each range into the part inside the IPv4 block and the parts outside it.
            if (r.Start < V4Base) { v6s.Add(r.Start); v6e.Add(r.End < V4Base ? r.End : V4Base - 1); }
            if (r.Start <= V4Last && r.End >= V4Base)
            {
                v4s.Add((uint)(r.Start > V4Base ? r.Start - V4Base : 0));
                v4e.Add((uint)(r.End < V4Last ? r.End - V4Base : uint.MaxValue));
            }
            if (r.End > V4Last) { v6s.Add(r.Start > V4Last ? r.Start : V4Last + 1); v6e.Add(r.End); }
        }
        _v4Starts = v4s.ToArray();
        _v4Ends = v4e.ToArray();
        _v6Starts = v6s.ToArray();
        _v6Ends = v6e.ToArray();
        RangeCount = merged.Count;
        if (_v4Starts.Length >= IndexThreshold)
        {
            _v4Index = new int[65537];
            int k = 0;
            for (int h = 0; h <= 65536; h++)
            {
                ulong bucketStart = (ulong)h << 16;
                while (k < _v4Starts.Length && _v4Starts[k] < bucketStart) k++;
                _v4Index[h] = k;
            }
        }
    }

    /// <summary>Number of disjoint ranges after merging.</summary>
    public int RangeCount { get; }

    public static CidrSet Build(IEnumerable<AddressRange> ranges)
    {
        var list = ranges.ToArray();
        Array.Sort(list, (a, b) => a.Start.CompareTo(b.Start));
        var merged = new List<AddressRange>(list.Length);
        for (int i = 0; i < list.Length; i++)
        {
            var r = list[i];
            if (merged.Count > 0)
            {
                var last = merged[^1];
                // Merge overlapping and adjacent ranges (adjacent: End + 1 == Start; careful at MaxValue).
                if (r.Start <= last.End || (last.End != UInt128.MaxValue && r.Start == last.End + UInt128.One))
                {
                    if (r.End > last.End) merged[^1] = last with { End = r.End };
                    continue;
                }
            }
            merged.Add(r);
        }
        return new CidrSet(merged);
    }

    public bool Contains(UInt128 address)
    {
        if ((ulong)(address >> 32) == 0xFFFF && (ulong)(address >> 64) == 0) return ContainsV4((uint)address);
        var starts = _v6Starts;
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
        return found >= 0 && address <= _v6Ends[found];
    }

    private bool ContainsV4(uint address)
    {
        var starts = _v4Starts;
        int lo = 0, hi = starts.Length - 1;
        if (_v4Index is { } index)
        {
            // The last range starting at or below the address starts in this /16 or is the last one before it.
            int h = (int)(address >> 16);
            lo = index[h] - 1;
            hi = index[h + 1] - 1;
            if (lo < 0) lo = 0;
        }
        int found = -1;
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
        return found >= 0 && address <= _v4Ends[found];
    }
}

/// <summary>Reads ipLists: inline CIDRs or a file (one CIDR per line, '#' starts a comment, blank lines ignored).</summary>
public static class IpListLoader
{
    /// <summary>
    /// Parses the list, adding an error per bad entry (at most 20 per file, then a summary). A bad line of a file is
    /// named by its number, never its text: the file may not be a list at all (a key, /etc/passwd).
    /// </summary>
    public static CidrSet Load(Configuration.IpListConfig list, string baseDirectory, string jsonPath, List<Configuration.ConfigError> errors,
        Configuration.ConfigFileAccess? files = null)
    {
        var ranges = new List<AddressRange>();
        for (int i = 0; i < list.Cidrs.Count; i++)
        {
            if (Cidr.TryParse(list.Cidrs[i], out var r, out var error)) ranges.Add(r);
            else errors.Add(new Configuration.ConfigError($"{jsonPath}.cidrs[{i}]", error));
        }
        if (list.File is { } file)
        {
            if (!(files ?? Configuration.ConfigFileAccess.Any).TryResolve(baseDirectory, file, out var full, out var refused))
            {
                errors.Add(new Configuration.ConfigError(jsonPath + ".file", refused!));
                return CidrSet.Empty;
            }
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
                else if (++bad <= 20) errors.Add(new Configuration.ConfigError(jsonPath + ".file", $"{file} line {n + 1}: {WithoutText(error, line)}"));
            }
            if (bad > 20) errors.Add(new Configuration.ConfigError(jsonPath + ".file", $"{file}: {bad - 20} more malformed lines not shown"));
        }
        return CidrSet.Build(ranges);
    }

    /// <summary>What is wrong with a line, without the line: the quoted entry and any suggestion derived from it go.</summary>
    private static string WithoutText(string error, string line)
    {
        var message = error.Replace($"'{line}'", "the entry", StringComparison.Ordinal);
        int hint = message.IndexOf(';');
        message = hint >= 0 ? message[..hint] : message;
        return message.Contains(line, StringComparison.Ordinal) ? "the entry is not a CIDR" : message;
    }
}
