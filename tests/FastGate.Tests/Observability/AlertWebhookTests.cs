using System.Net.Http;
using System.Text.Json;
using FastGate.Observability.Alerts;
using FastGate.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace FastGate.Tests.Observability;

/// <summary>The real gateway in front of an upstream that starts and stops failing, with a real webhook receiver.</summary>
public class AlertWebhookTests
{
    private static string AlertsSection(string routeId, string url, string type = "webhook", string extra = "") => $$"""
        "alerts": {
          "rules": [ { "id": "api-errors", "type": "errorRate", "route": "{{routeId}}", "threshold": 0.05,
                       "window": "30s", "minRequests": 20, "severity": "critical", "notify": ["ops"] } ],
          "notifiers": [ { "id": "ops", "type": "{{type}}", "url": "{{url}}", "cooldown": "5m" {{extra}} } ]
        }
        """;

    private static async Task SendAsync(TestGateway gateway, int count, int expectedStatus)
    {
        using var http = gateway.CreateClient();
        for (int i = 0; i < count; i++)
        {
            using var response = await http.GetAsync($"/items/{i}");
            Assert.Equal(expectedStatus, (int)response.StatusCode);
        }
    }

    private static Notifier Ops(TestGateway g) => g.Host.Runtime.Observability.Alerts.Notifiers.Single(n => n.Config.Id == "ops");

    [Fact]
    public async Task UpstreamStartsAndStopsFailing_ReceiverGetsFiringThenResolved_AndCooldownIsRespected()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero));
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var upstream = new SwitchableUpstream { Status = 500 };
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address, AlertsSection("alerts-e2e", receiver.Url), "alerts-e2e"), time);
        var alerts = gateway.Host.Runtime.Observability.Alerts;

        await SendAsync(gateway, 25, 500);
        alerts.Evaluate();
        var firing = await receiver.NextAsync();
        Assert.Equal("firing", firing.GetProperty("status").GetString());
        Assert.Equal("api-errors", firing.GetProperty("rule").GetString());
        Assert.Equal("errorRate", firing.GetProperty("type").GetString());
        Assert.Equal("critical", firing.GetProperty("severity").GetString());
        Assert.Equal("alerts-e2e", firing.GetProperty("route").GetString());
        Assert.Equal(1.0, firing.GetProperty("value").GetDouble());
        Assert.Equal(0.05, firing.GetProperty("threshold").GetDouble());
        Assert.Equal("30s", firing.GetProperty("window").GetString());
        Assert.NotEmpty(firing.GetProperty("sampleRequestIds").EnumerateArray());
        Assert.All(firing.GetProperty("sampleTraceIds").EnumerateArray(), t => Assert.Matches("^[0-9a-f]{32}$", t.GetString()));
        Assert.NotEmpty(firing.GetProperty("sampleTraceIds").EnumerateArray());

        // /admin/alerts lists it as active
        using (var admin = new HttpClient())
        {
            var doc = JsonDocument.Parse(await admin.GetStringAsync($"http://{gateway.Admin}/admin/alerts")).RootElement;
            var active = Assert.Single(doc.GetProperty("active").EnumerateArray());
            Assert.Equal("api-errors", active.GetProperty("rule").GetString());
            Assert.Equal("firing", active.GetProperty("status").GetString());
        }

        // the upstream recovers: once the window has moved past the failures, the alert resolves
        upstream.Status = 200;
        time.Advance(TimeSpan.FromSeconds(31));
        await SendAsync(gateway, 25, 200);
        alerts.Evaluate();
        var resolved = await receiver.NextAsync();
        Assert.Equal("resolved", resolved.GetProperty("status").GetString());
        Assert.Equal("api-errors", resolved.GetProperty("rule").GetString());
        Assert.Equal(JsonValueKind.String, resolved.GetProperty("resolvedAt").ValueKind);
        Assert.Empty(alerts.Active());

        // it fails again within the 5m cooldown: the alert fires (visible in /admin/alerts) but is not sent again
        upstream.Status = 500;
        time.Advance(TimeSpan.FromSeconds(31));
        await SendAsync(gateway, 25, 500);
        var suppressed = gateway.Metrics.AlertNotifications.WithLabels("ops", "suppressed");
        Assert.Equal(0, suppressed.Value);
        alerts.Evaluate();
        Assert.Single(alerts.Active());
        Assert.Equal(1, suppressed.Value);
        // ... and its resolution is not sent either (its firing never was)
        upstream.Status = 200;
        time.Advance(TimeSpan.FromSeconds(31));
        await SendAsync(gateway, 25, 200);
        alerts.Evaluate();
        Assert.Empty(alerts.Active());

        // after the cooldown a new failure period is sent again: the next payload is a firing one
        time.Advance(TimeSpan.FromMinutes(5));
        upstream.Status = 500;
        await SendAsync(gateway, 25, 500);
        alerts.Evaluate();
        var again = await receiver.NextAsync();
        Assert.Equal("firing", again.GetProperty("status").GetString());
        Assert.Equal(3, receiver.Count);
        Assert.Equal(3, alerts.Recent().Count);
    }

    [Fact]
    public async Task DeadWebhook_DoesNotSlowRequests()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero));
        using var dead = new DeadWebhook();
        await using var upstream = new SwitchableUpstream { Status = 500 };
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            AlertsSection("alerts-dead", dead.Url, extra: ", \"timeout\": \"60s\", \"maxRetries\": 0"), "alerts-dead"), time);
        await SendAsync(gateway, 25, 500);
        gateway.Host.Runtime.Observability.Alerts.Evaluate();
        await Eventually.SignalledAsync(dead.FirstAccepted, "the notifier connects to the dead receiver"); // and is now stuck on it
        // requests keep flowing while the delivery hangs
        await SendAsync(gateway, 100, 500);
        var ops = Ops(gateway);
        Assert.Equal(0, ops.Sent);
        Assert.Equal(0, ops.Failed);
        Assert.Equal(1, ops.Attempts);
        gateway.Host.Runtime.Observability.Alerts.Evaluate(); // the window's reading at this instant
        // and the evaluation loop is not held up either
        upstream.Status = 200;
        time.Advance(TimeSpan.FromSeconds(31));
        await SendAsync(gateway, 25, 200);
        gateway.Host.Runtime.Observability.Alerts.Evaluate();
        Assert.Empty(gateway.Host.Runtime.Observability.Alerts.Active());
    }

    [Fact]
    public async Task FailedDelivery_IsRetriedWithBackoff_OnTheInjectedClock()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero));
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.StatusCode = 503;
        await using var upstream = new SwitchableUpstream { Status = 500 };
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            AlertsSection("alerts-retry", receiver.Url, type: "slack"), "alerts-retry"), time);
        await SendAsync(gateway, 25, 500);
        gateway.Host.Runtime.Observability.Alerts.Evaluate();
        await Eventually.SignalledAsync(receiver.FirstRequest, "the first delivery attempt reaches the receiver");
        Assert.Equal(0, Ops(gateway).Sent);
        receiver.StatusCode = 200;
        JsonElement payload = default;
        // the backoff delay runs on the injected clock, and when the notifier has armed its timer is not observable:
        // move the clock a second at a time until the retry is delivered
        await Eventually.WaitUntilAsync(() =>
        {
            if (receiver.TryNext(out payload)) return true;
            time.Advance(TimeSpan.FromSeconds(1));
            return false;
        }, "the failed delivery is retried on the injected clock");
        Assert.Equal(JsonValueKind.Object, payload.ValueKind);
        var text = payload.GetProperty("text").GetString()!;
        Assert.Contains("[FIRING]", text);
        Assert.Contains("api-errors", text);
        Assert.Contains("critical", text);
        Assert.True(Ops(gateway).Attempts >= 2);
        Assert.Equal(1, Ops(gateway).Sent);
    }
}
