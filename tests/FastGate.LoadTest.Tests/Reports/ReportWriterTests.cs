using FastGate.LoadTest.Reports;
using FastGate.LoadTest.Thresholds;
using Xunit;

namespace FastGate.LoadTest.Tests.Reports;

public class ReportWriterTests
{
    [Fact]
    public void Write_CreatesMarkdownCsvAndSelfContainedHtml_NamingTheBreach()
    {
        var r = Results.Make(Enumerable.Range(1, 100).Select(i => i * 100_000L));
        r.Thresholds = [Threshold.Parse("p99<1us").Evaluate(r), Threshold.Parse("errors<1%").Evaluate(r)];
        string dir = Path.Combine(Path.GetTempPath(), "fg-report-" + Guid.NewGuid().ToString("N"));
        try
        {
            var files = ReportWriter.Write(r, dir);
            Assert.Equal(4, files.Count);
            Assert.All(files, f => Assert.True(new FileInfo(f).Length > 0, f));

            string md = File.ReadAllText(Path.Combine(dir, "unit.md"));
            Assert.Contains("(FAILED)", md);
            Assert.Contains("| `p99<1us` | 9.9ms | **BREACHED** |", md);
            Assert.Contains("| `errors<1%` | 0% | pass |", md);
            Assert.Contains("| status 200 | 100 |", md);

            string html = File.ReadAllText(Path.Combine(dir, "unit.html"));
            Assert.Equal(2, CountOf(html, "<svg"));
            Assert.Contains("<polyline", html);
            Assert.Contains("BREACHED", html);
            Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("src=", html, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("href=", html, StringComparison.OrdinalIgnoreCase);

            var series = File.ReadAllLines(Path.Combine(dir, "unit-series.csv"));
            Assert.Equal("second,responses,errors,rps,p50_ms,p90_ms,p99_ms,max_ms,send_lag_p99_ms", series[0]);
            Assert.Equal("1,100,0,100,1,2,3,4,0.01", series[1]);
            var summary = File.ReadAllLines(Path.Combine(dir, "unit-summary.csv"));
            Assert.Contains(summary, l => l.StartsWith("latency p99,9.9", StringComparison.Ordinal) && l.EndsWith(",ms", StringComparison.Ordinal));
            Assert.Contains("threshold p99<1us,breached,9.9ms", summary);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Html_EscapesScenarioText()
    {
        var r = Results.Make([1000]);
        r.Thresholds = [new("<b>x</b>", true, "1")];
        Assert.DoesNotContain("<b>x</b>", ReportWriter.Html(r));
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }
}
