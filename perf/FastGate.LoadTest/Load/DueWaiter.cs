using System.Threading.Tasks.Sources;

namespace FastGate.LoadTest.Load;

/// <summary>
/// A reusable, allocation-free "wake me at time T" for one virtual user. The <see cref="Ticker"/> signals it;
/// the continuation runs on the thread pool (the waiter queues itself as a work item), never on the ticker.
/// </summary>
public sealed class DueWaiter : IValueTaskSource, IThreadPoolWorkItem
{
    private const int Idle = 0, Waiting = 1, Signalled = 2;
    private ManualResetValueTaskSourceCore<bool> _core;
    private int _state;
    private readonly bool _inline;

    /// <param name="inline">Complete on the signalling thread (deterministic tests) instead of the thread pool.</param>
    public DueWaiter(bool inline = false)
    {
        _inline = inline;
        _core.RunContinuationsAsynchronously = false;
    }

    /// <summary>The nanosecond timestamp this waiter waits for; valid while waiting.</summary>
    public long DueNs { get; private set; }

    public bool IsWaiting => Volatile.Read(ref _state) == Waiting;

    /// <summary>Arms the waiter; the caller then registers it with the ticker and awaits <see cref="Task"/>.</summary>
    internal void Arm(long dueNs)
    {
        _core.Reset();
        DueNs = dueNs;
        Volatile.Write(ref _state, Waiting);
    }

    internal ValueTask Task => new(this, _core.Version);

    /// <summary>Fires the waiter once; false when it was not waiting (already fired).</summary>
    internal bool TrySignal()
    {
        if (Interlocked.CompareExchange(ref _state, Signalled, Waiting) != Waiting) return false;
        if (_inline) _core.SetResult(true);
        else ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        return true;
    }

    void IThreadPoolWorkItem.Execute() => _core.SetResult(true);

    void IValueTaskSource.GetResult(short token)
    {
        _core.GetResult(token);
        Volatile.Write(ref _state, Idle);
    }

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);
}
