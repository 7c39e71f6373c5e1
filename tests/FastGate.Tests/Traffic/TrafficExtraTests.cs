using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Text;
using FastGate.Observability;
using FastGate.Observability.Alerts;
using FastGate.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace FastGate.Tests.Traffic;

public class TrafficExtraTests
{
    [Fact]
    public async Task UpstreamDown_AlsoFires_WhenNoDestinationIsUsable_WithoutTraffic()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 5, 1, 0, 0, 0, TimeSpan.Zero));
        var config = new ObservabilityConfig
        {
            Alerts = new AlertsConfig
            {
                Rules = [new AlertRuleConfig { Id = "down", Type = "upstreamDown", Cluster = "c", MinRequests = 1, Window = TimeSpan.FromSeconds(30), Notify = ["log"] }],
                Notifiers = [new NotifierConfig { Id = "log", Type = "log" }],
            },
        };
        await using var hub = new GatewayObservability(config, time);
        (int Usable, int Total)? health = (1, 2);
        hub.ClusterHealth = id => id == "c" ? health : null;
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
        health = (0, 2);
        time.Advance(TimeSpan.FromSeconds(5));
        hub.Alerts.Evaluate();
        var a = Assert.Single(hub.Alerts.Active());
        Assert.Equal("c", a.Cluster);
        Assert.Contains("no destination of cluster c is healthy", a.Summary);
        health = (2, 2);
        time.Advance(TimeSpan.FromSeconds(5));
        hub.Alerts.Evaluate();
        Assert.Empty(hub.Alerts.Active());
    }

    /// <summary>An upstream that answers 200 with its own name as the body.</summary>
    private static RawUpstream Named(string name) => new(async (stream, cancel) =>
    {
        while (true)
        {
            var head = await RawUpstream.ReadHeadAsync(stream, cancel);
            if (head.Length == 0) return;
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {name.Length}\r\n\r\n{name}"), cancel);
        }
    });

    [Fact]
    public async Task ConsistentHash_OnAHeader_KeepsEachKeyOnOneDestination_ThroughTheGateway()
    {
        await using var a = Named("a");
        await using var b = Named("b");
        await using var c = Named("c");
        var json = $$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{a.Address}}" }, { "address": "{{b.Address}}" }, { "address": "{{c.Address}}" } ],
                              "loadBalancing": { "policy": "consistentHash", "hashOn": "header", "name": "X-User" } } ],
              "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
            }
            """;
        await using var gateway = await TestGateway.StartAsync(json);
        using var client = gateway.CreateClient();
        var seen = new HashSet<string>();
        for (int user = 0; user < 30; user++)
        {
            string first = "";
            for (int i = 0; i < 3; i++)
            {
                using var request = new HttpRequestMessage(System.Net.Http.HttpMethod.Get, "/x");
                request.Headers.Add("X-User", $"user-{user}");
                var body = await (await client.SendAsync(request)).Content.ReadAsStringAsync();
                if (i == 0) first = body;
                Assert.Equal(first, body);
            }
            seen.Add(first);
        }
        Assert.Equal(3, seen.Count); // 30 keys spread over all three
    }
}
