using FastGate.LoadTest.Load;
using Xunit;

namespace FastGate.LoadTest.Tests.Load;

public class TickerTests
{
    [Fact]
    public async Task WaitUntil_AlreadyDue_CompletesSynchronously()
    {
        var time = new FakeTime();
        using var ticker = new Ticker(new NanoClock(time));
        var w = new DueWaiter(inline: true);
        ticker.AddSlot(w);
        var task = ticker.WaitUntil(w, time.NowNs);
        Assert.True(task.IsCompleted);
        await task;
    }

    [Fact]
    public async Task Waiter_IsReleasedByTheFirstPollAtOrAfterItsDueTime_NeverEarlier()
    {
        var time = new FakeTime();
        using var ticker = new Ticker(new NanoClock(time));
        var w = new DueWaiter(inline: true);
        ticker.AddSlot(w);
        long due = time.NowNs + 1_000_000;
        var task = ticker.WaitUntil(w, due);

        Assert.Equal(due, ticker.Poll(time.NowNs)); // reports the next due time
        time.AdvanceTo(due - 1);
        ticker.Poll(time.NowNs);
        Assert.False(task.IsCompleted);
        time.AdvanceTo(due);
        Assert.Equal(long.MaxValue, ticker.Poll(time.NowNs));
        Assert.True(task.IsCompleted);
        await task;
        // Reusable: the same waiter waits again.
        var again = ticker.WaitUntil(w, due + 10);
        Assert.False(again.IsCompleted);
        time.Advance(10);
        ticker.Poll(time.NowNs);
        await again;
    }

    /// <summary>
    /// Open-model accuracy against a fake clock: four virtual users share a 2000 rps schedule, claim requests
    /// in order, wait on the ticker, and "send" when released. The clock moves in 100 µs steps and the
    /// ticker polls after each step, so every send must happen in the step its request was due in: never
    /// before it, less than one step after it, and exactly 2000 sends per simulated second.
    /// </summary>
    [Fact]
    public async Task OpenModel_FakeClock_EverySendIsOnSchedule()
    {
        var time = new FakeTime(0);
        var clock = new NanoClock(time);
        using var ticker = new Ticker(clock);
        var schedule = new OpenSchedule(2000, 2000, TimeSpan.FromSeconds(3));
        const long step = 100_000;
        long next = 0;
        var lateness = new List<long>();
        var perSecond = new int[3];

        async Task User(DueWaiter w)
        {
            while (true)
            {
                long n = next++; // all users run inline on the test thread: no race
                if (n >= schedule.TotalRequests) return;
                long due = schedule.DueNs(n);
                await ticker.WaitUntil(w, due).ConfigureAwait(false); // inline, not via xunit's context
                long sent = clock.NowNs;
                lateness.Add(sent - due);
                perSecond[(int)(due / 1_000_000_000)]++;
            }
        }

        var users = Enumerable.Range(0, 4).Select(_ => new DueWaiter(inline: true)).ToArray();
        foreach (var w in users) ticker.AddSlot(w);
        var tasks = users.Select(User).ToArray();
        while (!tasks.All(t => t.IsCompleted))
        {
            time.Advance(step);
            ticker.Poll(time.NowNs);
            Assert.True(time.NowNs < 4_000_000_000, "the schedule did not finish");
        }
        await Task.WhenAll(tasks);

        Assert.Equal(6000, lateness.Count);
        Assert.All(lateness, l => Assert.InRange(l, 0, step - 1));
        Assert.Equal([2000, 2000, 2000], perSecond);
    }

    [Fact]
    public async Task Dispose_ReleasesEveryoneStillWaiting()
    {
        var time = new FakeTime();
        var ticker = new Ticker(new NanoClock(time));
        var w = new DueWaiter(inline: true);
        ticker.AddSlot(w);
        var task = ticker.WaitUntil(w, time.NowNs + 1_000_000_000);
        ticker.Dispose();
        await task;
    }
}
