namespace FastGate.LoadTest.Load;

/// <summary>
/// Wakes virtual users when their next request is due. One slot per virtual user; a poll signals every waiter
/// whose due time has passed. The background thread sleeps in 1 ms steps (so sends can be up to ~1 ms late,
/// which shows as send lag) unless precise, where it yields when the next due time is closer than that.
/// Tests drive <see cref="Poll"/> with a fake clock instead of starting the thread.
/// </summary>
public sealed class Ticker : IDisposable
{
    private readonly NanoClock _clock;
    private DueWaiter?[] _slots;
    private Thread? _thread;
    private volatile bool _stop;
    private readonly Lock _grow = new();

    private readonly bool _precise;

    /// <param name="precise">Yield instead of sleeping when the next request is due within 1 ms: sub-ms send lag
    /// at the cost of keeping one core busy.</param>
    public Ticker(NanoClock clock, int capacity = 64, bool precise = false)
    {
        _clock = clock;
        _precise = precise;
        _slots = new DueWaiter?[Math.Max(1, capacity)];
    }

    /// <summary>Gives each virtual user a slot; call before starting.</summary>
    public int AddSlot(DueWaiter waiter)
    {
        lock (_grow)
        {
            for (int i = 0; i < _slots.Length; i++)
            {
                if (_slots[i] is null) { _slots[i] = waiter; return i; }
            }
            var bigger = new DueWaiter?[_slots.Length * 2];
            Array.Copy(_slots, bigger, _slots.Length);
            int slot = _slots.Length;
            bigger[slot] = waiter;
            Volatile.Write(ref _slots, bigger);
            return slot;
        }
    }

    /// <summary>
    /// Waits until <paramref name="dueNs"/>: completes synchronously when already due, else the ticker
    /// signals the waiter. The waiter must belong to a slot of this ticker.
    /// </summary>
    public ValueTask WaitUntil(DueWaiter waiter, long dueNs)
    {
        if (_clock.NowNs >= dueNs) return ValueTask.CompletedTask;
        waiter.Arm(dueNs);
        // Close the race with a poll that ran between the check above and Arm.
        if (_clock.NowNs >= dueNs) waiter.TrySignal();
        return waiter.Task;
    }

    /// <summary>Signals every waiter that is due at <paramref name="nowNs"/>; returns the earliest pending due time or long.MaxValue.</summary>
    public long Poll(long nowNs)
    {
        long next = long.MaxValue;
        var slots = Volatile.Read(ref _slots);
        for (int i = 0; i < slots.Length; i++)
        {
            var w = slots[i];
            if (w is null || !w.IsWaiting) continue;
            long due = w.DueNs;
            if (due <= nowNs) w.TrySignal();
            else if (due < next) next = due;
        }
        return next;
    }

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "load-ticker", Priority = ThreadPriority.AboveNormal };
        _thread.Start();
    }

    private void Run()
    {
        while (!_stop)
        {
            long now = _clock.NowNs;
            long next = Poll(now);
            long wait = next == long.MaxValue ? 1_000_000 : next - _clock.NowNs;
            if (wait <= 0) continue;
            if (wait >= 1_000_000 || !_precise) Thread.Sleep(1);
            else Thread.Yield();
        }
    }

    public void Dispose()
    {
        _stop = true;
        _thread?.Join();
        Poll(long.MaxValue);
    }
}
