using System.Text.Json;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>trustedProxies through the real gateway: the client named by X-Forwarded-For drives rules and limits.</summary>
public sealed class TrustedProxiesFixture : IAsyncLifetime
{
    public DemoUpstreamServer Upstream { get; private set; } = null!;
    /// <summary>Trusts 127.0.0.1 (the test client) and 10.0.0.0/8.</summary>
    public TestGateway Trusting { get; private set; } = null!;
    /// <summary>The same rules, no trustedProxies.</summary>
    public TestGateway NotTrusting { get; private set; } = null!;

    public static string Config(string upstream, string trusted) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          {{trusted}}
          "clusters": [ { "id": "xff-backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "rateLimits": [ { "id": "per-forwarded-client", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 1, "key": "clientIp" } ],
          "routes": [ { "id": "xff-limited", "match": { "pathPrefix": "/limited" }, "cluster": "xff-backend", "stripPrefix": true, "rateLimits": ["per-forwarded-client"] },
                      { "id": "xff-api", "match": { "pathPrefix": "/" }, "cluster": "xff-backend" } ],
          "policies": [
            { "id": "deny-doc-net", "match": { "clientIps": ["203.0.113.0/24"] }, "actions": [ { "type": "deny", "status": 403 } ] },
            { "id": "teapot-for-one", "match": { "clientIps": ["198.51.100.7/32"] }, "actions": [ { "type": "respond", "status": 418, "body": "teapot" } ] },
            { "id": "gone-for-spoofed", "match": { "clientIps": ["1.2.3.4/32"] }, "actions": [ { "type": "respond", "status": 410, "body": "gone" } ] }
          ]
        }
        """;

    public async Task InitializeAsync()
    {
        Upstream = await DemoUpstreamServer.StartAsync();
        var upstream = Upstream.Address.ToString().TrimEnd('/');
        Trusting = await TestGateway.StartAsync(Config(upstream, """ "trustedProxies": ["10.0.0.0/8", "127.0.0.1/32", "::1/128"], """));
        NotTrusting = await TestGateway.StartAsync(Config(upstream, ""));
    }

    public async Task DisposeAsync()
    {
        await Trusting.DisposeAsync();
        await NotTrusting.DisposeAsync();
        await Upstream.DisposeAsync();
    }
}

public class TrustedProxiesTests : IClassFixture<TrustedProxiesFixture>
{
    private readonly TrustedProxiesFixture _f;

    public TrustedProxiesTests(TrustedProxiesFixture f) => _f = f;

    private static async Task<RawResponse> Send(RawClient client, string path, string? xff)
    {
        await client.SendAsync($"GET {path} HTTP/1.1\r\nHost: t\r\n" + (xff is null ? "" : $"X-Forwarded-For: {xff}\r\n") + "\r\n");
        return await client.ReadResponseAsync();
    }

    [Theory]
    [InlineData("203.0.113.9, 127.0.0.1", 403)]       // the client behind the trusted peer is denied
    [InlineData("203.0.113.9", 403)]
    [InlineData("1.2.3.4, 198.51.100.7", 418)]        // the spoofed left-most entry is ignored
    [InlineData("203.0.113.9, 10.9.9.9, 127.0.0.1", 403)]
    [InlineData("203.0.113.9, garbage", 200)]         // malformed right-most entry: the peer is the client
    [InlineData("garbage, 203.0.113.9", 403)]         // malformed further left: the address right of it counts
    [InlineData("203.0.113.9, unknown, 10.0.0.1", 200)] // stops at "unknown": the trusted 10.0.0.1 is the client
    [InlineData("[2001:db8::5]:80, 198.51.100.7:1234", 418)]
    [InlineData(null, 200)]
    public async Task FromATrustedPeer_XForwardedForNamesTheClient(string? xff, int status)
    {
        using var client = await RawClient.ConnectAsync(_f.Trusting.EndPoint);
        Assert.Equal(status, (await Send(client, "/echo", xff)).Status);
    }

    [Theory]
    [InlineData("203.0.113.9, 127.0.0.1")]
    [InlineData("203.0.113.9")]
    [InlineData("1.2.3.4, 198.51.100.7")]
    public async Task WithoutTrustedProxies_XForwardedForHasNoEffect(string xff)
    {
        using var client = await RawClient.ConnectAsync(_f.NotTrusting.EndPoint);
        Assert.Equal(200, (await Send(client, "/echo", xff)).Status);
    }

    [Fact]
    public async Task TheClientIsDecidedPerRequest_OnOneKeptAliveConnection()
    {
        using var client = await RawClient.ConnectAsync(_f.Trusting.EndPoint);
        Assert.Equal(403, (await Send(client, "/echo", "203.0.113.9")).Status);
        Assert.Equal(418, (await Send(client, "/echo", "198.51.100.7")).Status);
        Assert.Equal(200, (await Send(client, "/echo", null)).Status);
        Assert.Equal(403, (await Send(client, "/echo", "203.0.113.10, 127.0.0.1")).Status);
        var last = await Send(client, "/echo", "192.0.2.44");
        Assert.Equal(200, last.Status);
        // upstream: the received chain plus the TCP peer (not the resolved client) is appended
        var headers = JsonDocument.Parse(last.Body).RootElement.GetProperty("headers");
        Assert.Equal("192.0.2.44, 127.0.0.1", headers.GetProperty("X-Forwarded-For").GetString());
    }

    [Fact]
    public async Task RateLimitKeyedByClientIp_CountsEachForwardedClientSeparately()
    {
        using var client = await RawClient.ConnectAsync(_f.Trusting.EndPoint);
        // burst 1 per hour per client: each forwarded client gets exactly one request through
        Assert.Equal(200, (await Send(client, "/limited/echo", "192.0.2.1")).Status);
        Assert.Equal(200, (await Send(client, "/limited/echo", "192.0.2.2, 127.0.0.1")).Status);
        Assert.Equal(429, (await Send(client, "/limited/echo", "192.0.2.1")).Status);
        Assert.Equal(429, (await Send(client, "/limited/echo", "192.0.2.2")).Status);
        // spoofing a new left-most entry does not buy a new bucket
        Assert.Equal(429, (await Send(client, "/limited/echo", "5.6.7.8, 192.0.2.1")).Status);
        // the same address written differently is the same client (canonical text)
        Assert.Equal(200, (await Send(client, "/limited/echo", "2001:db8::1")).Status);
        Assert.Equal(429, (await Send(client, "/limited/echo", "[2001:DB8:0:0:0:0:0:1]:999")).Status);
    }

    [Fact]
    public async Task WithoutTrustedProxies_RateLimitSeesOnlyThePeer()
    {
        using var client = await RawClient.ConnectAsync(_f.NotTrusting.EndPoint);
        Assert.Equal(200, (await Send(client, "/limited/echo", "192.0.2.1")).Status);
        Assert.Equal(429, (await Send(client, "/limited/echo", "192.0.2.2")).Status);
    }

    [Fact]
    public void TrustedProxies_BadCidr_IsAnErrorAtItsPath()
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load(TrustedProxiesFixture.Config("http://127.0.0.1:1", """ "trustedProxies": ["10.0.0.0/8", "10.0.0.1/8", "nope"], """));
        Assert.Contains(loaded.Errors, e => e.Path == "$.trustedProxies[1]" && e.Message.Contains("host bits"));
        Assert.Contains(loaded.Errors, e => e.Path == "$.trustedProxies[2]");
        Assert.DoesNotContain(loaded.Errors, e => e.Path == "$.trustedProxies[0]");
    }
}
