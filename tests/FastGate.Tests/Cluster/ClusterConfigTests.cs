using FastGate.Configuration;

namespace FastGate.Tests.Cluster;

/// <summary>The cluster settings of the <c>redis</c> section and <c>onStoreFailure</c>: defaults, and errors with their JSON paths.</summary>
public class ClusterConfigTests
{
    private static ConfigLoadResult Load(string redis, string limit = """{ "id": "l", "rate": 5, "scope": "cluster" }""") => ConfigLoader.Load($$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "redis": {{redis}},
          "rateLimits": [ {{limit}} ],
          "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
          "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "b", "rateLimits": ["l"] } ]
        }
        """);

    [Fact]
    public void Defaults_HeartbeatOneSecond_MemberTimeoutFive_LeaseTtlTen_OnStoreFailureLocal()
    {
        var loaded = Load("""{ "connection": "127.0.0.1:6379" }""");
        Assert.True(loaded.IsValid, string.Join("; ", loaded.Errors));
        var redis = loaded.Config!.Redis!;
        Assert.Equal(TimeSpan.FromSeconds(1), redis.Heartbeat);
        Assert.Equal(TimeSpan.FromSeconds(5), redis.MemberTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), redis.LeaseTtl);
        Assert.Null(redis.Instance);
        Assert.Equal(FastGate.RateLimiting.StoreFailureMode.Local, loaded.Config.RateLimits[0].Definition!.OnStoreFailure);
    }

    [Fact]
    public void InvalidSettings_AreReportedAtTheirPaths()
    {
        var loaded = Load("""{ "heartbeat": "10ms", "memberTimeout": "15ms", "leaseTtl": "2h", "instance": "a b" }""",
            """{ "id": "l", "rate": 5, "scope": "cluster", "onStoreFailure": "open" }""");
        Assert.False(loaded.IsValid);
        var paths = loaded.Errors.Select(e => e.Path).ToList();
        Assert.Contains("$.redis.heartbeat", paths);
        Assert.Contains("$.redis.memberTimeout", paths);
        Assert.Contains("$.redis.leaseTtl", paths);
        Assert.Contains("$.redis.instance", paths);
        Assert.Contains(loaded.Errors, e => e.Path == "$.rateLimits[0].onStoreFailure" && e.Message.Contains("allow, deny or local"));
    }

    [Fact]
    public void ClusterTokenQuotaAndConcurrency_AreValid_ClusterSlidingWindowIsNot()
    {
        Assert.True(Load("{}", """{ "id": "l", "unit": "tokens", "rate": 5, "scope": "cluster" }""").IsValid);
        Assert.True(Load("{}", """{ "id": "l", "algorithm": "concurrency", "rate": 5, "scope": "cluster" }""").IsValid);
        Assert.False(Load("{}", """{ "id": "l", "algorithm": "slidingWindow", "rate": 5, "scope": "cluster" }""").IsValid);
    }
}
