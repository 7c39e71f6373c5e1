using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Observability;

public class MetricsTests
{
    private static double Value(string scrape, string series)
    {
        var line = scrape.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        Assert.True(line is not null, $"series {series} is missing from the scrape");
        return double.Parse(line![(series.Length + 1)..], CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task KnownTraffic_GivesKnownCounterValues()
    {
        await using var upstream = new SwitchableUpstream();
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address, "", "metrics-route"));
        const string get = "GET /a HTTP/1.1\r\nHost: m\r\n\r\n";
        const string post = "POST /b HTTP/1.1\r\nHost: m\r\nContent-Length: 10\r\n\r\n0123456789";
        using (var client = await RawClient.ConnectAsync(gateway.EndPoint))
        {
            for (int i = 0; i < 3; i++)
            {
                await client.SendAsync(get);
                Assert.Equal(200, (await client.ReadResponseAsync()).Status);
            }
            upstream.Status = 500;
            await client.SendAsync(post);
            Assert.Equal(500, (await client.ReadResponseAsync()).Status);
        }
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(3, Value(scrape, "fastgate_requests_total{route=\"metrics-route\",code=\"200\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_requests_total{route=\"metrics-route\",code=\"500\"}"));
        Assert.Equal(3 * get.Length + post.Length, Value(scrape, "fastgate_request_bytes_total{route=\"metrics-route\"}"));
        Assert.True(Value(scrape, "fastgate_response_bytes_total{route=\"metrics-route\"}") >= 4 * "body".Length);
        Assert.Equal(4, Value(scrape, "fastgate_upstream_responses_total{cluster=\"metrics-route-cluster\"}"));
    }

    [Fact]
    public async Task UpstreamErrors_AreCountedByClusterAndKind()
    {
        using var dead = Ports.Refusing();
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(dead.Address, "", "dead-route"));
        using var http = gateway.CreateClient();
        for (int i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.BadGateway, (await http.GetAsync("/x")).StatusCode);
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(2, Value(scrape, "fastgate_upstream_errors_total{cluster=\"dead-route-cluster\",kind=\"connect\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_rejections_total{reason=\"upstream_connect_failed\"}")); // this gateway's own registry: exact
    }

    [Fact]
    public async Task TwoGatewaysInOneProcess_EachCountsOnlyItsOwnTraffic()
    {
        // same route and cluster names on both: with one shared registry each scrape would show the sum
        await using var upstream = new SwitchableUpstream();
        await using var a = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address, "", "twin-route"));
        await using var b = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address, "", "twin-route"));
        using (var client = await RawClient.ConnectAsync(a.EndPoint))
        {
            for (int i = 0; i < 2; i++)
            {
                await client.SendAsync("GET /a HTTP/1.1\r\nHost: m\r\n\r\n");
                Assert.Equal(200, (await client.ReadResponseAsync()).Status);
            }
            await client.SendAsync("GET / HTTP/1.1\r\n\r\n"); // no Host: refused by the gateway itself
            Assert.Equal(400, (await client.ReadResponseAsync()).Status);
        }
        using (var client = await RawClient.ConnectAsync(b.EndPoint))
        {
            await client.SendAsync("GET /b HTTP/1.1\r\nHost: m\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        }
        var scrapeA = await a.ScrapeMetricsAsync();
        var scrapeB = await b.ScrapeMetricsAsync();
        Assert.Equal(2, Value(scrapeA, "fastgate_requests_total{route=\"twin-route\",code=\"200\"}"));
        Assert.Equal(1, Value(scrapeB, "fastgate_requests_total{route=\"twin-route\",code=\"200\"}"));
        Assert.Equal(2, Value(scrapeA, "fastgate_upstream_responses_total{cluster=\"twin-route-cluster\"}"));
        Assert.Equal(1, Value(scrapeB, "fastgate_upstream_responses_total{cluster=\"twin-route-cluster\"}"));
        Assert.Equal(1, Value(scrapeA, "fastgate_rejections_total{reason=\"missing_host\"}"));
        Assert.Equal(0, Value(scrapeB, "fastgate_rejections_total{reason=\"missing_host\"}"));
        Assert.Equal(1, a.Metrics.Rejections.WithLabels("missing_host").Value); // the same numbers, read in process
        // the process-wide collectors follow each gateway's own metrics (perf/compare.sh reads the allocation counter)
        foreach (var scrape in new[] { scrapeA, scrapeB })
        {
            Assert.True(Value(scrape, "dotnet_gc_allocated_bytes_total") > 0);
            Assert.Contains("\nprocess_cpu_seconds_total ", scrape);
            Assert.Contains("\n# TYPE system_runtime_dotnet_gc_collections gauge\n", scrape);
            Assert.Single(scrape.Split('\n'), l => l == "# TYPE fastgate_requests_total counter");
        }
    }
}

/// <summary>The exposition and the shipped Prometheus rules, checked by the real promtool.</summary>
public class PromtoolTests
{
    private static string Promtool()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            var candidate = Path.Combine(dir, "promtool");
            if (File.Exists(candidate)) return candidate;
        }
        throw new Xunit.Sdk.XunitException(
            "promtool is not installed: run `bash tests/install-deps.sh` (it installs Debian's prometheus package, which contains promtool) or `make test`.");
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FastGate.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("FastGate.sln not found above the test binaries");
    }

    private static async Task<(int Exit, string Output)> RunAsync(string workingDirectory, string stdin, params string[] args)
    {
        var psi = new ProcessStartInfo(Promtool())
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.StandardInput.WriteAsync(stdin);
        p.StandardInput.Close();
        await p.WaitForExitAsync();
        return (p.ExitCode, await stdout + await stderr);
    }

    [Fact]
    public async Task ScrapeOfARunningGateway_PassesPromtoolCheckMetrics()
    {
        await using var upstream = new SwitchableUpstream();
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            "\"accessLog\": { \"path\": \"" + Path.Combine(Path.GetTempPath(), "fastgate-tests", Guid.NewGuid().ToString("n"), "a.log") + "\" }, \"anomaly\": { }", "promtool-route"));
        using (var http = gateway.CreateClient())
        {
            await http.GetAsync("/ok");
            upstream.Status = 503;
            await http.GetAsync("/fail");
        }
        using (var raw = await RawClient.ConnectAsync(gateway.EndPoint))
        {
            await raw.SendAsync("GET / HTTP/1.1\r\n\r\n");
            Assert.Equal(400, (await raw.ReadResponseAsync()).Status);
        }
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Contains("fastgate_request_bytes_total", scrape);
        Assert.Contains("fastgate_access_log_dropped_total", scrape);
        var (exit, output) = await RunAsync(RepoRoot(), scrape, "check", "metrics");
        Assert.True(exit == 0 && output.Trim().Length == 0, $"promtool check metrics failed (exit {exit}):\n{output}");
    }

    [Fact]
    public async Task ShippedAlertingRules_PassPromtoolCheckAndUnitTests()
    {
        var dir = Path.Combine(RepoRoot(), "config", "prometheus");
        var (checkExit, checkOutput) = await RunAsync(dir, "", "check", "rules", "alerts.yml");
        Assert.True(checkExit == 0, checkOutput);
        var (testExit, testOutput) = await RunAsync(dir, "", "test", "rules", "alerts_test.yml");
        Assert.True(testExit == 0, testOutput);
        Assert.Contains("SUCCESS", testOutput);
    }

    [Fact]
    public async Task GrafanaDashboardQueries_AreValidPromQl_OverExportedMetrics()
    {
        var root = RepoRoot();
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "config", "grafana", "fastgate-dashboard.json")));
        var rules = new StringBuilder("groups:\n  - name: dashboard\n    rules:\n");
        int n = 0;
        foreach (var panel in doc.RootElement.GetProperty("panels").EnumerateArray())
            foreach (var target in panel.GetProperty("targets").EnumerateArray())
            {
                var expr = target.GetProperty("expr").GetString()!
                    .Replace("$__rate_interval", "5m").Replace("$__range", "1h").Replace("$route", ".*");
                Assert.True(System.Text.RegularExpressions.Regex.IsMatch(expr, "fastgate_|process_|dotnet_"), expr);
                rules.Append("      - record: dashboard:q").Append(n++).Append("\n        expr: '").Append(expr.Replace("'", "''")).Append("'\n");
            }
        Assert.True(n >= 15);
        var file = Path.Combine(Path.GetTempPath(), $"fastgate-dashboard-{Guid.NewGuid():n}.yml");
        File.WriteAllText(file, rules.ToString());
        var (exit, output) = await RunAsync(root, "", "check", "rules", file);
        Assert.True(exit == 0, output);
    }
}
