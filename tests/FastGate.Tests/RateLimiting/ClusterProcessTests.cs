using System.Net;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.RateLimiting;

/// <summary>Cluster-scope limits shared by two separate `fastgate` OS processes through one real redis-server.</summary>
public class ClusterProcessTests
{
    private static string Config(string upstream, string redis) => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "redis": { "connection": "{{redis}}" },
          "rateLimits": [
            { "id": "shared", "rate": 10, "per": "1h", "burst": 10, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "5s" }
          ],
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "rateLimits": ["shared"] } ]
        }
        """;

    [Fact]
    public async Task TwoGatewayProcesses_ShareOneClusterLimit_TenToATheEleventhToBIsRefused()
    {
        using var redis = new RedisServerProcess();
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        var dir = Directory.CreateTempSubdirectory("fastgate-cluster-proc-");
        // one after the other: both read the same shared state, so only the key names can differ
        await using var a = await FastgateProcess.StartAsync(dir.FullName, Config(address, redis.Configuration), "a.json");
        await using var b = await FastgateProcess.StartAsync(dir.FullName, Config(address, redis.Configuration), "b.json");
        using var httpA = a.CreateClient();
        using var httpB = b.CreateClient();

        var statusesA = new List<HttpStatusCode>();
        for (int i = 0; i < 10; i++)
        {
            using var r = await httpA.GetAsync("/hello");
            statusesA.Add(r.StatusCode);
        }
        Assert.All(statusesA, s => Assert.Equal(HttpStatusCode.OK, s));
        using (var refusedB = await httpB.GetAsync("/hello"))
            Assert.True(refusedB.StatusCode == HttpStatusCode.TooManyRequests,
                $"gateway B admitted request 11 of a shared limit of 10 ({refusedB.StatusCode}): its Redis keys differ from A's\nA:\n{a.Output}\nB:\n{b.Output}");
        using (var refusedA = await httpA.GetAsync("/hello"))
            Assert.Equal(HttpStatusCode.TooManyRequests, refusedA.StatusCode);
    }
}
