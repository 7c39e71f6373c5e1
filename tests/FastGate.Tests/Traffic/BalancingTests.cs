using System.Net;
using System.Text;
using FastGate.Configuration;
using FastGate.Proxy;
using FastGate.Traffic;
using Microsoft.Extensions.Time.Testing;

namespace FastGate.Tests.Traffic;

/// <summary>Balancing policies and outlier detection on compiled cluster models (the request-path code, without a gateway).</summary>
public class BalancingTests
{
    internal static ClusterModel Cluster(ClusterConfig config, TimeProvider time, UpstreamPoolStore? store = null)
    {
        store ??= new UpstreamPoolStore(new FastGate.Observability.GatewayMetrics());
        var destinations = config.Destinations.Select(d =>
        {
            var uri = new Uri(d.Address);
            var pool = store.GetOrCreate(config.Id, new IPEndPoint(IPAddress.Loopback, uri.Port), 16, 16, TimeSpan.FromSeconds(30));
            return new DestinationModel(d.Address, uri.Authority, pool, d.Weight, store.Health.GetOrCreate(config.Id, d.Address));
        }).ToArray();
        return new ClusterModel(config.Id, destinations, new ClusterTraffic(config, time), new ClusterResilience(config.Id, new(), new(), new FastGate.Observability.GatewayMetrics()));
    }

    internal static ClusterConfig Config(params int[] weights) => new()
    {
        Id = "c",
        Destinations = weights.Select((w, i) => new DestinationConfig { Address = $"http://127.0.0.1:{9001 + i}", Weight = w }).ToArray(),
    };

    [Fact]
    public void ConsistentHash_AddingAFourthDestination_MovesKeysOnlyToIt_AndSpreadsEvenly()
    {
        var three = new HashRing(Enumerable.Range(0, 3).Select(i => ($"http://10.0.0.{i + 1}:8080", 1)).ToArray());
        var four = new HashRing(Enumerable.Range(0, 4).Select(i => ($"http://10.0.0.{i + 1}:8080", 1)).ToArray());
        const int keys = 100_000;
        int kept = 0, movedToNew = 0, movedElsewhere = 0;
        var spread = new int[4];
        for (int k = 0; k < keys; k++)
        {
            ulong h = Balancer.KeyHash(Encoding.ASCII.GetBytes($"user-{k}"));
            int before = three.Lookup(h), after = four.Lookup(h);
            spread[after]++;
            if (before == after) kept++;
            else if (after == 3) movedToNew++;
            else movedElsewhere++;
        }
        // bounded remap: a key either keeps its destination or moves to the new one (≥ 99% of the others keep theirs)
        Assert.True(kept >= 0.99 * (keys - movedToNew), $"kept {kept}, moved to the new destination {movedToNew}, moved elsewhere {movedElsewhere}");
        Assert.Equal(0, movedElsewhere);
        // the new destination takes about its share (a quarter), and every destination is within ±10% of an even split
        foreach (int n in spread) Assert.InRange(n, keys / 4 * 0.9, keys / 4 * 1.1);
    }

    [Fact]
    public void WeightedRoundRobin_HonoursWeightsExactly_OverACycle()
    {
        var cluster = Cluster(Config(5, 3, 1), TimeProvider.System);
        var counts = new int[3];
        for (int i = 0; i < 9 * 100; i++)
        {
            var d = cluster.Pick(null!, null);
            counts[d.Index]++;
            d.Report(UpstreamOutcome.Success);
        }
        Assert.Equal([500, 300, 100], counts);
        // smooth: the heavy destination is never picked more than twice in a row in the 5-3-1 order
        Assert.Equal([0, 1, 0, 2, 0, 1, 0, 1, 0], cluster.Schedule);
    }

    [Fact]
    public void LeastRequest_PrefersTheLessLoadedDestination()
    {
        var cluster = Cluster(Config(1, 1) with { LoadBalancing = new LoadBalancingConfig { Policy = LoadBalancingPolicies.LeastRequest } }, TimeProvider.System);
        var a = cluster.Destinations[0];
        // five tries in flight on a (Pick counts them; Report would release them)
        for (int i = 0; i < 5; i++) Interlocked.Increment(ref a.Health.InFlight);
        for (int i = 0; i < 5; i++) Assert.Same(cluster.Destinations[1], cluster.Pick(null!, null)); // b, until it carries as many
        Assert.Equal(5, cluster.Destinations[1].Health.InFlightCount);
        for (int i = 0; i < 5; i++) a.Report(UpstreamOutcome.Success);
        Assert.Same(a, cluster.Pick(null!, null));
    }

    [Fact]
    public void Pick_NeverReturnsAvoid_WhileAnotherIsUsable()
    {
        foreach (var policy in LoadBalancingPolicies.All.Where(p => p != LoadBalancingPolicies.ConsistentHash))
        {
            var cluster = Cluster(Config(1, 1, 1) with { LoadBalancing = new LoadBalancingConfig { Policy = policy } }, TimeProvider.System);
            var avoid = cluster.Destinations[1];
            for (int i = 0; i < 300; i++)
            {
                var d = cluster.Pick(null!, avoid);
                Assert.NotSame(avoid, d);
                d.Report(UpstreamOutcome.Success);
            }
        }
    }

    [Fact]
    public void OutlierDetection_EjectsAfterConsecutive5xx_EjectionTimeGrows_AndNeverTheLastDestination()
    {
        var time = new FakeTimeProvider();
        var cluster = Cluster(Config(1, 1), time);
        var (bad, good) = (cluster.Destinations[0], cluster.Destinations[1]);
        long Remaining() => bad.Health.EjectedUntil - time.GetTimestamp();
        for (int i = 0; i < 4; i++) { cluster.Pick(null!, good); bad.Report(UpstreamOutcome.ServerError); }
        Assert.True(bad.Health.IsUsable(time.GetTimestamp()));
        cluster.Pick(null!, good);
        bad.Report(UpstreamOutcome.ServerError);
        Assert.Equal(DestinationState.Ejected, bad.Health.StateAt(time.GetTimestamp()));
        Assert.Equal(30 * time.TimestampFrequency, Remaining());
        for (int i = 0; i < 20; i++) Assert.Same(good, cluster.Pick(null!, null)); // out of rotation
        // the last usable destination is never ejected
        for (int i = 0; i < 10; i++) good.Report(UpstreamOutcome.ConnectFailed);
        Assert.True(good.Health.IsUsable(time.GetTimestamp()));
        // after the ejection, the next one lasts twice as long (base × ejections), capped at maxEjectionTime
        time.Advance(TimeSpan.FromSeconds(30));
        Assert.True(bad.Health.IsUsable(time.GetTimestamp()));
        for (int i = 0; i < 5; i++) bad.Report(UpstreamOutcome.Timeout);
        Assert.Equal(60 * time.TimestampFrequency, Remaining());
        Assert.Equal(2, bad.Health.Ejected);
        for (int n = 3; n <= 12; n++)
        {
            time.Advance(TimeSpan.FromSeconds(300));
            for (int i = 0; i < 5; i++) bad.Report(UpstreamOutcome.Reset);
        }
        Assert.Equal(300 * time.TimestampFrequency, Remaining());
        // success resets the streak
        time.Advance(TimeSpan.FromSeconds(300));
        for (int i = 0; i < 4; i++) bad.Report(UpstreamOutcome.ServerError);
        bad.Report(UpstreamOutcome.Success);
        bad.Report(UpstreamOutcome.ServerError);
        Assert.True(bad.Health.IsUsable(time.GetTimestamp()));
    }

    [Fact]
    public void Panic_WhenNoDestinationIsUsable_ServesFromAll()
    {
        var time = new FakeTimeProvider();
        var cluster = Cluster(Config(1, 1, 1), time);
        foreach (var d in cluster.Destinations) d.Health.SetActiveHealthy(false, time.GetTimestamp());
        var seen = new HashSet<int>();
        for (int i = 0; i < 30; i++)
        {
            var d = cluster.Pick(null!, null);
            seen.Add(d.Index);
            d.Report(UpstreamOutcome.Abandoned);
        }
        Assert.Equal(3, seen.Count);
        Assert.All(cluster.Destinations, d => Assert.Equal(0, d.Health.InFlightCount));
    }

    [Fact]
    public void SlowStart_RampsAReturningDestinationUp()
    {
        var time = new FakeTimeProvider();
        var config = Config(1, 1) with { LoadBalancing = new LoadBalancingConfig { SlowStartSeconds = 100 } };
        var cluster = Cluster(config, time);
        var back = cluster.Destinations[0];
        back.Health.SetActiveHealthy(false, time.GetTimestamp());
        time.Advance(TimeSpan.FromSeconds(1));
        back.Health.SetActiveHealthy(true, time.GetTimestamp()); // just readmitted: 10% of its weight
        int hits = 0;
        for (int i = 0; i < 10_000; i++)
        {
            var d = cluster.Pick(null!, null);
            if (d == back) hits++;
            d.Report(UpstreamOutcome.Success);
        }
        Assert.InRange(hits, 300, 1500); // about 10% of a 50% share, not the full half
        time.Advance(TimeSpan.FromSeconds(100));
        Assert.Equal(1, Balancer.SlowStartFactor(back, cluster.Traffic, time.GetTimestamp()));
    }

    [Fact]
    public void Config_Errors_CarryTheirJsonPaths()
    {
        var loaded = ConfigLoader.Load("""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [
                { "id": "a", "destinations": [ { "address": "http://127.0.0.1:9001", "weight": 0 } ],
                  "healthCheck": { "type": "udp", "interval": "1s", "timeout": "2s", "expectedStatuses": ["2xx", "600"] },
                  "loadBalancing": { "policy": "fastest" } },
                { "id": "b", "destinations": [ { "address": "http://127.0.0.1:9002" } ],
                  "outlierDetection": { "baseEjectionTime": "10s", "maxEjectionTime": "5s", "maxEjectionPercent": 150, "bogus": 1 },
                  "loadBalancing": { "policy": "consistentHash", "hashOn": "header" } }
              ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "a" } ]
            }
            """);
        var paths = loaded.Errors.Select(e => e.Path).ToHashSet();
        string[] expected =
        [
            "$.clusters[0].destinations[0].weight", "$.clusters[0].healthCheck.type", "$.clusters[0].healthCheck.timeout",
            "$.clusters[0].healthCheck.expectedStatuses[1]", "$.clusters[0].loadBalancing.policy",
            "$.clusters[1].outlierDetection.maxEjectionPercent", "$.clusters[1].outlierDetection.bogus", "$.clusters[1].loadBalancing.name",
        ];
        foreach (var p in expected) Assert.True(paths.Contains(p), $"no error at {p}: {string.Join("; ", loaded.Errors)}");
    }
}
