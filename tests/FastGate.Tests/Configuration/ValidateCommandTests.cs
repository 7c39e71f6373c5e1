using FastGate.Configuration;
using FastGate.Server;

namespace FastGate.Tests.Configuration;

public class ValidateCommandTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = await Cli.RunAsync(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static string WriteTemp(string text)
    {
        var path = Path.Combine(Path.GetTempPath(), $"fastgate-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public async Task Validate_ShippedDemoConfig_IsValid()
    {
        var path = Path.Combine(RepoRoot(), "config", "fastgate.json");
        var (code, stdout, _) = await Run("validate", "--config", path);
        Assert.Equal(0, code);
        Assert.Contains("valid", stdout);
    }

    [Fact]
    public async Task Validate_BrokenFile_PrintsEveryErrorWithItsJsonPathAndExits1()
    {
        var path = WriteTemp("""
            {
              // comments and trailing commas are fine
              "listeners": [ { "name": "public", "address": "not-an-address" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "ftp://x" } ] },
                            { "id": "backend", "destinations": [] } ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "api" }, "cluster": "backnd" },
                          { "id": "r", "match": { "path": "/x" }, "cluster": "backend", "timeot": "1s" } ],
              "limits": { "maxHeaderCount": 0, "headerTimeout": "soon" },
            }
            """);
        var (code, _, stderr) = await Run("validate", "--config", path);
        Assert.Equal(1, code);
        string[] expected =
        [
            "$.listeners[0].address: 'not-an-address' is not an address",
            "$.clusters[0].destinations[0].address: 'ftp://x' is not an http:// or https:// address",
            "$.clusters[1].id: duplicate cluster id 'backend'",
            "$.clusters[1].destinations: a cluster needs at least one destination",
            "$.routes[0].match.pathPrefix: must start with '/'",
            "$.routes[0].cluster: unknown cluster 'backnd'; did you mean 'backend'?",
            "$.routes[1].id: duplicate route id 'r'",
            "$.routes[1].timeot: unknown property 'timeot'",
            "$.limits.maxHeaderCount: must be greater than 0",
            "$.limits.headerTimeout: expected a duration",
        ];
        foreach (var e in expected) Assert.Contains(e, stderr);
    }

    [Theory]
    [InlineData("{ \"listeners\": [ ")]
    [InlineData("[]")]
    public async Task Validate_NotAnObjectOrInvalidJson_IsOneClearError(string text)
    {
        var (code, _, stderr) = await Run("validate", "--config", WriteTemp(text));
        Assert.Equal(1, code);
        Assert.Contains("$:", stderr);
    }

    [Fact]
    public async Task Validate_MissingFile_Exits1()
    {
        var (code, _, stderr) = await Run("validate", "--config", "/nonexistent/fastgate.json");
        Assert.Equal(1, code);
        Assert.Contains("cannot read", stderr);
    }

    [Theory]
    [InlineData]
    [InlineData("frobnicate")]
    [InlineData("run")]
    [InlineData("validate", "--config")]
    [InlineData("run", "--config", "x.json", "--bogus")]
    public async Task UnknownOrIncompleteArguments_PrintUsageAndExit2(params string[] args)
    {
        var (code, _, stderr) = await Run(args);
        Assert.Equal(2, code);
        Assert.Contains("usage: fastgate", stderr);
    }

    [Fact]
    public async Task Version_PrintsTheVersion()
    {
        var (code, stdout, _) = await Run("version");
        Assert.Equal(0, code);
        Assert.Matches(@"^fastgate \d+\.\d+\.\d+", stdout);
    }

    [Fact]
    public void Durations_ParseWithUnits()
    {
        Assert.True(ConfigReader.TryParseDuration("500ms", out var a));
        Assert.Equal(TimeSpan.FromMilliseconds(500), a);
        Assert.True(ConfigReader.TryParseDuration("2m", out var b));
        Assert.Equal(TimeSpan.FromMinutes(2), b);
        Assert.False(ConfigReader.TryParseDuration("10", out _));
    }

    internal static string RepoRoot()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "FastGate.sln"))) dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("repository root not found");
    }
}
