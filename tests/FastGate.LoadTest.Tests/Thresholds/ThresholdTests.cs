using FastGate.LoadTest.Metrics;
using FastGate.LoadTest.Thresholds;
using Xunit;

namespace FastGate.LoadTest.Tests.Thresholds;

public class ThresholdTests
{
    // 1000 responses: 1 ms .. 1000 ms, so pN is about N * 10 ms.
    private static readonly RunResult Spread = Results.Make(Enumerable.Range(1, 1000).Select(i => i * 1_000_000L), seconds: 2);

    [Theory]
    [InlineData("p99<995ms", true)]
    [InlineData("p99<985ms", false)]
    [InlineData("p50 <= 501 ms", true)]
    [InlineData("p50<0.49s", false)]
    [InlineData("p99.9 < 1000ms", true)]
    [InlineData("max>=999ms", true)]
    [InlineData("max<999000us", false)]
    [InlineData("mean between 499ms and 502ms", true)]
    [InlineData("p99<1us", false)]
    [InlineData("p90<=905", true)]   // a bare number is milliseconds
    [InlineData("rps>=500", true)]
    [InlineData("rps>500", false)]
    [InlineData("rps == 500", true)]
    [InlineData("errors<0.1%", true)]
    [InlineData("errors==0", true)]
    [InlineData("status200 >= 99%", true)]
    [InlineData("status 2xx share between 0.99 and 1", true)]
    [InlineData("status429>0", false)]
    [InlineData("lag.p99<2us", true)]
    [InlineData("lag.max<500ns", false)]
    public void Evaluate_Spread(string rule, bool passes)
    {
        var outcome = Threshold.Parse(rule).Evaluate(Spread);
        Assert.True(outcome.Passed == passes, $"{rule}: actual {outcome.Actual}");
    }

    [Fact]
    public void StatusShare_Between_ChecksBothBounds()
    {
        var r = Results.Make(Enumerable.Repeat(1_000_000L, 50), status: 200, more: s =>
        {
            for (int i = 0; i < 50; i++) s.RecordResponse(429, 1_000_000, 1000, expected: true);
        });
        Assert.True(Threshold.Parse("status429 between 0.4 and 0.6").Evaluate(r).Passed);
        Assert.True(Threshold.Parse("status 429 share between 40% and 60%").Evaluate(r).Passed);
        Assert.False(Threshold.Parse("status429 between 0.6 and 0.8").Evaluate(r).Passed);
        Assert.False(Threshold.Parse("status429 between 0.1 and 0.4").Evaluate(r).Passed);
        Assert.Equal("50%", Threshold.Parse("status429 between 0.1 and 0.4").Evaluate(r).Actual);
    }

    [Fact]
    public void ErrorShare_CountsEveryKind()
    {
        var r = Results.Make(Enumerable.Repeat(1_000_000L, 996), more: s =>
        {
            s.RecordError(ErrorKind.Timeout, -1);
            s.RecordError(ErrorKind.Connect, -1);
            s.RecordError(ErrorKind.Reset, 5);
            s.RecordResponse(500, 1_000_000, 1, expected: false);
        });
        Assert.Equal(1000, r.Counts.Requests);
        Assert.True(Threshold.Parse("errors<=0.4%").Evaluate(r).Passed);
        Assert.False(Threshold.Parse("errors<0.4%").Evaluate(r).Passed);
        Assert.False(Threshold.Parse("errors==0").Evaluate(r).Passed);
        Assert.True(Threshold.Parse("errors.timeout==0.1%").Evaluate(r).Passed);
        Assert.True(Threshold.Parse("errors.unexpected<=0.001").Evaluate(r).Passed);
    }

    [Fact]
    public void NoData_Fails()
    {
        var empty = Results.Make([]);
        Assert.False(Threshold.Parse("p99<5ms").Evaluate(empty).Passed);
        Assert.Equal("no data", Threshold.Parse("errors<1%").Evaluate(empty).Actual);
    }

    [Theory]
    [InlineData("p99<=1.2x", 900e6, true)]    // 990 ms ≤ 1.2 × 900 ms
    [InlineData("p99<=1.2x", 800e6, false)]   // 990 ms > 960 ms
    [InlineData("rps>=0.8x", 600, true)]      // 500 ≥ 480
    [InlineData("rps>=0.8x", 700, false)]     // 500 < 560
    [InlineData("p50 between 0.9x and 1.1x", 500e6, true)]
    public void Relative_ComparesWithTheBaseline(string rule, double baseline, bool passes)
    {
        var b = new Baseline("test", new Dictionary<string, double> { ["latency p99"] = baseline, ["latency p50"] = baseline, ["throughput"] = baseline });
        var outcome = Threshold.Parse(rule).Evaluate(Spread, b);
        Assert.True(outcome.Passed == passes, $"{rule}: {outcome.Actual}");
        Assert.Contains("vs baseline", outcome.Actual);
    }

    [Fact]
    public void Relative_WithoutBaseline_Fails()
    {
        var outcome = Threshold.Parse("p99<=1.2x").Evaluate(Spread);
        Assert.False(outcome.Passed);
        Assert.Contains("no baseline", outcome.Actual);
    }

    [Fact]
    public void Baseline_LoadsASummaryCsv()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "metric,value,unit\nthroughput,1234.5,rps\nlatency p99,2.5,ms\nerror share,0.5,%\nstatus 200,10,\n");
            var b = Baseline.Load(path);
            Assert.Equal(1234.5, b.Get("throughput"));
            Assert.Equal(2_500_000, b.Get("latency p99"));
            Assert.Equal(0.005, b.Get("error share"));
            Assert.Null(b.Get("latency p90"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("status429<1.2x")]
    [InlineData("p99 between 1ms and 1.2x")]
    [InlineData("p99")]
    [InlineData("p99 < 5 parsecs")]
    [InlineData("latency<5ms")]
    [InlineData("rps>=40k")]
    [InlineData("errors<5")]           // a share above 1 needs '%'
    [InlineData("status<0.5")]
    [InlineData("status999<0.5")]
    [InlineData("status429 between 0.6 and 0.4")]
    [InlineData("errors.bogus<1%")]
    [InlineData("p0<1ms")]
    public void Parse_Rejects(string rule)
    {
        Assert.False(Threshold.TryParse(rule, out _, out string? error));
        Assert.Contains(rule.Trim(), error);
    }
}
