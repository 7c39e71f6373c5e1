using Xunit;

namespace FastGate.LoadTest.Tests.EndToEnd;

public class CliOptionTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await Cli.RunAsync(args, stdout, stderr, CancellationToken.None);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Theory]
    [InlineData("http://10.0.0.1:8080/")]
    [InlineData("http://192.168.1.1/")]
    [InlineData("http://example.com/")]
    [InlineData("http://0.0.0.0:8080/")]
    [InlineData("http://[::ffff:10.0.0.1]:80/")]
    public async Task NonLoopbackTarget_IsRefused(string target)
    {
        var (code, _, err) = await Run("--target", target, "--duration", "1s");
        Assert.Equal(Cli.Usage, code);
        Assert.Contains("refusing --target", err);
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080/", "127.0.0.1", "127.0.0.1:8080")]
    [InlineData("http://127.1.2.3:81/", "127.1.2.3", "127.1.2.3:81")]
    [InlineData("http://[::1]:9000/", "::1", "[::1]:9000")]
    [InlineData("http://localhost:8080/", "127.0.0.1", "localhost:8080")]
    public void LoopbackTarget_Resolves(string target, string address, string host)
    {
        Assert.True(Cli.TryResolveLoopback(target, out var ep, out string h, out _));
        Assert.Equal(address, ep.Address.ToString());
        Assert.Equal(host, h);
    }

    [Fact]
    public async Task List_NamesEveryScenario()
    {
        var (code, output, _) = await Run("--list");
        Assert.Equal(0, code);
        foreach (string name in new[] { "proxy", "auth-apikey", "rate-limited", "jwt", "mixed", "hostile", "reload" })
            Assert.Contains(name, output);
    }

    [Theory]
    [InlineData("--rate", "-5")]
    [InlineData("--rate", "2000000")]
    [InlineData("--duration", "2h")]
    [InlineData("--threshold", "p99 < soon")]
    [InlineData("--bogus", "1")]
    [InlineData("--connections", "0")]
    public async Task BadOptions_AreUsageErrors(string option, string value)
    {
        var (code, _, err) = await Run("--target", "http://127.0.0.1:1/", option, value);
        Assert.Equal(Cli.Usage, code);
        Assert.StartsWith("error:", err);
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080/hello", "/hello")]
    [InlineData("http://127.0.0.1:8080/hello?a=1&b=%2F", "/hello?a=1&b=%2F")]
    [InlineData("http://127.0.0.1:8080?q=1", "/?q=1")]
    [InlineData("http://127.0.0.1:8080/", "/")]
    [InlineData("http://127.0.0.1:8080", "/")]
    [InlineData("http://[::1]:8080/api/v1#frag", "/api/v1")]
    public void TargetPath_IsTheRequestPath_WithoutPathOption(string target, string path)
    {
        Assert.Equal(path, CliOptions.Parse(["--target", target]).Options.Path);
    }

    [Fact]
    public void PathOption_OverridesARootTarget()
    {
        Assert.Equal("/hello", CliOptions.Parse(["--target", "http://127.0.0.1:1/", "--path", "/hello"]).Options.Path);
        Assert.Equal("/hello", CliOptions.Parse(["--path", "/hello", "--target", "http://127.0.0.1:1"]).Options.Path);
    }

    [Fact]
    public async Task TargetPathAndADifferentPathOption_AreAUsageError()
    {
        var (code, _, err) = await Run("--target", "http://127.0.0.1:1/a", "--path", "/b");
        Assert.Equal(Cli.Usage, code);
        Assert.Contains("--path", err);
    }

    [Fact]
    public async Task MissingTarget_IsAUsageError()
    {
        var (code, _, err) = await Run("--scenario", "proxy");
        Assert.Equal(Cli.Usage, code);
        Assert.Contains("--target is required", err);
    }

    [Fact]
    public void Mixed_BuildsWeightedPerUserRequests()
    {
        var o = CliOptions.Parse(["--api-keys", "k0,k1", "--path", "/api"]);
        var s = Scenarios.BuiltInScenarios.Mixed(o.Profile, o.Options);
        var user1 = s.Requests(new Scenarios.VirtualUserContext(1, o.Options));
        Assert.Equal(10, user1.Sum(r => r.Weight));
        Assert.Contains(user1, r => r.Method == "POST" && r.Body is { Length: > 0 } && r.Path == "/api/items");
        Assert.Contains(user1, r => r.Headers.Any(h => h.Key == "X-API-Key" && h.Value == "k1"));
    }
}
