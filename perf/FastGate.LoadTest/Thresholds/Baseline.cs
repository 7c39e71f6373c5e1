using System.Globalization;

namespace FastGate.LoadTest.Thresholds;

/// <summary>
/// Numbers from an earlier run's <c>&lt;scenario&gt;-summary.csv</c>, for relative thresholds such as
/// <c>p99&lt;=1.2x</c> (at most 20% above the baseline's p99) or <c>rps&gt;=0.8x</c>.
/// </summary>
public sealed class Baseline
{
    private readonly Dictionary<string, double> _values;

    public Baseline(string source, IReadOnlyDictionary<string, double> values)
    {
        Source = source;
        _values = new Dictionary<string, double>(values, StringComparer.Ordinal);
    }

    public string Source { get; }

    /// <summary>Reads metric,value,unit rows; latency rows (ms) become ns, "error share" (%) a fraction.</summary>
    public static Baseline Load(string summaryCsv)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string line in File.ReadLines(summaryCsv).Skip(1))
        {
            var parts = line.Split(',');
            if (parts.Length < 3 || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) continue;
            values[parts[0]] = parts[2] switch
            {
                "ms" => v * 1e6,
                "%" => v / 100,
                _ => v,
            };
        }
        return new Baseline(summaryCsv, values);
    }

    /// <summary>The baseline's value for a summary row name ("latency p99", "throughput", "error share").</summary>
    public double? Get(string row) => _values.TryGetValue(row, out double v) ? v : null;
}
