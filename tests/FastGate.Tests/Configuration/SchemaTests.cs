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
            "rateLimits", "redis", "consumers", "apiKeys", "cors", "accessLog", "alerts", "anomaly", "trustedProxies", "jwtIssuers", "jwt", "devices", "mtls", "waf"];
        foreach (var s in sections)
        {
            Assert.Contains(s, topLevel);
            // and the loader accepts it (no "unknown property" error for the name)
            var loaded = FastGate.Configuration.ConfigLoader.Load($"{{ \"{s}\": null }}");
            Assert.DoesNotContain(loaded.Errors, e => e.Path == "$." + s && e.Message.StartsWith("unknown property", StringComparison.Ordinal));
        }
        var routeProps = props.GetProperty("routes").GetProperty("items").GetProperty("properties").EnumerateObject().Select(p => p.Name);
        Assert.Equal(["ai", "auth", "claims", "cluster", "cors", "forwardApiKey", "hsts", "id", "match", "preserveHost", "rateLimits", "requestTimeout", "scopes", "stripPrefix", "upstreamCredential", "waf"], routeProps.Order());
    }

    [Fact]
    public void Schema_ListenerTlsAndDeviceProperties_MatchTheLoader()
    {
        var root = ValidateCommandTests.RepoRoot();
        using var schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "config", "fastgate.schema.json")));
        var props = schema.RootElement.GetProperty("properties");
        string[] tlsProps = ["certificate", "clientCa", "clientCertificate", "key", "password", "passwordEnv", "pfx", "sni"];
        var listenerTls = props.GetProperty("listeners").GetProperty("items").GetProperty("properties").GetProperty("tls").GetProperty("properties");
        Assert.Equal(tlsProps, listenerTls.EnumerateObject().Select(p => p.Name).Order());
        string[] deviceProps = ["id", "spkiSha256", "thumbprint"];
        Assert.Equal(deviceProps, props.GetProperty("devices").GetProperty("items").GetProperty("properties").EnumerateObject().Select(p => p.Name).Order());
        // the loader knows exactly these names: none is reported unknown, a neighbour is
        string tls = string.Join(", ", tlsProps.Select(p => $"\"{p}\": null").Append("\"ciphers\": null"));
        string devices = string.Join(", ", deviceProps.Select(p => $"\"{p}\": null"));
        var loaded = FastGate.Configuration.ConfigLoader.Load($"{{ \"listeners\": [ {{ \"address\": \"127.0.0.1:0\", \"tls\": {{ {tls} }} }} ], \"devices\": [ {{ {devices} }} ] }}");
        var unknown = loaded.Errors.Where(e => e.Message.StartsWith("unknown property", StringComparison.Ordinal)).Select(e => e.Path).ToArray();
        Assert.Equal(["$.listeners[0].tls.ciphers"], unknown);
    }

    [Fact]
    public void Schema_ClusterAndUpstreamTlsProperties_MatchTheLoader()
    {
        var root = ValidateCommandTests.RepoRoot();
        using var schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "config", "fastgate.schema.json")));
        var cluster = schema.RootElement.GetProperty("properties").GetProperty("clusters").GetProperty("items").GetProperty("properties");
        string[] clusterProps = ["circuitBreaker", "destinations", "healthCheck", "id", "idleConnectionTimeout", "loadBalancing", "maxConnectionsPerDestination", "maxIdleConnectionsPerDestination", "outlierDetection", "protocol", "retry", "tls"];
        Assert.Equal(clusterProps, cluster.EnumerateObject().Select(p => p.Name).Order());
        string[] tlsProps = ["ca", "insecureSkipVerify", "sni"];
        Assert.Equal(tlsProps, cluster.GetProperty("tls").GetProperty("properties").EnumerateObject().Select(p => p.Name).Order());
        // the loader knows exactly these names: each is accepted, a neighbour is not
        string tls = string.Join(", ", tlsProps.Select(p => $"\"{p}\": null"));
        string json = "{ \"clusters\": [ { \"id\": \"c\", \"destinations\": [], \"maxConnectionsPerDestination\": null, " +
                      "\"maxIdleConnectionsPerDestination\": null, \"idleConnectionTimeout\": null, \"retry\": null, \"circuitBreaker\": null, \"tls\": { " + tls + ", \"bogus\": 1 } } ] }";
        var errors = FastGate.Configuration.ConfigLoader.Load(json).Errors;
        Assert.DoesNotContain(errors, e => e.Message.StartsWith("unknown property", StringComparison.Ordinal) && !e.Path.EndsWith(".bogus", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Path == "$.clusters[0].tls.bogus");
        Assert.Matches(schema.RootElement.GetProperty("properties").GetProperty("clusters").GetProperty("items").GetProperty("properties")
            .GetProperty("destinations").GetProperty("items").GetProperty("properties").GetProperty("address").GetProperty("pattern").GetString()!, "https://api.internal:8443");
    }
}
