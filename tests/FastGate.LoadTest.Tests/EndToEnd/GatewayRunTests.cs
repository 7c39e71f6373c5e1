using FastGate.Configuration;
using FastGate.DemoUpstream;
using FastGate.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace FastGate.LoadTest.Tests.EndToEnd;

/// <summary>The harness against the real gateway in front of the real demo upstream: a short, small-rate run.</summary>
public sealed class GatewayRunTests : IAsyncLifetime, IDisposable
{
    private WebApplication _upstream = null!;
    private GatewayHost _gateway = null!;
    private string _target = "";
    private string _jwtTarget = "";
    private const string JwtSecret = "load-test-secret-load-test-secret-0123456789";
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fg-load-gw-" + Guid.NewGuid().ToString("N"));

    public async Task InitializeAsync()
    {
        _upstream = DemoUpstreamApp.Build("http://127.0.0.1:0");
        await _upstream.StartAsync();
        var upstream = _upstream.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var loaded = ConfigLoader.Load($$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "{{upstream}}" } ] } ],
              "jwtIssuers": [ { "id": "load", "issuer": "https://load.fastgate.local", "audiences": ["fastgate-load"], "secret": "{{JwtSecret}}" } ],
              "routes": [
                { "id": "jwt", "match": { "pathPrefix": "/jwt" }, "cluster": "b", "stripPrefix": true, "auth": ["jwt"] },
                { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "b" }
              ]
            }
            """);
        Assert.True(loaded.IsValid, string.Join("; ", loaded.Errors));
        var (host, _) = GatewayHost.FromConfig(loaded, logLevel: LogLevel.Warning);
        _gateway = host!;
        await _gateway.StartAsync();
        _target = $"http://{_gateway.ListenerEndPoints[0]}/hello";
        _jwtTarget = $"http://{_gateway.ListenerEndPoints[0]}/";
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _upstream.DisposeAsync();
    }

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

    [Fact]
    public async Task ProxyScenario_ThroughTheGateway_PassesAndWritesReports_ImpossibleThresholdFails()
    {
        var (code, output, err) = await Run("--target", _target, "--scenario", "proxy", "--rate", "200", "--duration", "2s",
            "--warmup", "0", "--connections", "4", "--report-dir", _dir, "--threshold", "p99<2s");
        Assert.True(code == 0, output + err);
        foreach (string f in new[] { "proxy.md", "proxy.html", "proxy-summary.csv", "proxy-series.csv" })
            Assert.True(File.Exists(Path.Combine(_dir, f)), f + " missing");
        var summary = File.ReadAllLines(Path.Combine(_dir, "proxy-summary.csv"));
        Assert.Contains(summary, l => l.StartsWith("status 200,400", StringComparison.Ordinal));

        (code, _, err) = await Run("--target", _target, "--scenario", "proxy", "--rate", "100", "--duration", "1s",
            "--warmup", "0", "--connections", "2", "--report-dir", _dir, "--threshold", "p99<1us");
        Assert.Equal(Cli.Breached, code);
        Assert.Contains("threshold breached: p99<1us", err);
    }

    [Fact]
    public async Task JwtScenario_MintsItsOwnTokenFromTheSecret_WithoutOneEveryRequestIsRefused()
    {
        var (code, output, err) = await Run("--target", _jwtTarget, "--scenario", "jwt", "--path", "/jwt/hello", "--jwt-secret", JwtSecret, "--rate", "100",
            "--duration", "1s", "--warmup", "0", "--connections", "2", "--report-dir", _dir);
        Assert.True(code == 0, output + err);
        Assert.Contains(File.ReadAllLines(Path.Combine(_dir, "jwt-summary.csv")), l => l.StartsWith("status 200,", StringComparison.Ordinal));

        // a token signed with another secret, and no token at all: 401s, so the scenario's errors threshold fails
        (code, _, _) = await Run("--target", _jwtTarget, "--scenario", "jwt", "--path", "/jwt/hello", "--jwt-secret", JwtSecret.ToUpperInvariant(), "--rate", "50",
            "--duration", "1s", "--warmup", "0", "--connections", "2", "--report-dir", _dir);
        Assert.Equal(Cli.Breached, code);
        Assert.Contains(File.ReadAllLines(Path.Combine(_dir, "jwt-summary.csv")), l => l.StartsWith("status 401,", StringComparison.Ordinal));
        (code, _, _) = await Run("--target", _jwtTarget, "--scenario", "jwt", "--path", "/jwt/hello", "--rate", "50",
            "--duration", "1s", "--warmup", "0", "--connections", "2", "--report-dir", _dir);
        Assert.Equal(Cli.Breached, code);
    }
}
