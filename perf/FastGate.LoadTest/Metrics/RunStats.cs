using HdrHistogram;

namespace FastGate.LoadTest.Metrics;

public enum ErrorKind
{
    /// <summary>The TCP connection could not be opened.</summary>
    Connect,
    /// <summary>No whole response within the timeout (or the request could not even be sent before the phase deadline).</summary>
    Timeout,
    /// <summary>The connection was reset or closed before the response was complete.</summary>
    Reset,
    /// <summary>The response was not valid HTTP/1.1.</summary>
    Protocol,
    /// <summary>A complete response whose status the scenario did not expect.</summary>
    UnexpectedStatus,
    /// <summary>A 429 without Retry-After or RateLimit-* headers where the scenario requires them.</summary>
    MissingHeaders,
}

/// <summary>
/// Thread-safe, allocation-free recording of one run (or its warm-up): latency and send-lag recorders
/// (HdrHistogram, nanoseconds), status counts and error counts.
/// </summary>
public sealed class RunStats
{
    public const long HighestNs = 600L * 1_000_000_000; // 10 minutes
    public const int ErrorKinds = 6;

    private readonly Recorder _latency = NewRecorder();
    private readonly Recorder _sendLag = NewRecorder();
    private readonly long[] _status = new long[600];
    private readonly long[] _errors = new long[ErrorKinds];
    private long _requests;
    private long _responses;

    public static Recorder NewRecorder() => new(1, HighestNs, 3, (id, low, high, digits) => new LongConcurrentHistogram(id, low, high, digits));

    public static HistogramBase NewHistogram() => new LongHistogram(1, HighestNs, 3);

    public long Requests => Volatile.Read(ref _requests);
    public long Responses => Volatile.Read(ref _responses);

    /// <summary>A complete response arrived. <paramref name="latencyNs"/> counts from the scheduled time; a negative lag is not recorded.</summary>
    public void RecordResponse(int status, long latencyNs, long sendLagNs, bool expected, bool headersOk = true)
    {
        if (!headersOk) Interlocked.Increment(ref _errors[(int)ErrorKind.MissingHeaders]);
        Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref _responses);
        if ((uint)status < 600) Interlocked.Increment(ref _status[status]);
        if (!expected) Interlocked.Increment(ref _errors[(int)ErrorKind.UnexpectedStatus]);
        _latency.RecordValue(Math.Clamp(latencyNs, 1, HighestNs));
        if (sendLagNs >= 0) _sendLag.RecordValue(Math.Clamp(sendLagNs, 1, HighestNs)); // closed model: no schedule, no lag
    }

    /// <summary>A request ended without a usable response.</summary>
    public void RecordError(ErrorKind kind, long sendLagNs)
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref _errors[(int)kind]);
        if (sendLagNs >= 0) _sendLag.RecordValue(Math.Clamp(sendLagNs, 1, HighestNs));
    }

    /// <summary>Moves what was recorded since the last call into the given interval histograms.</summary>
    public void TakeInterval(HistogramBase latency, HistogramBase sendLag)
    {
        _latency.GetIntervalHistogramInto(latency);
        _sendLag.GetIntervalHistogramInto(sendLag);
    }

    public Counts Snapshot()
    {
        var status = new long[600];
        for (int i = 0; i < status.Length; i++) status[i] = Volatile.Read(ref _status[i]);
        var errors = new long[ErrorKinds];
        for (int i = 0; i < errors.Length; i++) errors[i] = Volatile.Read(ref _errors[i]);
        return new Counts(Requests, Responses, status, errors);
    }
}

/// <summary>Counters at one moment.</summary>
public sealed record Counts(long Requests, long Responses, long[] Status, long[] Errors)
{
    public long ErrorTotal
    {
        get
        {
            long sum = 0;
            foreach (long e in Errors) sum += e;
            return sum;
        }
    }
}
