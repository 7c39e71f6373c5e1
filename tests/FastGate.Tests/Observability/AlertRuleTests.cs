using System.Diagnostics;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace FastGate.Tests.Observability;

/// <summary>Each rule type evaluated over windows on a fake clock, fed through the request-path entry point.</summary>
public class AlertRuleTests
{
    private static (GatewayObservability Hub, FakeTimeProvider Time) Hub(params AlertRuleConfig[] rules) => Hub(true, rules);

    private static (GatewayObservability Hub, FakeTimeProvider Time) Hub(bool anomaly, params AlertRuleConfig[] rules)
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 5, 1, 0, 0, 0, TimeSpan.Zero));
        var config = new ObservabilityConfig
        {
            Alerts = new AlertsConfig { Rules = rules, Notifiers = [new NotifierConfig { Id = "log", Type = "log" }] },
            Anomaly = new AnomalyConfig { Enabled = anomaly, WarmupIntervals = 3, MinCount = 10 },
        };
        return (new GatewayObservability(config, time), time);
    }

    private static void Request(GatewayObservability hub, RouteMetrics route, int status, double seconds = 0.001,
        RejectReason reason = RejectReason.None, string ip = "10.0.0.1", string cluster = "c1")
    {
        long start = Stopwatch.GetTimestamp();
        var record = new RequestRecord
        {
            Route = route, Cluster = cluster, Upstream = "http://10.1.1.1:80", ClientIp = Encoding.ASCII.GetBytes(ip),
            Method = "GET"u8, Path = "/x"u8, RequestId = "rid"u8, Status = status, Reason = reason,
            StartTimestamp = start, EndTimestamp = start + (long)(seconds * Stopwatch.Frequency),
            UpstreamStartTimestamp = reason == RejectReason.None ? start : 0,
        };
        hub.OnRequest(record);
    }

    private static AlertRuleConfig Rule(string type, double threshold = 0, string? route = null, string? cluster = null, long minRequests = 1) => new()
    {
        Id = type + "-rule", Type = type, Threshold = threshold, Route = route, Cluster = cluster, MinRequests = minRequests,
        Window = TimeSpan.FromSeconds(30), Notify = ["log"],
    };

    [Fact]
    public async Task Latency_FiresWhenThePercentileIsAboveTheThreshold_AndResolves()
    {
        var (hub, time) = Hub(Rule("latency", threshold: 0.2, route: "lat-route", minRequests: 10) with { Percentile = 0.95 });
        var route = new RouteMetrics("lat-route", hub.Metrics);
        for (int i = 0; i < 90; i++) Request(hub, route, 200, 0.01);
        for (int i = 0; i < 10; i++) Request(hub, route, 200, 0.8); // p95 lands in the slow tail
        hub.Alerts.Evaluate();
        var a = Assert.Single(hub.Alerts.Active());
        Assert.InRange(a.Value, 0.5, 1.0);
        time.Advance(TimeSpan.FromSeconds(31));
        for (int i = 0; i < 100; i++) Request(hub, route, 200, 0.01);
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task ErrorRate_NeedsMinRequests()
    {
        var (hub, _) = Hub(Rule("errorRate", threshold: 0.05, route: "min-route", minRequests: 20));
        var route = new RouteMetrics("min-route", hub.Metrics);
        for (int i = 0; i < 19; i++) Request(hub, route, 500);
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        Request(hub, route, 500);
        hub.Alerts.Evaluate();
        Assert.Single(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task UpstreamDown_FiresOnlyWhenEveryExchangeOfTheClusterFails()
    {
        var (hub, time) = Hub(Rule("upstreamDown", cluster: "down-cluster", minRequests: 3));
        var route = new RouteMetrics("down-route", hub.Metrics);
        for (int i = 0; i < 5; i++) Request(hub, route, 502, reason: RejectReason.UpstreamConnectFailed, cluster: "down-cluster");
        Request(hub, route, 200, cluster: "down-cluster");
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active()); // one destination still answers
        time.Advance(TimeSpan.FromSeconds(31));
        for (int i = 0; i < 5; i++) Request(hub, route, 504, reason: RejectReason.UpstreamConnectTimeout, cluster: "down-cluster");
        hub.Alerts.Evaluate();
        var a = Assert.Single(hub.Alerts.Active());
        Assert.Equal("down-cluster", a.Cluster);
        Assert.Equal(5, a.Value);
        Assert.Equal(5, hub.Metrics.UpstreamErrors.WithLabels("down-cluster", "timeout").Value);
        Assert.Equal(5, hub.Metrics.UpstreamErrors.WithLabels("down-cluster", "connect").Value);
        Assert.Equal(1, hub.Metrics.UpstreamResponses.WithLabels("down-cluster").Value);
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task AuthFailuresAndRateLimited_CountBurstsInTheWindow()
    {
        var (hub, time) = Hub(Rule("authFailures", threshold: 10, route: "burst-route"), Rule("rateLimited", threshold: 5, route: "burst-route"));
        var route = new RouteMetrics("burst-route", hub.Metrics);
        for (int i = 0; i < 9; i++) Request(hub, route, 401);
        for (int i = 0; i < 4; i++) Request(hub, route, 429);
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        Request(hub, route, 403);
        Request(hub, route, 429);
        hub.Alerts.Evaluate();
        Assert.Equal(["authFailures-rule", "rateLimited-rule"], hub.Alerts.Active().Select(a => a.Rule).Order());
        time.Advance(TimeSpan.FromSeconds(31));
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task AuthFailuresByClientIp_NamesTheClientsOverTheThreshold_EvenWithAnomalyScoringOff()
    {
        var (hub, time) = Hub(false, Rule("authFailures", threshold: 10) with { By = "clientIp" });
        var route = new RouteMetrics("per-ip-route", hub.Metrics);
        for (int i = 0; i < 12; i++) Request(hub, route, 401, ip: "198.51.100.66");
        for (int i = 0; i < 9; i++) Request(hub, route, 403, ip: "198.51.100.67");
        for (int i = 0; i < 50; i++) Request(hub, route, 200, ip: "198.51.100.68");
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active()); // counts reach the rule when the interval closes
        time.Advance(TimeSpan.FromSeconds(10));
        hub.Anomaly.CloseInterval();
        hub.Alerts.Evaluate();
        var a = Assert.Single(hub.Alerts.Active());
        Assert.Equal(["198.51.100.66"], a.Identities);
        Assert.Equal(12, a.Value);
        Assert.Empty(hub.Anomaly.Recent()); // scoring is off: tracking only
        time.Advance(TimeSpan.FromSeconds(31));
        hub.Anomaly.CloseInterval();
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task Apply_KeepsActiveAlertsAndCounters_AcrossAReload()
    {
        var rule = Rule("errorRate", threshold: 0.1, route: "reload-route");
        var (hub, time) = Hub(rule);
        var route = new RouteMetrics("reload-route", hub.Metrics);
        for (int i = 0; i < 10; i++) Request(hub, route, 500);
        hub.Alerts.Evaluate();
        var before = Assert.Single(hub.Alerts.Active());
        await hub.ApplyAsync(new ObservabilityConfig
        {
            Alerts = new AlertsConfig
            {
                Rules = [rule, Rule("rateLimited", threshold: 1, route: "reload-route")],
                Notifiers = [new NotifierConfig { Id = "log", Type = "log" }],
            },
        });
        for (int i = 0; i < 10; i++) Request(hub, route, 500);
        hub.Alerts.Evaluate();
        var after = Assert.Single(hub.Alerts.Active());
        Assert.Equal(before.StartedAt, after.StartedAt); // the same firing period, not a new alert
        Assert.Equal(1, after.Value);
        await hub.ApplyAsync(new ObservabilityConfig()); // rules removed: their state goes with them
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task ConfigReloadFailed_FiresUntilAReloadSucceeds()
    {
        var (hub, _) = Hub(Rule("configReloadFailed"));
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        hub.ReportConfigReload(false, "$.routes[0].cluster: unknown cluster 'x'");
        hub.Alerts.Evaluate();
        Assert.Contains("unknown cluster", Assert.Single(hub.Alerts.Active()).Summary);
        hub.ReportConfigReload(true);
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task Anomaly_RuleFiresForDetectedIdentities()
    {
        var (hub, time) = Hub(Rule("anomaly") with { Window = TimeSpan.FromMinutes(1) });
        var route = new RouteMetrics("anomaly-route", hub.Metrics);
        for (int i = 0; i < 10; i++)
        {
            for (int r = 0; r < 20; r++) Request(hub, route, 200, ip: "172.16.0.9");
            time.Advance(TimeSpan.FromSeconds(10));
            hub.Anomaly.CloseInterval();
        }
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        for (int r = 0; r < 400; r++) Request(hub, route, 200, ip: "172.16.0.9");
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.Single(hub.Anomaly.CloseInterval());
        hub.Alerts.Evaluate();
        var a = Assert.Single(hub.Alerts.Active());
        Assert.Equal(["172.16.0.9"], a.Identities);
        Assert.Contains("request_rate", a.Summary);
        time.Advance(TimeSpan.FromMinutes(2));
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        await hub.DisposeAsync();
    }

    [Fact]
    public async Task AdminBlocks_ListsAndRemovesBlocks_AndTheRequestPathSeesThem()
    {
        await using var upstream = new SwitchableUpstream();
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            "\"anomaly\": { \"autoBlock\": true, \"blockTtl\": \"10m\" }", "blocks-route"));
        var hub = gateway.Host.Runtime.Observability;
        hub.Blocks.Block("203.0.113.7", TimeSpan.FromMinutes(10), "test");
        Assert.True(hub.IsBlocked("203.0.113.7"u8));
        using var admin = new HttpClient { BaseAddress = new Uri($"http://{gateway.Admin}") };
        var list = JsonDocument.Parse(await admin.GetStringAsync("/admin/blocks")).RootElement.GetProperty("blocks");
        var entry = Assert.Single(list.EnumerateArray());
        Assert.Equal("203.0.113.7", entry.GetProperty("identity").GetString());
        Assert.Equal("test", entry.GetProperty("reason").GetString());
        using (var response = await admin.DeleteAsync("/admin/blocks/203.0.113.7")) Assert.Equal(200, (int)response.StatusCode);
        Assert.False(hub.IsBlocked("203.0.113.7"u8));
        using (var response = await admin.DeleteAsync("/admin/blocks/203.0.113.7")) Assert.Equal(404, (int)response.StatusCode);
        Assert.Empty(JsonDocument.Parse(await admin.GetStringAsync("/admin/blocks")).RootElement.GetProperty("blocks").EnumerateArray());
    }

    [Fact]
    public void Config_ReportsEveryErrorWithItsJsonPath()
    {
        var json = """
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
              "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "b" } ],
              "accessLog": { "path": "stdout", "sampleRate": 2, "maxFile": 1 },
              "alerts": {
                "rules": [
                  { "id": "r1", "type": "errorRat", "route": "nope", "threshold": 0.05, "notify": ["ops", "pager"] },
                  { "id": "r2", "type": "upstreamDown" },
                  { "id": "r3", "type": "errorRate", "threshold": 5, "severity": "huge" }
                ],
                "notifiers": [ { "id": "ops", "type": "webhook", "url": "ftp://x" } ]
              },
              "anomaly": { "scoreThreshold": -1 }
            }
            """;
        var result = ConfigLoader.Load(json);
        Assert.False(result.IsValid);
        var errors = result.Errors.Select(e => e.Path).ToList();
        Assert.Contains("$.accessLog.sampleRate", errors);
        Assert.Contains("$.accessLog.maxFile", errors);
        Assert.Contains("$.alerts.rules[0].type", errors);
        Assert.Contains("$.alerts.rules[0].route", errors);
        Assert.Contains("$.alerts.rules[0].notify[1]", errors);
        Assert.DoesNotContain("$.alerts.rules[0].notify[0]", errors);
        Assert.Contains("$.alerts.rules[1].cluster", errors);
        Assert.Contains("$.alerts.rules[2].threshold", errors);
        Assert.Contains("$.alerts.rules[2].severity", errors);
        Assert.Contains("$.alerts.notifiers[0].url", errors);
        Assert.Contains("$.anomaly.scoreThreshold", errors);
        Assert.Contains(result.Errors, e => e.Message.Contains("did you mean 'errorRate'"));
    }

    [Fact]
    public void Config_TheIssueExampleBinds()
    {
        var json = """
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
              "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "b" } ],
              "alerts": {
                "rules": [ { "id": "api-errors", "type": "errorRate", "route": "api", "threshold": 0.05,
                             "window": "30s", "minRequests": 20, "severity": "critical", "notify": ["ops"] } ],
                "notifiers": [ { "id": "ops", "type": "webhook", "url": "http://127.0.0.1:9000/hook", "cooldown": "5m" } ]
              }
            }
            """;
        var result = ConfigLoader.Load(json);
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        var rule = Assert.Single(result.Config!.Observability.Alerts.Rules);
        Assert.Equal(TimeSpan.FromSeconds(30), rule.Window);
        Assert.Equal(20, rule.MinRequests);
        Assert.Equal(TimeSpan.FromMinutes(5), Assert.Single(result.Config.Observability.Alerts.Notifiers).Cooldown);
    }
}
