using System.Text;

namespace FastGate.Http;

/// <summary>The "Date: ...\r\n" header line, formatted once a second.</summary>
public static class DateHeader
{
    private static byte[] s_line = Format(DateTimeOffset.UtcNow);
    private static readonly Timer s_timer = new(_ => s_line = Format(DateTimeOffset.UtcNow), null, 1000, 1000);

    public static ReadOnlySpan<byte> Line => Volatile.Read(ref s_line);

    private static byte[] Format(DateTimeOffset now) => Encoding.ASCII.GetBytes("Date: " + now.ToString("r") + "\r\n");

    internal static void KeepAlive() => GC.KeepAlive(s_timer);
}
