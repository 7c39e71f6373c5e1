using System.Text.Json;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Policy;

/// <summary>Policy semantics through the real gateway over sockets, in front of the demo upstream's /echo.</summary>
public sealed class PolicyGatewayFixture : IAsyncLifetime
{
    public DemoUpstreamServer Upstream { get; private set; } = null!;
    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Upstream = await DemoUpstreamServer.StartAsync();
        var upstream = Upstream.Address.ToString().TrimEnd('/');
        Gateway = await TestGateway.StartAsync($$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] },
                            { "id": "other", "destinations": [ { "address": "{{upstream}}" } ] } ],
              "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "backend" } ],
              "ipLists": [ { "id": "office", "cidrs": ["10.0.0.0/8", "::1/128"] } ],
              "policies": [
                { "id": "block-admin", "match": { "paths": ["/admin/*"], "not": { "clientIps": ["office"] } },
                  "actions": [ { "type": "deny", "status": 403, "message": "forbidden" } ] },
                { "id": "tag-writes", "match": { "methods": ["POST"] }, "mode": "report",
                  "actions": [ { "type": "setRequestHeaders", "headers": { "X-Write": "1" } } ] },
                { "id": "tag-all", "match": { "paths": ["/echo"] },
                  "actions": [ { "type": "setRequestHeaders", "headers": { "X-Gateway": "fastgate" } },
                               { "type": "removeRequestHeaders", "names": ["X-Internal"] },
                               { "type": "setResponseHeaders", "headers": { "X-Policy": "tag-all" } } ] },
                { "id": "teapot", "match": { "paths": ["/users/{id}/tea"], "headers": [ { "name": "X-Brew", "equals": "yes" } ] },
                  "actions": [ { "type": "respond", "status": 418, "body": "short and stout", "contentType": "text/plain" } ] },
                { "id": "first-allow", "match": { "paths": ["/open/*"] }, "actions": [ { "type": "allow" } ] },
                { "id": "later-deny", "match": { "paths": ["/open/*"] }, "actions": [ { "type": "deny", "status": 451 } ] },
                { "id": "rewrite", "match": { "paths": ["/old/*"] }, "actions": [ { "type": "rewritePath", "path": "/echo" } ] },
                { "id": "needs-key", "match": { "paths": ["/private/*"] }, "actions": [ { "type": "requireAuth", "schemes": ["apiKey"] } ] },
                { "id": "query-deny", "match": { "query": [ { "name": "debug", "present": true } ] }, "actions": [ { "type": "deny", "status": 400, "message": "no debug" } ] }
              ],
              "defaultAction": "allow"
            }
            """);
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Upstream.DisposeAsync();
    }
}

public class PolicyGatewayTests : IClassFixture<PolicyGatewayFixture>
{
    private readonly PolicyGatewayFixture _f;

    public PolicyGatewayTests(PolicyGatewayFixture f) => _f = f;

    private async Task<RawResponse> Send(string request)
    {
        using var client = await RawClient.ConnectAsync(_f.Gateway.EndPoint);
        await client.SendAsync(request);
        return await client.ReadResponseAsync();
    }

    [Theory]
    [InlineData("GET /admin/users HTTP/1.1\r\nHost: a\r\n\r\n", 403)]              // 127.0.0.1 is not in the office list
    [InlineData("GET /users/7/tea HTTP/1.1\r\nHost: a\r\nX-Brew: yes\r\n\r\n", 418)]
    [InlineData("GET /users/7/tea HTTP/1.1\r\nHost: a\r\nX-Brew: no\r\n\r\n", 404)] // falls through to the upstream (no such page)
    [InlineData("GET /open/x HTTP/1.1\r\nHost: a\r\n\r\n", 404)]                   // first allow decides; the later deny is ignored
    [InlineData("GET /private/x HTTP/1.1\r\nHost: a\r\n\r\n", 401)]                // requireAuth with no credential: refused
    [InlineData("GET /hello?debug=1 HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n", 200)]
    public async Task Rules_DecideTheStatus(string request, int status)
    {
        var r = await Send(request);
        Assert.Equal(status, r.Status);
    }

    [Fact]
    public async Task Respond_UsesTheRuleBodyAndContentType()
    {
        var r = await Send("GET /users/42/tea HTTP/1.1\r\nHost: a\r\nX-Brew: yes\r\n\r\n");
        Assert.Equal("short and stout", r.Body);
        Assert.StartsWith("text/plain", r.Headers["Content-Type"]);
    }

    [Fact]
    public async Task HeaderActions_Accumulate_ReportModeDoesNot()
    {
        const string reportMatches = "fastgate_policy_report_matches{rule=\"tag-writes\"}";
        // the class shares one gateway (tests of a class run one at a time): count this request's match
        double matchesBefore = Proxy.ProxyForwardingTests.Counter(await _f.Gateway.ScrapeMetricsAsync(), reportMatches);
        var r = await Send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Internal: secret\r\nX-Gateway: spoofed\r\n\r\nhi");
        Assert.Equal(200, r.Status);
        var headers = JsonDocument.Parse(r.Body).RootElement.GetProperty("headers");
        Assert.Equal("fastgate", headers.GetProperty("X-Gateway").GetString());
        Assert.False(headers.TryGetProperty("X-Internal", out _));
        Assert.False(headers.TryGetProperty("X-Write", out _)); // tag-writes is report-only
        var metrics = await _f.Gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Proxy.ProxyForwardingTests.Counter(metrics, reportMatches) - matchesBefore);
        Assert.Equal("tag-all", r.Headers["X-Policy"]);
    }

    [Fact]
    public async Task RewritePath_ForwardsTheNewPathWithTheQuery()
    {
        var r = await Send("GET /old/thing?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal("/echo?q=1", JsonDocument.Parse(r.Body).RootElement.GetProperty("path").GetString());
    }

    [Fact]
    public async Task Explain_ShowsMatchingRulesAndTheDecision()
    {
        using var admin = _f.Gateway.CreateAdminClient();
        var e = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?method=GET&path=/admin/x&ip=192.0.2.1")).RootElement;
        Assert.Equal("deny", e.GetProperty("decision").GetString());
        Assert.Equal("block-admin", e.GetProperty("rule").GetString());
        var office = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?method=GET&path=/admin/x&ip=10.1.2.3")).RootElement;
        Assert.Equal("forward", office.GetProperty("decision").GetString());
    }
}
