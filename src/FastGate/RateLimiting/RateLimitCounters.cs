using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastGate.RateLimiting;

/// <summary>
/// A counter striped over cache lines by processor so that increments from several cores do not fight over one line.
/// Read with <see cref="Value"/> (a sum; exact once writers are quiet).
/// </summary>
public sealed class StripedCounter
{
    [StructLayout(LayoutKind.Explicit, Size = 128)]
    private struct Cell { [FieldOffset(64)] public long Value; }

    private readonly Cell[] _cells;
    private readonly int _mask;

    public StripedCounter()
    {
        int n = 1;
        while (n < Environment.ProcessorCount && n < 64) n <<= 1;
        _cells = new Cell[n];
        _mask = n - 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Increment() => Interlocked.Increment(ref _cells[Thread.GetCurrentProcessorId() & _mask].Value);

    /// <summary>
    /// Increment without a locked instruction: exact while each processor's cell has one writer at a time, which holds
    /// except when a thread's cached processor id is stale; then an increment can be lost (never invented). For
    /// high-volume counters on the hot path (allowed decisions), where that error is noise.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void IncrementRelaxed()
    {
        ref long v = ref _cells[Thread.GetCurrentProcessorId() & _mask].Value;
        Volatile.Write(ref v, v + 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(long n) => Interlocked.Add(ref _cells[Thread.GetCurrentProcessorId() & _mask].Value, n);

    public long Value
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _cells.Length; i++) sum += Volatile.Read(ref _cells[i].Value);
            return sum;
        }
    }
}

/// <summary>Plain counters for the metrics layer (which reads them on scrape). No dependency on a metrics library.</summary>
public sealed class RateLimiterCounters
{
    /// <summary>Allowed decisions (relaxed increments: may miss a count under a rare race, never adds one).</summary>
    public readonly StripedCounter Allowed = new();
    public readonly StripedCounter Rejected = new();
    /// <summary>Requests without a key value (any missingKey behaviour).</summary>
    public readonly StripedCounter MissingKey = new();
    /// <summary>Cluster: store calls that failed or timed out.</summary>
    public readonly StripedCounter StoreFailures = new();
    /// <summary>Cluster: decisions made by the local fallback limiter (onStoreFailure allow).</summary>
    public readonly StripedCounter StoreFallbackDecisions = new();
    /// <summary>Cluster: requests rejected with 503 because the store failed (onStoreFailure deny).</summary>
    public readonly StripedCounter StoreFailureRejections = new();
    /// <summary>Cluster: script calls made to the store (foreground and background).</summary>
    public readonly StripedCounter StoreCalls = new();
    /// <summary>Cluster: requests that had to wait for the store (no local allowance).</summary>
    public readonly StripedCounter StoreWaits = new();
}
