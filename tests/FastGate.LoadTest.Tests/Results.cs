using FastGate.LoadTest.Metrics;

namespace FastGate.LoadTest.Tests;

/// <summary>Builds a <see cref="RunResult"/> from known values.</summary>
public static class Results
{
    /// <param name="latenciesNs">one response per value, all with <paramref name="status"/></param>
    public static RunResult Make(IEnumerable<long> latenciesNs, int status = 200, double seconds = 1, Action<RunStats>? more = null)
    {
        var stats = new RunStats();
        foreach (long l in latenciesNs) stats.RecordResponse(status, l, 1000, expected: true);
        more?.Invoke(stats);
        var lat = RunStats.NewHistogram();
        var lag = RunStats.NewHistogram();
        stats.TakeInterval(lat, lag);
        var counts = stats.Snapshot();
        return new RunResult
        {
            Scenario = "unit",
            Target = "http://127.0.0.1:1/",
            Started = DateTimeOffset.UnixEpoch,
            Phases = ["constant 1 rps for 1s"],
            Connections = 1,
            MeasuredSeconds = seconds,
            Latency = lat,
            SendLag = lag,
            Counts = counts,
            Series = [new TimePoint(1, counts.Responses, counts.ErrorTotal, counts.Responses / seconds, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 10_000)],
        };
    }
}
