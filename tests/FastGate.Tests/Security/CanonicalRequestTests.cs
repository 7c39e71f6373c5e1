using System.Text.Json;
using FastGate.Security;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

/// <summary>
/// Issue 19, items 1, 2 and 7, attacked as from outside: a protected route or a deny rule beside an open catch-all,
/// in front of a real nginx that normalises paths (so any spelling the gateway reads differently from nginx shows
/// up as nginx's "protected" body). The gateway must decide on, and forward, the request nginx acts on.
/// </summary>
public class CanonicalRequestTests
{
    private const string Key = "canonical-test-key-1";

    private const string NginxLocations = """
        location /api/ { return 200 "protected $uri\n"; }
        location = /api { return 200 "protected $uri\n"; }
        location /admin/ { return 200 "admin $uri\n"; }
        location / { return 200 "open $uri\n"; }
        """;

    private static string Config(string upstream, string http = "", string extra = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [ { "id": "ops", "apiKeys": [ "{{ApiKeys.Hash(Key)}}" ] } ],
          {{http}}
          "policies": [ { "id": "no-admin", "match": { "paths": ["/admin/*"] }, "actions": [ { "type": "deny" } ] } ],
          "routes": [
            { "id": "tenant", "match": { "hosts": ["tenant.example"], "pathPrefix": "/" }, "cluster": "backend", "auth": ["apiKey"], "preserveHost": true },
            { "id": "api", "match": { "pathPrefix": "/api" }, "cluster": "backend", "auth": ["apiKey"] },
            { "id": "open", "match": { "pathPrefix": "/" }, "cluster": "backend", "preserveHost": true }
          ]
          {{extra}}
        }
        """;

    private static async Task<RawResponse> Send(TestGateway gateway, string target, string host = "a", string headers = "")
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync($"GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
        return await client.ReadResponseAsync();
    }

    [Theory]
    [InlineData("//api/x", 401)]
    [InlineData("///api/x", 401)]
    [InlineData("/%61pi/x", 401)]
    [InlineData("/%61%70%69/x", 401)]
    [InlineData("/ap%69", 401)]
    [InlineData("/api%2fx", 400)]
    [InlineData("/api%2Fx", 400)]
    [InlineData("/api%5cx", 400)]
    [InlineData("/x/%2e%2e/api/x", 400)]
    [InlineData("/x/.%2e/api/x", 400)]
    [InlineData("/x/%2E./api/x", 400)]
    [InlineData("/%2e/api/x", 400)]
    [InlineData("/x/../api/x", 400)]
    [InlineData("/api/%00", 400)]
    [InlineData("/api/x", 401)]
    public async Task ProtectedRoute_EverySpellingOfApi_NeverReachesProtectedContentWithoutAKey(string target, int status)
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address));
        var response = await Send(gateway, target);
        Assert.DoesNotContain("protected", response.Body);
        Assert.Equal(status, response.Status);
    }

    [Theory]
    [InlineData("//api/x", "protected /api/x")]
    [InlineData("/%61pi//x", "protected /api/x")]
    [InlineData("/api/%7euser", "protected /api/~user")]
    [InlineData("/api/a%20b", "protected /api/a b")]
    public async Task ProtectedRoute_WithKey_ForwardsTheCanonicalPath(string target, string body)
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address));
        var response = await Send(gateway, target, headers: $"X-API-Key: {Key}\r\n");
        Assert.Equal(200, response.Status);
        Assert.Equal(body, response.Body.TrimEnd('\n'));
    }

    [Theory]
    [InlineData("/admin/x", 403)]
    [InlineData("//admin/x", 403)]
    [InlineData("/%61dmin/x", 403)]
    [InlineData("/admin%2fx", 400)]
    [InlineData("/admin%2Fx", 400)]
    [InlineData("/x/%2e%2e/admin/x", 400)]
    public async Task DenyRule_EverySpellingOfAdmin_IsRefused(string target, int status)
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address));
        var response = await Send(gateway, target);
        Assert.DoesNotContain("admin /admin", response.Body);
        Assert.Equal(status, response.Status);
    }

    [Fact]
    public async Task EscapedSlashesDecode_RoutesAndForwardsTheDecodedPath()
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address, http: "\"http\": { \"escapedSlashes\": \"decode\" },"));
        Assert.Equal(401, (await Send(gateway, "/api%2Fx")).Status);
        Assert.Equal(403, (await Send(gateway, "/admin%2fx")).Status);
        var keyed = await Send(gateway, "/api%2Fx", headers: $"X-API-Key: {Key}\r\n");
        Assert.Equal("protected /api/x", keyed.Body.TrimEnd('\n'));
    }

    [Theory]
    [InlineData("tenant.example.")]
    [InlineData("TENANT.example")]
    [InlineData("Tenant.Example.:80")]
    [InlineData("tenant.example:8080")]
    public async Task HostRoute_TrailingDotCasePort_StillRequiresTheKey(string host)
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address));
        Assert.Equal(401, (await Send(gateway, "/x", host)).Status);
    }

    [Theory]
    [InlineData("tenant..example")]
    [InlineData("%74enant.example")]
    [InlineData(".")]
    public async Task Host_MalformedOrEncoded_Is400(string host)
    {
        await using var nginx = await NginxUpstream.StartAsync(NginxLocations);
        await using var gateway = await TestGateway.StartAsync(Config(nginx.Address));
        Assert.Equal(400, (await Send(gateway, "/x", host)).Status);
    }

    [Fact]
    public async Task PreserveHost_ForwardsTheCanonicalHost()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/')));
        var response = await Send(gateway, "/echo", "Open.Example.:8080");
        var headers = JsonDocument.Parse(response.Body).RootElement.GetProperty("headers");
        Assert.Equal("open.example:8080", headers.GetProperty("Host").GetString());
        Assert.Equal("open.example:8080", headers.GetProperty("X-Forwarded-Host").GetString());
    }

    [Fact]
    public async Task UnderscoreSpellings_OfIdentityHeaders_AreDropped_OtherUnderscoreNamesPass()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/')));
        var response = await Send(gateway, "/echo", "tenant.example", headers:
            $"X-API-Key: {Key}\r\nX_Consumer_Id: admin\r\nx_consumer_ID: root\r\nX_Device_Id: d1\r\nX_Forwarded_For: 10.0.0.1\r\n" +
            "X-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\nX_Real_IP: 10.9.9.8\r\nMy_Header: kept\r\n");
        Assert.Equal(200, response.Status);
        var headers = JsonDocument.Parse(response.Body).RootElement.GetProperty("headers");
        var names = headers.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal("ops", headers.GetProperty("X-Consumer-Id").GetString());
        Assert.DoesNotContain(names, n => n.Contains("Consumer_", StringComparison.OrdinalIgnoreCase) || n.Contains("consumer_", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(names, n => n.StartsWith("X_", StringComparison.OrdinalIgnoreCase));
        // the peer is not a trusted proxy: it does not get to say who the client is
        Assert.DoesNotContain(names, n => n.Equals("X-Real-IP", StringComparison.OrdinalIgnoreCase) || n.Equals("Forwarded", StringComparison.OrdinalIgnoreCase));
        Assert.Equal("kept", headers.GetProperty("My_Header").GetString());
    }

    [Fact]
    public async Task UnderscoreHeadersReject_Is400_DropAll_DropsEveryUnderscoreName()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        await using (var gateway = await TestGateway.StartAsync(Config(address, http: "\"http\": { \"underscoreHeaders\": \"reject\" },")))
        {
            Assert.Equal(400, (await Send(gateway, "/echo", headers: "X_Consumer_Id: admin\r\n")).Status);
            Assert.Equal(200, (await Send(gateway, "/echo", headers: "My_Header: fine\r\n")).Status);
        }
        await using (var gateway = await TestGateway.StartAsync(Config(address, http: "\"http\": { \"underscoreHeaders\": \"dropAll\" },")))
        {
            var response = await Send(gateway, "/echo", headers: "My_Header: gone\r\n");
            var headers = JsonDocument.Parse(response.Body).RootElement.GetProperty("headers");
            Assert.False(headers.TryGetProperty("My_Header", out _));
        }
    }

    [Fact]
    public async Task TrustedProxy_ForwardsItsForwardedAndXRealIp()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), extra: ", \"trustedProxies\": [\"127.0.0.1/32\"]"));
        var response = await Send(gateway, "/echo", headers: "X-Real-IP: 192.0.2.9\r\nForwarded: for=192.0.2.9\r\n");
        var headers = JsonDocument.Parse(response.Body).RootElement.GetProperty("headers");
        Assert.Equal("192.0.2.9", headers.GetProperty("X-Real-IP").GetString());
        Assert.Equal("for=192.0.2.9", headers.GetProperty("Forwarded").GetString());
    }
}
