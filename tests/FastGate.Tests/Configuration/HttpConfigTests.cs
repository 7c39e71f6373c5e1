using FastGate.Configuration;
using FastGate.Http;

namespace FastGate.Tests.Configuration;

/// <summary>The http section and the rule that route paths are written as requests are matched (canonical).</summary>
public class HttpConfigTests
{
    private static ConfigLoadResult Load(string routeMatch, string http = "") => ConfigLoader.Load($$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
          {{http}}
          "routes": [ { "id": "r", "match": {{routeMatch}}, "cluster": "b" } ]
        }
        """);

    [Theory]
    [InlineData("{ \"pathPrefix\": \"/api//v1\" }", "$.routes[0].match.pathPrefix", "requests are matched as '/api/v1'")]
    [InlineData("{ \"path\": \"/%61pi\" }", "$.routes[0].match.path", "requests are matched as '/api'")]
    [InlineData("{ \"path\": \"/a%2fb\" }", "$.routes[0].match.path", "encoded slash")]
    [InlineData("{ \"pathPrefix\": \"/a/%2e%2e/b\" }", "$.routes[0].match.pathPrefix", "cannot be matched")]
    [InlineData("{ \"pathPrefix\": \"/a/../b\" }", "$.routes[0].match.pathPrefix", "'.' or '..' segment")]
    public void RoutePath_NotCanonical_IsAnErrorAtItsPath(string match, string path, string message)
    {
        var result = Load(match);
        var error = Assert.Single(result.Errors);
        Assert.Equal(path, error.Path);
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void EncodedSlashInRoute_IsAcceptedWhenKept_AndCanonicalUpperCase()
    {
        Assert.Empty(Load("{ \"path\": \"/a%2Fb\" }", "\"http\": { \"escapedSlashes\": \"keep\" },").Errors);
        var error = Assert.Single(Load("{ \"path\": \"/a%2fb\" }", "\"http\": { \"escapedSlashes\": \"keep\" },").Errors);
        Assert.Contains("'/a%2Fb'", error.Message);
    }

    [Fact]
    public void HttpSection_BindsAndReportsBadValues()
    {
        var ok = Load("{ \"pathPrefix\": \"/\" }", "\"http\": { \"escapedSlashes\": \"decode\", \"underscoreHeaders\": \"dropAll\" },");
        Assert.Empty(ok.Errors);
        Assert.Equal(EscapedSlashAction.Decode, ok.Config!.Http.EscapedSlashes);
        Assert.Equal(UnderscoreHeaderAction.DropAll, ok.Config.Http.UnderscoreHeaders);
        var bad = Load("{ \"pathPrefix\": \"/\" }", "\"http\": { \"escapedSlashes\": \"allow\", \"underscoreHeaders\": 1, \"mergeSlashes\": true },");
        Assert.Equal(["$.http.escapedSlashes", "$.http.mergeSlashes", "$.http.underscoreHeaders"], bad.Errors.Select(e => e.Path).Order().ToArray());
    }
}
