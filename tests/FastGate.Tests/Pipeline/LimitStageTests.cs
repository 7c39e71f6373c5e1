using System.Net;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Pipeline;
using FastGate.Policy;
using FastGate.Proxy;
using FastGate.RateLimiting;
using FastGate.Tests.RateLimiting;

namespace FastGate.Tests.Pipeline;

/// <summary>
/// Rate limits as Admission.Decide's last stage: the route's limiters, then each matched rule's, counted exactly; a
/// refusal releases the concurrency slots the request already took; explain's dry run names limits and takes none.
/// </summary>
public sealed class LimitStageTests : IDisposable
{
    private const string ConfigJson = """
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "backend", "destinations": [ { "address": "http://10.0.0.5:8080" } ] } ],
          "rateLimits": [
            { "id": "slots", "algorithm": "concurrency", "rate": 5, "key": "clientIp" },
            { "id": "per-ip", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 2, "key": "clientIp", "headers": true },
            { "id": "tight", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 1, "key": "clientIp" }
          ],
          "policies": [ { "id": "hot", "match": { "paths": ["/hot"] }, "actions": [ { "type": "rateLimit", "limiters": ["tight"] } ] } ],
          "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "backend", "rateLimits": ["slots", "per-ip"] } ]
        }
        """;

    private readonly FastGate.Observability.GatewayMetrics _metrics = new();
    private readonly UpstreamPoolStore _pools;
    private readonly RateLimiterStore _limiters;
    private readonly GatewaySnapshot _snapshot;
    private readonly Microsoft.Extensions.Time.Testing.FakeTimeProvider _time = FakeTime.Create();

    public LimitStageTests()
    {
        _pools = new UpstreamPoolStore(_metrics);
        _limiters = new RateLimiterStore(_time, metrics: _metrics);
        var loaded = ConfigLoader.Load(ConfigJson);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        _snapshot = SnapshotCompiler.Compile(loaded.Config!, loaded.Text, _pools, _time, _limiters);
    }

    public void Dispose()
    {
        _limiters.Dispose();
        _pools.Dispose();
    }

    private (Exchange Exchange, RequestHead Head) Decide(string path, out AdmissionVerdict verdict, bool dryRun = false)
    {
        var head = new RequestHead();
        var status = HttpRequestParser.TryParse(Encoding.Latin1.GetBytes($"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"), _snapshot.Limits, head, out _, out var reason);
        Assert.True(status == ParseStatus.Complete, $"{status} {reason}");
        var x = new Exchange(head, new PolicyResult()) { LimiterClock = _time, DryRun = dryRun };
        x.Begin("203.0.113.7"u8.ToArray(), ClientAddress.From(IPAddress.Parse("203.0.113.7")), null);
        verdict = Admission.Decide(_snapshot, x, null);
        return (x, head);
    }

    private CompiledLimiter Limiter(string id) => _snapshot.Router.Match(Decide("/", out _, dryRun: true).Head)!.Limiters.First(l => l.Definition.Id == id);

    [Fact]
    public void RouteLimits_AdmitThenRefuse_CountedExactly_AndTheRefusalGivesTheSlotBack()
    {
        var slots = _snapshot.Router.Match(Decide("/", out _, dryRun: true).Head)!.Limiters[0];
        var perIp = Limiter("per-ip");
        var admitted = new List<Exchange>();
        for (int i = 0; i < 2; i++)
        {
            var (x, _) = Decide("/a", out var verdict);
            Assert.Equal(AdmissionVerdict.Forward, verdict);
            Assert.Equal(1, x.LeaseCount); // the concurrency slot is held until the request ends
            Assert.Contains("RateLimit", Encoding.ASCII.GetString(x.ResponseLines, 0, x.ResponseLinesLength));
            admitted.Add(x);
        }
        var (refused, _) = Decide("/a", out var third);
        Assert.Equal(AdmissionVerdict.RateLimited, third);
        Assert.Same(perIp, refused.RateLimitedBy);
        Assert.Equal(0, refused.LeaseCount); // the slot taken before the refusal was released
        Assert.Equal(AdmissionVerdict.RateLimited, Admission.Decide(_snapshot, refused, null)); // decided: no second acquire
        Assert.Equal(3, slots.Allowed.Value);
        Assert.Equal(2, perIp.Allowed.Value);
        Assert.Equal(1, perIp.Rejected.Value);
        foreach (var x in admitted) x.ReleaseLeases();
    }

    [Fact]
    public void AMatchedRulesLimit_FollowsTheRoutes()
    {
        Decide("/hot", out var first);
        Assert.Equal(AdmissionVerdict.Forward, first);
        var (x, _) = Decide("/hot", out var second);
        Assert.Equal(AdmissionVerdict.RateLimited, second);
        Assert.Equal("tight", x.RateLimitedBy!.Definition.Id);
        Assert.Equal(1, x.RateLimitedBy.Rejected.Value);
        // the route's limiters were checked first, on both requests
        Assert.Equal(2, Limiter("per-ip").Allowed.Value);
        x.ReleaseLeases();
    }

    [Fact]
    public void DryRun_NamesNoLimitAndConsumesNone()
    {
        for (int i = 0; i < 5; i++)
        {
            var (x, _) = Decide("/a", out var verdict, dryRun: true);
            Assert.Equal(AdmissionVerdict.Forward, verdict);
            Assert.Equal(0, x.LeaseCount);
        }
        Assert.Equal(0, Limiter("per-ip").Allowed.Value);
        Decide("/a", out var real); // the first real request still finds the whole burst
        Assert.Equal(AdmissionVerdict.Forward, real);
        Assert.Equal(1, Limiter("per-ip").Allowed.Value);
    }
}
