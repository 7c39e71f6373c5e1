using FastGate.Tests.Infrastructure;
using FastGate.Tests.Observability;
using Microsoft.Extensions.Time.Testing;

namespace FastGate.Tests.Waf;

/// <summary>The wafBlocked alert rule: the real gateway with a WAF profile, attacks over real sockets, a real webhook
/// receiver, the alert engine on an injected clock.</summary>
public sealed class WafAlertTests : IAsyncLifetime
{
    private DemoUpstreamServer _upstream = null!;
    private string _dir = "";

    public async Task InitializeAsync()
    {
        _upstream = await DemoUpstreamServer.StartAsync();
        _dir = Directory.CreateTempSubdirectory("fastgate-waf-alert-").FullName;
        Directory.CreateDirectory(Path.Combine(_dir, "rules"));
        File.WriteAllText(Path.Combine(_dir, "crs-setup.conf"), "SecDefaultAction \"phase:2,log,pass\"\n");
        File.WriteAllText(Path.Combine(_dir, "rules", "test.conf"), """
            SecRule ARGS "@rx (?i)union\s+select" "id:942999,phase:2,deny,t:none,t:urlDecodeUni,msg:'SQLi'"
            """);
    }

    public async Task DisposeAsync()
    {
        await _upstream.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string Config(string mode, string hook) => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
          "waf": { "profiles": [ { "id": "app", "rules": "{{_dir}}", "mode": "{{mode}}" } ] },
          "routes": [
            { "id": "shop", "match": { "pathPrefix": "/echo" }, "cluster": "backend", "waf": "app" },
            { "id": "open", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ],
          "alerts": {
            "rules": [ { "id": "waf-attack", "type": "wafBlocked", "route": "shop", "threshold": 3, "window": "30s",
                         "severity": "warning", "notify": ["ops"] } ],
            "notifiers": [ { "id": "ops", "type": "webhook", "url": "{{hook}}", "cooldown": "1s" } ]
          }
        }
        """;

    private static async Task SendAsync(TestGateway g, string target, int expected)
    {
        var raw = $"GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n\r\n";
        Assert.Equal(expected, await ModSecurityDifferentialTests.SendAsync(g.EndPoint.Port, raw));
    }

    [Fact]
    public async Task Blocks_reaching_the_threshold_fire_a_wafBlocked_alert_to_the_webhook_and_resolve_after_the_window()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 3, 9, 0, 0, TimeSpan.Zero));
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config("block", receiver.Url), time);
        var alerts = gateway.Host.Runtime.Observability.Alerts;
        // a request is recorded just after its response is written: each evaluation waits for the records first
        var shop = gateway.Host.Runtime.Observability.RouteCounters("shop");
        var open = gateway.Host.Runtime.Observability.RouteCounters("open");

        // two blocks, and 403s that are not the WAF's do not count: below the threshold
        await SendAsync(gateway, "/echo?q=1%20UNION%20SELECT%20pw", 403);
        await SendAsync(gateway, "/echo?q=2%20union%20select%20x", 403);
        await SendAsync(gateway, "/echo?q=fine", 200);
        await SendAsync(gateway, "/?q=1%20UNION%20SELECT%20pw", 200); // the route without WAF
        await Eventually.WaitUntilAsync(() => shop.Snapshot().Requests == 3 && open.Snapshot().Requests == 1, "the four requests recorded");
        alerts.Evaluate();
        Assert.Empty(alerts.Active());

        await SendAsync(gateway, "/echo?q=3%20UNION%20SELECT%20y", 403);
        await Eventually.WaitUntilAsync(() => shop.Snapshot().WafBlocked == 3, "the third block recorded");
        alerts.Evaluate();
        var firing = await receiver.NextAsync();
        Assert.Equal("firing", firing.GetProperty("status").GetString());
        Assert.Equal("waf-attack", firing.GetProperty("rule").GetString());
        Assert.Equal("wafBlocked", firing.GetProperty("type").GetString());
        Assert.Equal("shop", firing.GetProperty("route").GetString());
        Assert.Equal(3, firing.GetProperty("value").GetDouble());
        Assert.Equal(3, firing.GetProperty("threshold").GetDouble());
        Assert.Contains("3 requests blocked by the WAF", firing.GetProperty("summary").GetString());
        Assert.Equal(3, firing.GetProperty("sampleRequestIds").GetArrayLength());
        Assert.Equal(1, gateway.Metrics.AlertsFired.WithLabels("waf-attack", "warning").Value);

        // the window moves past the blocks: resolved
        time.Advance(TimeSpan.FromSeconds(31));
        await SendAsync(gateway, "/echo?q=fine", 200);
        await Eventually.WaitUntilAsync(() => shop.Snapshot().Requests == 5, "the request after the window recorded");
        alerts.Evaluate();
        var resolved = await receiver.NextAsync();
        Assert.Equal("resolved", resolved.GetProperty("status").GetString());
        Assert.Equal("waf-attack", resolved.GetProperty("rule").GetString());
        Assert.Empty(alerts.Active());
        Assert.Equal(1, gateway.Metrics.AlertsFired.WithLabels("waf-attack", "warning").Value);
    }

    [Fact]
    public async Task Waf_blocks_are_auth_failures_too_and_fire_an_authFailures_rule()
    {
        // the WAF's 403 is counted with the other 401/403 answers: an authFailures rule on the route sees the attacks
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 3, 9, 0, 0, TimeSpan.Zero));
        await using var receiver = await WebhookReceiver.StartAsync();
        var config = Config("block", receiver.Url).Replace("\"id\": \"waf-attack\", \"type\": \"wafBlocked\", \"route\": \"shop\", \"threshold\": 3",
            "\"id\": \"denied\", \"type\": \"authFailures\", \"route\": \"shop\", \"threshold\": 2", StringComparison.Ordinal);
        Assert.Contains("authFailures", config, StringComparison.Ordinal);
        await using var gateway = await TestGateway.StartAsync(config, time);
        var alerts = gateway.Host.Runtime.Observability.Alerts;
        var shop = gateway.Host.Runtime.Observability.RouteCounters("shop");
        await SendAsync(gateway, "/echo?q=1%20UNION%20SELECT%20pw", 403);
        await SendAsync(gateway, "/echo?q=fine", 200);
        // a request is recorded just after its response is written: wait for the records, then evaluate
        await Eventually.WaitUntilAsync(() => shop.Snapshot().Requests == 2, "two requests recorded on the route");
        Assert.Equal(1, shop.Snapshot().AuthFailures);
        alerts.Evaluate();
        Assert.Empty(alerts.Active());
        await SendAsync(gateway, "/echo?q=2%20union%20select%20x", 403);
        await Eventually.WaitUntilAsync(() => shop.Snapshot().AuthFailures == 2, "the second WAF 403 counted as an auth failure");
        alerts.Evaluate();
        var firing = await receiver.NextAsync();
        Assert.Equal("firing", firing.GetProperty("status").GetString());
        Assert.Equal("denied", firing.GetProperty("rule").GetString());
        Assert.Equal("authFailures", firing.GetProperty("type").GetString());
        Assert.Equal(2, firing.GetProperty("value").GetDouble());
    }

    [Fact]
    public async Task Detect_mode_blocks_nothing_and_never_fires_the_rule()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 3, 9, 0, 0, TimeSpan.Zero));
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config("detect", receiver.Url), time);
        for (int i = 0; i < 4; i++) await SendAsync(gateway, $"/echo?q={i}%20UNION%20SELECT%20pw", 200);
        var alerts = gateway.Host.Runtime.Observability.Alerts;
        alerts.Evaluate();
        Assert.Empty(alerts.Active());
        Assert.Equal(0, gateway.Metrics.AlertsFired.WithLabels("waf-attack", "warning").Value);
    }

    [Fact]
    public void The_rule_type_is_known_to_the_config()
    {
        var result = FastGate.Configuration.ConfigLoader.Load(Config("block", "http://127.0.0.1:9/hook").Replace("wafBlocked", "wafBlock"));
        Assert.Contains(result.Errors, e => e.Message.Contains("did you mean 'wafBlocked'", StringComparison.Ordinal));
    }
}
