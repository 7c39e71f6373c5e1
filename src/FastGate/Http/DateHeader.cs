using System.Globalization;

namespace FastGate.Http;

/// <summary>
/// The "Date: ...\r\n" header line, formatted once a second into one of four preallocated lines (nothing allocated
/// per tick; a reader that took a line a moment ago finds it unchanged for three more seconds).
/// </summary>
public static class DateHeader
{
    /// <summary>"Date: " + the RFC 1123 date (29 bytes, "r") + CRLF.</summary>
    private const int LineLength = 6 + 29 + 2;
    private static readonly byte[][] s_lines = [new byte[LineLength], new byte[LineLength], new byte[LineLength], new byte[LineLength]];
    private static int s_next;
    private static byte[] s_line = Format(DateTimeOffset.UtcNow);
    private static readonly Timer s_timer = new(_ => Volatile.Write(ref s_line, Format(DateTimeOffset.UtcNow)), null, 1000, 1000);

    public static ReadOnlySpan<byte> Line => Volatile.Read(ref s_line);

    private static byte[] Format(DateTimeOffset now)
    {
        var line = s_lines[s_next++ & 3];
        "Date: "u8.CopyTo(line);
        if (!now.UtcDateTime.TryFormat(line.AsSpan(6), out int n, "r", CultureInfo.InvariantCulture) || n != 29)
            throw new InvalidOperationException("an RFC 1123 date is 29 bytes");
        "\r\n"u8.CopyTo(line.AsSpan(6 + 29));
        return line;
    }

    internal static void KeepAlive() => GC.KeepAlive(s_timer);
}
