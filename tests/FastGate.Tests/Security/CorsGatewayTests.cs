using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

public class CorsGatewayTests
{
    private static async Task<(TestGateway, DemoUpstreamServer)> StartAsync()
    {
        var upstream = await DemoUpstreamServer.StartAsync();
        var gateway = await TestGateway.StartAsync($$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
              "cors": [ { "id": "web", "origins": ["https://app.example.com", "https://*.example.org"], "methods": ["GET", "POST"],
                          "headers": ["Content-Type", "Authorization"], "credentials": true, "exposeHeaders": ["X-Request-Id"], "maxAge": "600s" } ],
              "routes": [ { "id": "api", "match": { "pathPrefix": "/" }, "cluster": "backend", "cors": "web" } ]
            }
            """);
        return (gateway, upstream);
    }

    private static async Task<RawResponse> Send(TestGateway gateway, string request)
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        return await client.ReadResponseAsync();
    }

    [Theory]
    [InlineData("https://app.example.com", true)]
    [InlineData("https://eu.example.org", true)]
    [InlineData("https://example.org", false)]
    [InlineData("http://app.example.com", false)]
    [InlineData("https://evil.com", false)]
    [InlineData("https://app.example.com.evil.com", false)]
    public async Task Preflight_IsAnsweredByTheGateway_OnlyForAllowedOrigins(string origin, bool allowed)
    {
        var (gateway, upstream) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        var r = await Send(gateway, $"OPTIONS /hello HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\r\n");
        Assert.Equal("Origin", r.Headers["Vary"]);
        if (allowed)
        {
            Assert.Equal(204, r.Status);
            Assert.Equal(origin, r.Headers["Access-Control-Allow-Origin"]);
            Assert.Equal("GET, POST", r.Headers["Access-Control-Allow-Methods"]);
            Assert.Equal("Content-Type, Authorization", r.Headers["Access-Control-Allow-Headers"]);
            Assert.Equal("600", r.Headers["Access-Control-Max-Age"]);
            Assert.Equal("true", r.Headers["Access-Control-Allow-Credentials"]);
        }
        else
        {
            Assert.Equal(403, r.Status);
            Assert.False(r.Headers.ContainsKey("Access-Control-Allow-Origin"));
        }
    }

    [Fact]
    public async Task SimpleRequests_GetCorsHeadersOnlyForAllowedOrigins()
    {
        var (gateway, upstream) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        var ok = await Send(gateway, "GET /hello HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\n\r\n");
        Assert.Equal(200, ok.Status);
        Assert.Equal("https://app.example.com", ok.Headers["Access-Control-Allow-Origin"]);
        Assert.Equal("X-Request-Id", ok.Headers["Access-Control-Expose-Headers"]);
        Assert.Equal("Origin", ok.Headers["Vary"]);
        var other = await Send(gateway, "GET /hello HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.com\r\n\r\n");
        Assert.Equal(200, other.Status);
        Assert.False(other.Headers.ContainsKey("Access-Control-Allow-Origin"));
        var noOrigin = await Send(gateway, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.False(noOrigin.Headers.ContainsKey("Access-Control-Allow-Origin"));
    }

    [Theory]
    [InlineData("https://evil.com")]
    [InlineData("http://app.example.com")]
    [InlineData("https://app.example.com.evil.com")]
    public async Task DisallowedOrigin_GetsNoCredentialsGrant_OnRejectedPreflightOrSimpleRequest(string origin)
    {
        var (gateway, upstream) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        var preflight = await Send(gateway, $"OPTIONS /hello HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\r\n");
        Assert.Equal(403, preflight.Status);
        Assert.Equal("Origin", preflight.Headers["Vary"]);
        Assert.False(preflight.Headers.ContainsKey("Access-Control-Allow-Credentials"));
        Assert.False(preflight.Headers.ContainsKey("Access-Control-Allow-Origin"));
        Assert.False(preflight.Headers.ContainsKey("Access-Control-Allow-Methods"));
        var simple = await Send(gateway, $"GET /hello HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\n\r\n");
        Assert.Equal(200, simple.Status);
        Assert.Equal("Origin", simple.Headers["Vary"]);
        Assert.False(simple.Headers.ContainsKey("Access-Control-Allow-Credentials"));
        Assert.False(simple.Headers.ContainsKey("Access-Control-Allow-Origin"));
        Assert.False(simple.Headers.ContainsKey("Access-Control-Expose-Headers"));
    }

    [Fact]
    public async Task AllowedOrigin_GetsTheCredentialsGrant_OnPreflightAndSimpleRequest()
    {
        var (gateway, upstream) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        var preflight = await Send(gateway, "OPTIONS /hello HTTP/1.1\r\nHost: a\r\nOrigin: https://eu.example.org\r\nAccess-Control-Request-Method: POST\r\n\r\n");
        Assert.Equal(204, preflight.Status);
        Assert.Equal("true", preflight.Headers["Access-Control-Allow-Credentials"]);
        Assert.Equal("https://eu.example.org", preflight.Headers["Access-Control-Allow-Origin"]);
        var simple = await Send(gateway, "GET /hello HTTP/1.1\r\nHost: a\r\nOrigin: https://eu.example.org\r\n\r\n");
        Assert.Equal(200, simple.Status);
        Assert.Equal("true", simple.Headers["Access-Control-Allow-Credentials"]);
        Assert.Equal("Origin", simple.Headers["Vary"]);
        // no Origin: not a CORS request, no grant at all
        var plain = await Send(gateway, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.False(plain.Headers.ContainsKey("Access-Control-Allow-Credentials"));
    }

    [Fact]
    public void WildcardOriginWithCredentials_IsAConfigError()
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load("""
            { "listeners": [ { "address": "127.0.0.1:0" } ], "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
              "cors": [ { "id": "web", "origins": ["*"], "credentials": true } ],
              "routes": [ { "id": "r", "match": {}, "cluster": "b", "cors": "webb" } ] }
            """);
        Assert.Contains(loaded.Errors, e => e.Path == "$.cors[0].origins");
        Assert.Contains(loaded.Errors, e => e.Path == "$.routes[0].cors");
    }
}
