using System.Text;

namespace FastGate.Observability;

/// <summary>
/// Cumulative, lock-free counters of one route, one cluster or the whole gateway, fed by the request path
/// (Interlocked increments only) and read by the alert engine, which turns them into sliding windows by keeping
/// snapshots over time. Also keeps the request and trace ids of a few recent failures for alert payloads.
/// </summary>
public sealed class TrafficCounters
{
    /// <summary>Upper bounds (seconds) of the latency buckets used for percentile alerts; the last is +Inf.</summary>
    internal static readonly double[] LatencyBounds =
        [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, double.PositiveInfinity];

    private const int SampleCount = 8;
    private long _requests, _serverErrors, _authFailures, _rateLimited, _upstreamOk, _upstreamFailed, _bytesIn, _bytesOut, _wafBlocked;
    private readonly long[] _latency = new long[LatencyBounds.Length];
    private readonly FailureSample[] _samples = new FailureSample[SampleCount];
    private long _sampleCursor;

    public TrafficCounters(string name)
    {
        Name = name;
        for (int i = 0; i < _samples.Length; i++) _samples[i] = new FailureSample();
    }

    public string Name { get; }

    internal void Record(in RequestRecord r, bool upstreamAttempted, bool upstreamFailed, double seconds)
    {
        Interlocked.Increment(ref _requests);
        int status = r.Status;
        if (status >= 500) Interlocked.Increment(ref _serverErrors);
        else if (status is 401 or 403) Interlocked.Increment(ref _authFailures);
        else if (status == 429) Interlocked.Increment(ref _rateLimited);
        if (r.Reason == Http.RejectReason.WafBlocked) Interlocked.Increment(ref _wafBlocked);
        if (upstreamAttempted)
        {
            if (upstreamFailed) Interlocked.Increment(ref _upstreamFailed);
            else Interlocked.Increment(ref _upstreamOk);
        }
        if (r.BytesIn > 0) Interlocked.Add(ref _bytesIn, r.BytesIn);
        if (r.BytesOut > 0) Interlocked.Add(ref _bytesOut, r.BytesOut);
        int b = 0;
        while (seconds > LatencyBounds[b]) b++;
        Interlocked.Increment(ref _latency[b]);
        if (status >= 500 || status is 401 or 403 or 429) Sample(r);
    }

    /// <summary>Keeps the ids of a recent failure. Never waits: a slot being written by another thread is skipped.</summary>
    private void Sample(in RequestRecord r)
    {
        var slot = _samples[(int)((ulong)Interlocked.Increment(ref _sampleCursor) % SampleCount)];
        if (Interlocked.CompareExchange(ref slot.Busy, 1, 0) != 0) return;
        slot.RequestIdLength = Copy(r.RequestId, slot.RequestId);
        slot.TraceIdLength = Copy(r.TraceId, slot.TraceId);
        slot.Status = r.Status;
        Volatile.Write(ref slot.Busy, 0);
    }

    private static int Copy(ReadOnlySpan<byte> from, byte[] to)
    {
        int n = Math.Min(from.Length, to.Length);
        from[..n].CopyTo(to);
        return n;
    }

    public TrafficSnapshot Snapshot()
    {
        var latency = new long[_latency.Length];
        for (int i = 0; i < latency.Length; i++) latency[i] = Volatile.Read(ref _latency[i]);
        return new TrafficSnapshot(Volatile.Read(ref _requests), Volatile.Read(ref _serverErrors), Volatile.Read(ref _authFailures),
            Volatile.Read(ref _rateLimited), Volatile.Read(ref _upstreamOk), Volatile.Read(ref _upstreamFailed),
            Volatile.Read(ref _bytesIn), Volatile.Read(ref _bytesOut), latency) { WafBlocked = Volatile.Read(ref _wafBlocked) };
    }

    /// <summary>Request and trace ids of recent failures (newest first), for alert payloads.</summary>
    public (List<string> RequestIds, List<string> TraceIds) RecentFailures()
    {
        var ids = new List<string>();
        var traces = new List<string>();
        long cursor = Volatile.Read(ref _sampleCursor);
        for (int i = 0; i < SampleCount && i < cursor; i++)
        {
            var slot = _samples[(int)((ulong)(cursor - i) % SampleCount)];
            if (Interlocked.CompareExchange(ref slot.Busy, 1, 0) != 0) continue;
            if (slot.RequestIdLength > 0) ids.Add(Encoding.ASCII.GetString(slot.RequestId, 0, slot.RequestIdLength));
            if (slot.TraceIdLength > 0) traces.Add(Encoding.ASCII.GetString(slot.TraceId, 0, slot.TraceIdLength));
            Volatile.Write(ref slot.Busy, 0);
        }
        return (ids, traces);
    }

    private sealed class FailureSample
    {
        public int Busy;
        public readonly byte[] RequestId = new byte[64];
        public readonly byte[] TraceId = new byte[32];
        public int RequestIdLength, TraceIdLength, Status;
    }
}

/// <summary>The cumulative values of <see cref="TrafficCounters"/> at one moment; windows are differences of two.</summary>
public sealed record TrafficSnapshot(long Requests, long ServerErrors, long AuthFailures, long RateLimited, long UpstreamOk,
    long UpstreamFailed, long BytesIn, long BytesOut, long[] Latency)
{
    public static readonly TrafficSnapshot Zero = new(0, 0, 0, 0, 0, 0, 0, 0, new long[TrafficCounters.LatencyBounds.Length]);

    /// <summary>Requests the WAF refused (decision waf_blocked).</summary>
    public long WafBlocked { get; init; }

    public TrafficSnapshot Minus(TrafficSnapshot earlier)
    {
        var latency = new long[Latency.Length];
        for (int i = 0; i < latency.Length; i++) latency[i] = Latency[i] - earlier.Latency[i];
        return new TrafficSnapshot(Requests - earlier.Requests, ServerErrors - earlier.ServerErrors, AuthFailures - earlier.AuthFailures,
            RateLimited - earlier.RateLimited, UpstreamOk - earlier.UpstreamOk, UpstreamFailed - earlier.UpstreamFailed,
            BytesIn - earlier.BytesIn, BytesOut - earlier.BytesOut, latency) { WafBlocked = WafBlocked - earlier.WafBlocked };
    }

    /// <summary>Percentile in seconds, interpolated linearly inside its bucket (as Prometheus' histogram_quantile does).</summary>
    public double Percentile(double q)
    {
        long total = 0;
        foreach (var c in Latency) total += c;
        if (total == 0) return 0;
        double rank = q * total;
        long cumulative = 0;
        for (int i = 0; i < Latency.Length; i++)
        {
            long before = cumulative;
            cumulative += Latency[i];
            if (cumulative >= rank && Latency[i] > 0)
            {
                double lower = i == 0 ? 0 : TrafficCounters.LatencyBounds[i - 1];
                double upper = TrafficCounters.LatencyBounds[i];
                if (double.IsInfinity(upper)) return lower;
                return lower + (upper - lower) * ((rank - before) / Latency[i]);
            }
        }
        return TrafficCounters.LatencyBounds[^2];
    }
}
