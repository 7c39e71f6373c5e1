using System.Globalization;

namespace FastGate.LoadTest;

internal static class Format
{
    public static string Duration(TimeSpan d)
    {
        if (d.TotalSeconds >= 1 && d.TotalSeconds == Math.Floor(d.TotalSeconds)) return d.TotalSeconds.ToString("0", CultureInfo.InvariantCulture) + "s";
        return d.TotalMilliseconds.ToString("0.###", CultureInfo.InvariantCulture) + "ms";
    }

    /// <summary>Nanoseconds as a human number with a unit: 850us, 1.23ms, 2.5s.</summary>
    public static string Latency(double ns)
    {
        var c = CultureInfo.InvariantCulture;
        if (ns < 1_000) return ns.ToString("0", c) + "ns";
        if (ns < 1_000_000) return (ns / 1e3).ToString("0.#", c) + "us";
        if (ns < 1_000_000_000) return (ns / 1e6).ToString("0.##", c) + "ms";
        return (ns / 1e9).ToString("0.###", c) + "s";
    }

    public static string Ms(double ns) => (ns / 1e6).ToString("0.###", CultureInfo.InvariantCulture);

    public static string Num(double v, string format = "0.##") => v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>Parses 500ms, 10s, 2m, 1h, 250us or a bare number of seconds.</summary>
    public static bool TryParseDuration(string text, out TimeSpan value)
    {
        value = default;
        text = text.Trim();
        string[] units = ["ms", "us", "µs", "ns", "s", "m", "h"];
        foreach (var unit in units)
        {
            if (!text.EndsWith(unit, StringComparison.OrdinalIgnoreCase)) continue;
            if (!double.TryParse(text.AsSpan(0, text.Length - unit.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || n < 0) return false;
            double ticks = unit switch
            {
                "ms" => n * TimeSpan.TicksPerMillisecond,
                "us" or "µs" => n * 10,
                "ns" => n / 100,
                "s" => n * TimeSpan.TicksPerSecond,
                "m" => n * TimeSpan.TicksPerMinute,
                _ => n * TimeSpan.TicksPerHour,
            };
            value = TimeSpan.FromTicks((long)ticks);
            return true;
        }
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double secs) && secs >= 0)
        {
            value = TimeSpan.FromTicks((long)(secs * TimeSpan.TicksPerSecond));
            return true;
        }
        return false;
    }
}
