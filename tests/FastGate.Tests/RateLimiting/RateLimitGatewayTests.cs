using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Text;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.RateLimiting;

/// <summary>Rate limits applied by the real gateway over sockets.</summary>
public class RateLimitGatewayTests
{
    private static string Config(string upstream, string limits, string routeLimits, string policies = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "rateLimits": [ {{limits}} ],
          "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "backend", "rateLimits": [ {{routeLimits}} ] } ],
          "policies": [ {{policies}} ]
        }
        """;

    [Fact]
    public async Task OverTheLimit_Gets429WithHeaders_PerKeyIsolation_AndTheUpstreamNeverSeesRejectedRequests()
    {
        int seen = 0;
        await using var upstream = new RawUpstream(async (s, c) =>
        {
            while ((await RawUpstream.ReadHeadAsync(s, c)).Length > 0)
            {
                Interlocked.Increment(ref seen);
                await s.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), c);
            }
        });
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address,
            """{ "id": "per-client", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 2, "key": "header:X-Client", "headers": true, "legacyHeaders": true }""",
            "\"per-client\""));
        using var a = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 2; i++)
        {
            await a.SendAsync("GET /x HTTP/1.1\r\nHost: t\r\nX-Client: alice\r\n\r\n");
            var ok = await a.ReadResponseAsync();
            Assert.Equal(200, ok.Status);
            Assert.Contains("RateLimit", ok.Headers.Keys);
        }
        await a.SendAsync("GET /x HTTP/1.1\r\nHost: t\r\nX-Client: alice\r\n\r\n");
        var limited = await a.ReadResponseAsync();
        Assert.Equal(429, limited.Status);
        long retryAfter = long.Parse(limited.Headers["Retry-After"]);
        Assert.InRange(retryAfter, 3599, 3600); // burst spent; the next token comes one hour after the first request
        Assert.Contains("per-client", limited.Headers["RateLimit-Policy"]);
        Assert.Contains("r=0", limited.Headers["RateLimit"]);
        Assert.Equal("2", limited.Headers["X-RateLimit-Limit"]);
        Assert.Contains("too_many_requests", limited.Body);

        using var b = await RawClient.ConnectAsync(gateway.EndPoint);
        await b.SendAsync("GET /x HTTP/1.1\r\nHost: t\r\nX-Client: bob\r\n\r\n");
        Assert.Equal(200, (await b.ReadResponseAsync()).Status);
        Assert.Equal(3, seen);

        var metrics = await gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Proxy.ProxyForwardingTests.Counter(metrics, "fastgate_ratelimit_decisions_total{limiter=\"per-client\",result=\"rejected\"}"));
    }

    [Fact]
    public async Task MissingKey_FollowsMissingKeyDeny()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'),
            """{ "id": "by-tenant", "rate": 100, "per": "1s", "key": "header:X-Tenant", "missingKey": "deny" }""", "\"by-tenant\""));
        using var http = gateway.CreateClient();
        Assert.Equal((HttpStatusCode)429, (await http.GetAsync("/hello")).StatusCode);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/hello");
        request.Headers.Add("X-Tenant", "t1");
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(request)).StatusCode);
    }

    [Fact]
    public async Task PolicyRateLimitAction_AppliesToMatchingRequestsOnly()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'),
            """{ "id": "writes", "rate": 1, "per": "1h", "burst": 1, "key": "clientIp" }""", "",
            """{ "id": "limit-writes", "match": { "methods": ["POST"] }, "actions": [ { "type": "rateLimit", "limiters": ["writes"] } ] }"""));
        using var http = gateway.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("/echo", new StringContent("a"))).StatusCode);
        Assert.Equal((HttpStatusCode)429, (await http.PostAsync("/echo", new StringContent("b"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/hello")).StatusCode);
    }

    [Fact]
    public async Task ConcurrencyLimiter_ReleasesWhenTheResponseCompletes_AndWhenTheClientGoesAway()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gated = await GatedUpstream.StartAsync();
        // one limiter on both routes: /held goes to the gated upstream, everything else to the demo upstream
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'),
                """{ "id": "one-at-a-time", "algorithm": "concurrency", "rate": 1, "key": "clientIp" }""", "\"one-at-a-time\"")
            .Replace("\"routes\": [ ", $$"""
                "routes": [ { "id": "held", "match": { "pathPrefix": "/held" }, "cluster": "gated", "rateLimits": ["one-at-a-time"] },
                """)
            .Replace("\"clusters\": [ ", $$"""
                "clusters": [ { "id": "gated", "destinations": [ { "address": "{{gated.Address}}" } ] },
                """));
        using var http = gateway.CreateClient();
        var slow = http.GetAsync("/held");
        await gated.WaitForHeldAsync(); // the request holds the slot at the upstream
        Assert.Equal((HttpStatusCode)429, (await http.GetAsync("/hello")).StatusCode); // the slot is taken
        gated.Release();
        Assert.Equal(HttpStatusCode.OK, (await slow).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/hello")).StatusCode);  // released on completion

        // A client that goes away in the middle of a large response gives its slot back.
        using (var quitter = new TcpClient())
        {
            await quitter.ConnectAsync(gateway.EndPoint);
            var stream = quitter.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /bytes/104857600 HTTP/1.1\r\nHost: t\r\n\r\n"));
            var buffer = new byte[4096];
            Assert.True(await stream.ReadAsync(buffer) > 0); // the response has started
            quitter.Client.LingerState = new LingerOption(true, 0);
        }
        await Eventually.WaitUntilAsync(async () => (await http.GetAsync("/hello")).StatusCode == HttpStatusCode.OK,
            "the slot of the client that went away is released");
    }

    [Fact]
    public async Task UnknownLimiterReferences_AreConfigErrors()
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load(Config("http://127.0.0.1:9",
            """{ "id": "per-ip", "rate": 10, "per": "1s", "key": "bogus" }""", "\"per-ipp\"",
            """{ "id": "r", "match": {}, "actions": [ { "type": "rateLimit", "limiters": ["nope"] } ] }"""));
        Assert.Contains(loaded.Errors, e => e.Path == "$.rateLimits[0].key");
        Assert.Contains(loaded.Errors, e => e.Path == "$.routes[0].rateLimits[0]" && e.Message.Contains("did you mean 'per-ip'"));
        Assert.Contains(loaded.Errors, e => e.Path.StartsWith("$.policies[0].actions[0]", StringComparison.Ordinal) && e.Message.Contains("nope"));
    }
}
