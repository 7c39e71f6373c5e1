using FastGate.LoadTest.Load;
using Xunit;

namespace FastGate.LoadTest.Tests.Load;

public class OpenScheduleTests
{
    [Fact]
    public void ConstantRate_RequestN_IsDueAtNOverRate()
    {
        var s = new OpenSchedule(1000, 1000, TimeSpan.FromSeconds(3));
        Assert.Equal(3000, s.TotalRequests);
        Assert.Equal(0, s.DueNs(0));
        Assert.Equal(1_000_000, s.DueNs(1));
        Assert.Equal(1_500_000_000, s.DueNs(1500));
        Assert.Equal(2_999_000_000, s.DueNs(2999));
    }

    [Fact]
    public void ConstantRate_NonIntegerSpacing_StaysOnTheExactGrid()
    {
        var s = new OpenSchedule(3, 3, TimeSpan.FromSeconds(10)); // every 333.33 ms
        Assert.Equal(30, s.TotalRequests);
        Assert.Equal(333_333_333, s.DueNs(1));
        Assert.Equal(9_666_666_667, s.DueNs(29)); // no drift after many requests
    }

    [Theory]
    [InlineData(1000, 1000)]
    [InlineData(0, 2000)]
    [InlineData(2000, 100)]
    [InlineData(500, 5000)]
    public void CountDue_IsTheInverseOfDueNs(double from, double to)
    {
        var s = new OpenSchedule(from, to, TimeSpan.FromSeconds(2));
        for (long n = 0; n < s.TotalRequests; n += 7)
        {
            long due = s.DueNs(n);
            Assert.Equal(n + 1, s.CountDue(due));     // request n is due exactly at its time...
            if (due > 0) Assert.Equal(n, s.CountDue(due - 1)); // ...and not a nanosecond earlier
        }
        Assert.Equal(s.TotalRequests, s.CountDue(long.MaxValue / 4));
        Assert.Equal(0, s.CountDue(-1));
    }

    [Fact]
    public void Ramp_SendsTheAreaUnderTheRateLine_AndAccelerates()
    {
        var s = new OpenSchedule(0, 2000, TimeSpan.FromSeconds(2));
        Assert.Equal(2000, s.TotalRequests); // (0 + 2000) / 2 * 2 s
        // N(t) = 500 t² → a quarter of the requests in the first half.
        Assert.Equal(500, s.CountDue(1_000_000_000) - 1);
        long previousGap = long.MaxValue;
        for (long n = 1; n < s.TotalRequests; n += 100)
        {
            long gap = s.DueNs(n + 1) - s.DueNs(n);
            Assert.True(gap <= previousGap, $"gap grew at {n}");
            previousGap = gap;
        }
    }

    [Fact]
    public void Ramp_Down_EndsAtTheLowerRate()
    {
        var s = new OpenSchedule(2000, 0, TimeSpan.FromSeconds(1));
        Assert.Equal(1000, s.TotalRequests);
        Assert.True(s.DueNs(999) <= 1_000_000_000);
        Assert.True(s.DueNs(1) < s.DueNs(999) - s.DueNs(998)); // early gaps are short, late gaps long
    }

    [Fact]
    public void LatencyFromSchedule_CountsQueueingButNotGeneratorLateness()
    {
        // Due at 100, a connection was free at 100, the generator sent at 130, the answer came at 200:
        // 30 ns are the generator's (send lag), 70 ns the server's.
        Assert.Equal(70, LoadRunner.LatencyFromSchedule(dueNs: 100, claimedNs: 50, sendNs: 130, endNs: 200));
        // Due at 100 but every connection was busy until 400 (a slow server): the wait counts.
        Assert.Equal(300 + 50, LoadRunner.LatencyFromSchedule(dueNs: 100, claimedNs: 400, sendNs: 400, endNs: 450));
    }
}
