using HdrHistogram;

namespace FastGate.LoadTest.Metrics;

/// <summary>One second of the measured run.</summary>
public sealed record TimePoint(double Second, long Responses, long Errors, double Rps,
    long P50Ns, long P90Ns, long P99Ns, long MaxNs, long SendLagP99Ns);

/// <summary>Latency summary in nanoseconds.</summary>
public sealed record LatencySummary(long Count, long P50, long P90, long P99, long P999, long Max, double Mean)
{
    public static LatencySummary From(HistogramBase h) => h.TotalCount == 0
        ? new LatencySummary(0, 0, 0, 0, 0, 0, 0)
        : new LatencySummary(h.TotalCount, h.GetValueAtPercentile(50), h.GetValueAtPercentile(90), h.GetValueAtPercentile(99),
            h.GetValueAtPercentile(99.9), h.GetMaxValue(), h.GetMean());

    public long At(double percentile) => percentile switch
    {
        50 => P50,
        90 => P90,
        99 => P99,
        99.9 => P999,
        100 => Max,
        _ => throw new ArgumentOutOfRangeException(nameof(percentile)),
    };
}

/// <summary>Everything a report needs about one scenario run (warm-up excluded).</summary>
public sealed class RunResult
{
    public required string Scenario { get; init; }
    public required string Target { get; init; }
    public required DateTimeOffset Started { get; init; }
    public required IReadOnlyList<string> Phases { get; init; }
    public required int Connections { get; init; }
    public required double MeasuredSeconds { get; init; }
    public required HistogramBase Latency { get; init; }
    public required HistogramBase SendLag { get; init; }
    public required Counts Counts { get; init; }
    public required IReadOnlyList<TimePoint> Series { get; init; }

    /// <summary>Counters of side traffic (e.g. the hostile client), name → value.</summary>
    public IReadOnlyDictionary<string, long> SideCounters { get; init; } = new Dictionary<string, long>();

    public IReadOnlyList<ThresholdOutcome> Thresholds { get; set; } = [];

    /// <summary>Bytes this process allocated during the measured phases (the generator's own garbage; includes
    /// anything else in the process, such as an in-process test server).</summary>
    public long ClientAllocatedBytes { get; init; }

    public LatencySummary LatencySummary => LatencySummary.From(Latency);
    public LatencySummary SendLagSummary => LatencySummary.From(SendLag);

    public double Rps => MeasuredSeconds > 0 ? Counts.Responses / MeasuredSeconds : 0;

    public double ErrorShare => Counts.Requests == 0 ? 0 : (double)Counts.ErrorTotal / Counts.Requests;

    public bool Passed => Thresholds.All(t => t.Passed);

    /// <summary>Share of all requests answered with exactly this status (or class, e.g. 4 for 4xx).</summary>
    public double StatusShare(int code, bool isClass)
    {
        if (Counts.Requests == 0) return 0;
        long n = 0;
        if (isClass) for (int s = code * 100; s < (code * 100) + 100; s++) n += Counts.Status[s];
        else n = Counts.Status[code];
        return (double)n / Counts.Requests;
    }
}

public sealed record ThresholdOutcome(string Expression, bool Passed, string Actual);
