using System.Text.Json;

namespace FastGate.Tests.Configuration;

/// <summary>The JSON schema names every top-level section and route property the loader accepts.</summary>
public class SchemaTests
{
    [Fact]
    public void Schema_CoversEveryTopLevelSectionAndRouteProperty()
    {
        var root = ValidateCommandTests.RepoRoot();
        using var schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "config", "fastgate.schema.json")));
        var props = schema.RootElement.GetProperty("properties");
        var topLevel = props.EnumerateObject().Select(p => p.Name).ToHashSet();
        string[] sections = ["listeners", "admin", "clusters", "routes", "limits", "policies", "defaultAction", "ipLists",
            "rateLimits", "redis", "consumers", "apiKeys", "cors", "accessLog", "alerts", "anomaly"];
        foreach (var s in sections)
        {
            Assert.Contains(s, topLevel);
            // and the loader accepts it (no "unknown property" error for the name)
            var loaded = FastGate.Configuration.ConfigLoader.Load($"{{ \"{s}\": null }}");
            Assert.DoesNotContain(loaded.Errors, e => e.Path == "$." + s && e.Message.StartsWith("unknown property", StringComparison.Ordinal));
        }
        var routeProps = props.GetProperty("routes").GetProperty("items").GetProperty("properties").EnumerateObject().Select(p => p.Name);
        Assert.Equal(["auth", "cluster", "cors", "forwardApiKey", "id", "match", "preserveHost", "rateLimits", "stripPrefix"], routeProps.Order());
    }
}
