using Xunit;

namespace FastGate.LoadTest.Tests.EndToEnd;

/// <summary>The harness end to end: real sockets against a real Kestrel server on 127.0.0.1.</summary>
public sealed class CliRunTests : IAsyncLifetime, IDisposable
{
    private TestServer _server = null!;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fg-load-" + Guid.NewGuid().ToString("N"));

    public async Task InitializeAsync() => _server = await TestServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await Cli.RunAsync(args, stdout, stderr, CancellationToken.None);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static Dictionary<string, string> Summary(string csvPath) => File.ReadAllLines(csvPath).Skip(1)
        .Select(l => l.Split(',')).Where(p => p.Length >= 2).GroupBy(p => p[0]).ToDictionary(g => g.Key, g => g.First()[1]);

    [Fact]
    public async Task Proxy_200Rps_WritesReportsAndPasses()
    {
        var (code, output, err) = await Run("--target", _server.Url, "--scenario", "proxy", "--rate", "200", "--duration", "2s",
            "--warmup", "0", "--connections", "4", "--report-dir", _dir, "--threshold", "p99<2s");

        Assert.True(code == 0, output + err);
        foreach (string f in new[] { "proxy.md", "proxy.html", "proxy-summary.csv", "proxy-series.csv" })
            Assert.True(File.Exists(Path.Combine(_dir, f)), f + " missing");
        var s = Summary(Path.Combine(_dir, "proxy-summary.csv"));
        // The open model sends exactly rate × duration requests, however the timing went.
        Assert.Equal("400", s["requests"]);
        Assert.Equal("400", s["status 200"]);
        Assert.Equal("0", s["errors"]);
        Assert.Equal(400, _server.Requests);
        Assert.True(File.ReadAllLines(Path.Combine(_dir, "proxy-series.csv")).Length >= 2, "no per-second rows");
        Assert.Contains("scenario proxy: PASSED", output);
    }

    [Fact]
    public async Task TargetPathAndQuery_AreWhatIsRequested()
    {
        var (code, output, err) = await Run("--target", _server.Url + "hello?x=1&y=2", "--rate", "50", "--duration", "1s",
            "--warmup", "0", "--connections", "2", "--report-dir", _dir, "--quiet");
        Assert.True(code == 0, output + err);
        Assert.Equal(["/hello?x=1&y=2"], _server.Targets);
        Assert.Equal(50, _server.Requests);
    }

    [Fact]
    public async Task Baseline_FromAnEarlierRun_DrivesRelativeThresholds()
    {
        string first = Path.Combine(_dir, "first");
        var (code, output, err) = await Run("--target", _server.Url, "--rate", "100", "--duration", "1s", "--warmup", "0",
            "--connections", "2", "--report-dir", first, "--quiet");
        Assert.True(code == 0, output + err);

        (code, output, err) = await Run("--target", _server.Url, "--rate", "100", "--duration", "1s", "--warmup", "0", "--connections", "2",
            "--report-dir", _dir, "--quiet", "--baseline", Path.Combine(first, "proxy-summary.csv"),
            "--threshold", "rps>=0.5x", "--threshold", "rps>=10x");
        Assert.Equal(Cli.Breached, code);
        Assert.Contains("threshold breached: rps>=10x", err);
        Assert.DoesNotContain("rps>=0.5x (", err);
    }

    [Fact]
    public async Task ImpossibleThreshold_FailsTheRun_AndIsNamedInTheReport()
    {
        var (code, output, err) = await Run("--target", _server.Url, "--rate", "200", "--duration", "1s", "--warmup", "0",
            "--connections", "2", "--report-dir", _dir, "--quiet", "--threshold", "p99<1us");

        Assert.Equal(Cli.Breached, code);
        Assert.Contains("threshold breached: p99<1us", err);
        Assert.Contains("| `p99<1us` |", File.ReadAllText(Path.Combine(_dir, "proxy.md")));
        Assert.Contains("**BREACHED**", File.ReadAllText(Path.Combine(_dir, "proxy.md")));
        Assert.Contains("FAILED", output);
    }

    [Fact]
    public async Task UnexpectedStatus_CountsAsErrors()
    {
        var (code, _, err) = await Run("--target", _server.Url, "--path", "/teapot", "--rate", "100", "--duration", "1s", "--warmup", "0",
            "--connections", "2", "--report-dir", _dir, "--quiet");

        Assert.Equal(Cli.Breached, code); // proxy's own rule: errors<0.1%
        Assert.Contains("errors<0.1%", err);
        var s = Summary(Path.Combine(_dir, "proxy-summary.csv"));
        Assert.Equal("100", s["status 418"]);
        Assert.Equal("100", s["errors: unexpected status"]);
    }

    [Theory]
    [InlineData("/limited", Cli.Ok, "0")]
    [InlineData("/limited-bare", Cli.Breached, "100")] // 429s without Retry-After/RateLimit headers
    public async Task RateLimited_HalfAre429_WithTheirHeaders(string path, int expectedCode, string missingHeaders)
    {
        var (code, output, err) = await Run("--target", _server.Url, "--scenario", "rate-limited", "--path", path, "--rate", "200",
            "--duration", "1s", "--warmup", "0", "--connections", "2", "--report-dir", _dir, "--quiet");

        Assert.True(code == expectedCode, output + err);
        var s = Summary(Path.Combine(_dir, "rate-limited-summary.csv"));
        Assert.Equal("100", s["status 429"]);
        Assert.Equal("100", s["status 200"]);
        Assert.Equal(missingHeaders, s["errors: missing rate-limit headers"]);
        Assert.Contains("threshold status429 between 0.4 and 0.6,pass,50%", File.ReadAllText(Path.Combine(_dir, "rate-limited-summary.csv")));
    }

    [Fact]
    public async Task ClosedModel_ChunkedResponses_AreReadWhole()
    {
        var (code, output, err) = await Run("--target", _server.Url, "--path", "/chunked", "--users", "2", "--duration", "1s",
            "--warmup", "200ms", "--report-dir", _dir, "--quiet");

        Assert.True(code == 0, output + err);
        var s = Summary(Path.Combine(_dir, "proxy-summary.csv"));
        Assert.True(long.Parse(s["status 200"], System.Globalization.CultureInfo.InvariantCulture) > 10, s["status 200"]);
        Assert.Equal("0", s["errors"]);
    }

    [Fact]
    public async Task HangingServer_IsReportedAsTimeouts()
    {
        var (code, _, _) = await Run("--target", _server.Url, "--path", "/hang", "--rate", "10", "--duration", "1s", "--warmup", "0",
            "--connections", "2", "--timeout", "300ms", "--report-dir", _dir, "--quiet", "--no-default-thresholds", "--threshold", "errors.timeout==0");

        Assert.Equal(Cli.Breached, code);
        var s = Summary(Path.Combine(_dir, "proxy-summary.csv"));
        Assert.Equal("10", s["requests"]);
        Assert.Equal("10", s["errors: timeout"]);
    }

    [Fact]
    public async Task Hostile_SideTrafficRuns_GoodTrafficIsMeasuredAlone()
    {
        var (code, output, err) = await Run("--target", _server.Url, "--scenario", "hostile", "--rate", "100", "--duration", "2s",
            "--warmup", "0", "--connections", "2", "--hostile-rate", "20", "--slowloris", "2", "--report-dir", _dir, "--quiet");

        Assert.True(code == 0, output + err);
        var s = Summary(Path.Combine(_dir, "hostile-summary.csv"));
        Assert.Equal("200", s["requests"]);
        Assert.True(s.ContainsKey("side: hostile.malformed.sent"), string.Join(";", s.Keys));
        Assert.True(s.ContainsKey("side: hostile.slowloris.opened"), string.Join(";", s.Keys));
        Assert.True(_server.UnknownKeys > 0);
    }

    [Fact]
    public async Task Reload_RewritesThePolicyFile_AndRestoresIt()
    {
        Directory.CreateDirectory(_dir);
        string policy = Path.Combine(_dir, "policy.json");
        File.WriteAllText(policy, "{\"routes\":[]}\n");
        var (code, output, err) = await Run("--target", _server.Url, "--scenario", "reload", "--policy-file", policy, "--rate", "50",
            "--duration", "2500ms", "--warmup", "0", "--connections", "2", "--report-dir", _dir, "--quiet");

        Assert.True(code == 0, output + err);
        var s = Summary(Path.Combine(_dir, "reload-summary.csv"));
        Assert.True(int.Parse(s["side: reload.rewrites"], System.Globalization.CultureInfo.InvariantCulture) >= 1);
        Assert.Equal("{\"routes\":[]}\n", File.ReadAllText(policy));
    }
}
