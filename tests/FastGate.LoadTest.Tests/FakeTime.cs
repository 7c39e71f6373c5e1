namespace FastGate.LoadTest.Tests;

/// <summary>A clock that moves only when the test says so (nanosecond timestamps).</summary>
public sealed class FakeTime : TimeProvider
{
    private long _ns;

    public FakeTime(long startNs = 1_000_000_000) => _ns = startNs;

    public long NowNs => Volatile.Read(ref _ns);

    public override long TimestampFrequency => 1_000_000_000;

    public override long GetTimestamp() => Volatile.Read(ref _ns);

    public void Advance(long ns) => Interlocked.Add(ref _ns, ns);

    public void AdvanceTo(long ns) => Volatile.Write(ref _ns, ns);
}
