namespace FastGate.LoadTest.Load;

/// <summary>Nanosecond timestamps from an injectable <see cref="TimeProvider"/> (a fake one in tests).</summary>
public sealed class NanoClock
{
    private readonly TimeProvider _time;
    private readonly double _nsPerTick;
    private readonly bool _exact;

    public NanoClock(TimeProvider time)
    {
        _time = time;
        _exact = time.TimestampFrequency == 1_000_000_000;
        _nsPerTick = 1e9 / time.TimestampFrequency;
    }

    public static NanoClock System { get; } = new(TimeProvider.System);

    public TimeProvider Provider => _time;

    public long NowNs
    {
        get
        {
            long ts = _time.GetTimestamp();
            return _exact ? ts : (long)(ts * _nsPerTick);
        }
    }
}
