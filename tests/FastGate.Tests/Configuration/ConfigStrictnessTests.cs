using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Configuration;

/// <summary>Settings that used to load and then silently do something else: each is an error with its JSON path.</summary>
public class ConfigStrictnessTests
{
    private static string Base(string admin = "\"admin\": { \"address\": \"127.0.0.1:0\" }", string route = "") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          {{admin}},
          "clusters": [ { "id": "backend", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
          "routes": [ {{route}} { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
        }
        """;

    private static IReadOnlyList<ConfigError> Errors(string text)
    {
        var loaded = ConfigLoader.Load(text);
        Assert.False(loaded.IsValid, "expected errors");
        return loaded.Errors;
    }

    [Fact]
    public void Base_IsValid() => Assert.True(ConfigLoader.Load(Base()).IsValid, string.Join("; ", ConfigLoader.Load(Base()).Errors));

    [Theory]
    [InlineData("", 1024, 1024)]
    [InlineData(", \"maxConnectionsPerDestination\": 100", 100, 100)] // below the old fixed idle default of 256: still valid
    [InlineData(", \"maxConnectionsPerDestination\": 100, \"maxIdleConnectionsPerDestination\": 10", 100, 10)]
    public void IdleConnectionsPerDestination_DefaultToTheConnectionLimit(string extra, int max, int idle)
    {
        var loaded = ConfigLoader.Load(Base().Replace("\"destinations\": [ { \"address\": \"http://127.0.0.1:9\" } ]", "\"destinations\": [ { \"address\": \"http://127.0.0.1:9\" } ]" + extra));
        Assert.True(loaded.IsValid, string.Join("; ", loaded.Errors));
        Assert.Equal(max, loaded.Config!.Clusters[0].MaxConnectionsPerDestination);
        Assert.Equal(idle, loaded.Config.Clusters[0].MaxIdleConnectionsPerDestination);
    }

    [Fact]
    public void DuplicateKeys_InEveryObject_AreErrorsAtTheirJsonPath()
    {
        var text = """
            {
              "listeners": [ { "name": "public", "address": "127.0.0.1:0", "address": "0.0.0.0:80" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
              "routes": [ { "id": "all", "match": { "pathPrefix": "/", "pathPrefix": "/admin" }, "cluster": "backend" } ],
              "limits": { "maxBodyBytes": 10 },
              "limits": { "maxBodyBytes": 1000000000 }
            }
            """;
        var errors = Errors(text);
        Assert.Contains(errors, e => e.Path == "$.listeners[0].address" && e.Message.Contains("duplicate"));
        Assert.Contains(errors, e => e.Path == "$.routes[0].match.pathPrefix" && e.Message.Contains("duplicate"));
        Assert.Contains(errors, e => e.Path == "$.limits" && e.Message.Contains("duplicate"));
        Assert.Equal(3, errors.Count(e => e.Message.Contains("duplicate key")));
    }

    [Theory]
    [InlineData("\" \"")]
    [InlineData("\"\\t\\t\"")]
    [InlineData("\"short-token\"")]            // 11 characters
    [InlineData("\" padded-token-of-20-ch \"")] // whitespace around it never matches a presented token
    public void AdminToken_BlankShortOrPadded_IsAnError(string token)
    {
        var errors = Errors(Base($"\"admin\": {{ \"address\": \"127.0.0.1:0\", \"token\": {token} }}"));
        Assert.Contains(errors, e => e.Path == "$.admin.token");
    }

    [Fact]
    public void AdminTokenEnv_UnsetOrShort_IsAnError_LongTokenIsValid()
    {
        Assert.Contains(Errors(Base("\"admin\": { \"address\": \"127.0.0.1:0\", \"tokenEnv\": \"FASTGATE_TEST_UNSET_VARIABLE_7F3A\" }")),
            e => e.Path == "$.admin.tokenEnv" && e.Message.Contains("not set"));
        Environment.SetEnvironmentVariable("FASTGATE_TEST_SHORT_TOKEN_7F3A", "abc");
        Assert.Contains(Errors(Base("\"admin\": { \"address\": \"127.0.0.1:0\", \"tokenEnv\": \"FASTGATE_TEST_SHORT_TOKEN_7F3A\" }")),
            e => e.Path == "$.admin.tokenEnv" && e.Message.Contains("16"));
        var ok = ConfigLoader.Load(Base("\"admin\": { \"address\": \"127.0.0.1:0\", \"token\": \"0123456789abcdef\" }"));
        Assert.True(ok.IsValid, string.Join("; ", ok.Errors));
    }

    [Theory]
    [InlineData("get", "GET")]
    [InlineData("Post", "POST")]
    [InlineData("delete", "DELETE")]
    public void RouteMethod_NotUpperCase_IsAnErrorWithAHint(string method, string hint)
    {
        var errors = Errors(Base(route: $"{{ \"id\": \"m\", \"match\": {{ \"pathPrefix\": \"/m\", \"methods\": [\"GET\", \"{method}\"] }}, \"cluster\": \"backend\" }},"));
        var e = Assert.Single(errors);
        Assert.Equal("$.routes[0].match.methods[1]", e.Path);
        Assert.Contains($"'{hint}'", e.Message);
    }

    [Fact]
    public void RouteMethod_UnknownUpperOrLowerExtensionMethod_IsAccepted()
    {
        // extension methods are tokens too; only the known ones are checked for case
        var ok = ConfigLoader.Load(Base(route: "{ \"id\": \"m\", \"match\": { \"pathPrefix\": \"/m\", \"methods\": [\"PROPFIND\", \"PURGE\"] }, \"cluster\": \"backend\" },"));
        Assert.True(ok.IsValid, string.Join("; ", ok.Errors));
    }

    [Theory]
    [InlineData("api.example:8080")]
    [InlineData("*.example.com:443")]
    [InlineData("[::1]:8080")]
    [InlineData("127.0.0.1:80")]
    public void RouteHost_WithAPort_IsAnError(string host)
    {
        var errors = Errors(Base(route: $"{{ \"id\": \"h\", \"match\": {{ \"hosts\": [\"{host}\"] }}, \"cluster\": \"backend\" }},"));
        var e = Assert.Single(errors);
        Assert.Equal("$.routes[0].match.hosts[0]", e.Path);
        Assert.Contains("port", e.Message);
    }

    [Theory]
    [InlineData("api.example")]
    [InlineData("*.example.com")]
    [InlineData("[::1]")]
    [InlineData("127.0.0.1")]
    public void RouteHost_WithoutPort_IsValid(string host)
    {
        var ok = ConfigLoader.Load(Base(route: $"{{ \"id\": \"h\", \"match\": {{ \"hosts\": [\"{host}\"] }}, \"cluster\": \"backend\" }},"));
        Assert.True(ok.IsValid, string.Join("; ", ok.Errors));
    }
}
