using System.Net;
using System.Text.Json;
using FastGate.Security;
using FastGate.Server;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

public class ApiKeyGatewayTests
{
    private const string AliceKey = "alice-secret-key-1";
    private const string BobKey = "bob-secret-key-2";

    private static string Config(string upstream, string aliceKeys) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [
            { "id": "alice", "groups": ["partners"], "apiKeys": [ {{aliceKeys}} ] },
            { "id": "bob", "apiKeys": [ "{{ApiKeys.Hash(BobKey)}}" ] }
          ],
          "rateLimits": [ { "id": "per-consumer", "rate": 1, "per": "1h", "burst": 2, "key": "consumer", "missingKey": "allow" } ],
          "routes": [
            { "id": "private", "match": { "pathPrefix": "/private" }, "cluster": "backend", "stripPrefix": true, "auth": ["apiKey"],
              "rateLimits": ["per-consumer"] },
            { "id": "public", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ]
        }
        """;

    private static async Task<RawResponse> Send(TestGateway gateway, string request)
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        return await client.ReadResponseAsync();
    }

    [Fact]
    public async Task KeyInQueryParameter_Authenticates_AndIsNotForwardedUpstream()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var config = Config(upstream.Address.ToString().TrimEnd('/'), $"\"{ApiKeys.Hash(AliceKey)}\"")
            .Replace("\"routes\": [", "\"apiKeys\": { \"queryParameter\": \"api_key\" },\n  \"routes\": [");
        await using var gateway = await TestGateway.StartAsync(config);
        // two requests: the route's per-consumer limit allows a burst of 2
        foreach (var (query, forwarded) in new[]
                 {
                     ($"?a=1&api_key={AliceKey}&b=2", "/echo?a=1&b=2"),
                     ($"?api_key={AliceKey}&x=api_key%3D", "/echo?x=api_key%3D"),
                 })
        {
            var response = await Send(gateway, $"GET /private/echo{query} HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(200, response.Status);
            var echoed = JsonDocument.Parse(response.Body).RootElement;
            Assert.Equal(forwarded, echoed.GetProperty("path").GetString());
            Assert.Equal("alice", echoed.GetProperty("headers").GetProperty("X-Consumer-Id").GetString());
        }
    }

    [Fact]
    public async Task ApiKeyRoute_MissingWrongAndRightKeys_SpoofedConsumerRemoved_KeyNotForwarded()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), $"\"{ApiKeys.Hash(AliceKey)}\""));

        var missing = await Send(gateway, "GET /private/echo HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(401, missing.Status);
        Assert.StartsWith("ApiKey", missing.Headers["WWW-Authenticate"]);
        var wrong = await Send(gateway, "GET /private/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: alice-secret-key-X\r\n\r\n");
        Assert.Equal(401, wrong.Status);

        var right = await Send(gateway, $"GET /private/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\nX-Consumer-Id: admin\r\n\r\n");
        Assert.Equal(200, right.Status);
        var headers = JsonDocument.Parse(right.Body).RootElement.GetProperty("headers");
        Assert.Equal("alice", headers.GetProperty("X-Consumer-Id").GetString());
        Assert.False(headers.TryGetProperty("X-API-Key", out _));

        var viaAuthorization = await Send(gateway, $"GET /private/echo HTTP/1.1\r\nHost: a\r\nAuthorization: ApiKey {BobKey}\r\n\r\n");
        Assert.Equal(200, viaAuthorization.Status);
        var bobHeaders = JsonDocument.Parse(viaAuthorization.Body).RootElement.GetProperty("headers");
        Assert.Equal("bob", bobHeaders.GetProperty("X-Consumer-Id").GetString());
        Assert.False(bobHeaders.TryGetProperty("Authorization", out _));

        // a public route: a spoofed consumer header never reaches the upstream
        var spoof = await Send(gateway, "GET /echo HTTP/1.1\r\nHost: a\r\nX-Consumer-Id: alice\r\n\r\n");
        Assert.False(JsonDocument.Parse(spoof.Body).RootElement.GetProperty("headers").TryGetProperty("X-Consumer-Id", out _));
    }

    [Fact]
    public async Task AcceptedKeysCache_RepeatedKeysKeepTheirConsumers_NearMissesRefused()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), $"\"{ApiKeys.Hash(AliceKey)}\""));

        async Task<string?> ConsumerOf(string key)
        {
            // the public route forwards the consumer a key identified (none for a wrong key)
            var r = await Send(gateway, $"GET /echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\n\r\n");
            Assert.Equal(200, r.Status);
            var headers = JsonDocument.Parse(r.Body).RootElement.GetProperty("headers");
            return headers.TryGetProperty("X-Consumer-Id", out var id) ? id.GetString() : null;
        }

        // every accepted key is looked up again after it was remembered; keys close to one never borrow its consumer
        for (int round = 0; round < 3; round++)
        {
            Assert.Equal("alice", await ConsumerOf(AliceKey));
            Assert.Equal("bob", await ConsumerOf(BobKey));
            Assert.Null(await ConsumerOf(AliceKey[..^1]));
            Assert.Null(await ConsumerOf(AliceKey + "1"));
            Assert.Null(await ConsumerOf(AliceKey[..^1] + "X"));
            Assert.Null(await ConsumerOf(AliceKey.ToUpperInvariant()));
        }
        Assert.Equal(401, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey[..^1]}X\r\n\r\n")).Status);
        Assert.Equal(200, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\n\r\n")).Status);
    }

    [Fact]
    public async Task ConsumerKeyedLimit_IsPerConsumer()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), $"\"{ApiKeys.Hash(AliceKey)}\""));
        for (int i = 0; i < 2; i++)
            Assert.Equal(200, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\n\r\n")).Status);
        Assert.Equal(429, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\n\r\n")).Status);
        Assert.Equal(200, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {BobKey}\r\n\r\n")).Status);
    }

    [Fact]
    public async Task KeyRotation_ThroughReload_NewKeyWorksOldKeyRefused()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        var dir = Directory.CreateTempSubdirectory("fastgate-keys-");
        var path = Path.Combine(dir.FullName, "fastgate.json");
        File.WriteAllText(path, Config(address, $"\"{ApiKeys.Hash(AliceKey)}\""));
        await using var gateway = await TestGateway.StartFromFileAsync(path);
        Assert.Equal(200, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\n\r\n")).Status);

        const string rotated = "alice-rotated-key";
        File.WriteAllText(path, Config(address, $"\"{ApiKeys.Hash(rotated)}\""));
        Assert.True((await gateway.Host.Reloader!.ReloadAsync("test")).Success);
        Assert.Equal(401, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\n\r\n")).Status);
        Assert.Equal(200, (await Send(gateway, $"GET /private/hello HTTP/1.1\r\nHost: a\r\nX-API-Key: {rotated}\r\n\r\n")).Status);
    }

    [Fact]
    public async Task PolicyRules_MatchConsumersAndConsumerGroups()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var config = Config(upstream.Address.ToString().TrimEnd('/'), $"\"{ApiKeys.Hash(AliceKey)}\"").TrimEnd().TrimEnd('}') + """
              , "policies": [
                { "id": "no-bob-writes", "match": { "consumers": ["bob"], "methods": ["POST"] }, "actions": [ { "type": "deny", "status": 403 } ] },
                { "id": "tag-partners", "match": { "consumerGroups": ["partners"] },
                  "actions": [ { "type": "setRequestHeaders", "headers": { "X-Partner": "yes" } } ] }
              ]
            }
            """;
        await using var gateway = await TestGateway.StartAsync(config);
        var alice = await Send(gateway, $"POST /private/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {AliceKey}\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(200, alice.Status);
        Assert.Equal("yes", JsonDocument.Parse(alice.Body).RootElement.GetProperty("headers").GetProperty("X-Partner").GetString());
        var bob = await Send(gateway, $"POST /private/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {BobKey}\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(403, bob.Status);
        var bobRead = await Send(gateway, $"GET /private/echo HTTP/1.1\r\nHost: a\r\nX-API-Key: {BobKey}\r\n\r\n");
        Assert.Equal(200, bobRead.Status);
        Assert.False(JsonDocument.Parse(bobRead.Body).RootElement.GetProperty("headers").TryGetProperty("X-Partner", out _));
        var anonymous = await Send(gateway, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(200, anonymous.Status); // no consumer: consumer conditions do not hold
    }

    [Fact]
    public void PlainKeysInTheConfig_AreRefused_WithTheirPath()
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load(Config("http://127.0.0.1:9", $"\"{AliceKey}\""));
        Assert.Contains(loaded.Errors, e => e.Path == "$.consumers[0].apiKeys[0]" && e.Message.Contains("hash-key"));
    }

    [Fact]
    public async Task HashKeyAndNewKey_Commands()
    {
        var o = new StringWriter();
        Assert.Equal(0, await Cli.RunAsync(["hash-key", "abc"], o, new StringWriter()));
        Assert.Equal("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", o.ToString().Trim());
        var n = new StringWriter();
        Assert.Equal(0, await Cli.RunAsync(["new-key"], n, new StringWriter()));
        var lines = n.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var key = lines[0]["key:".Length..].Trim();
        Assert.Equal(ApiKeys.Hash(key), lines[1]["hash:".Length..].Trim());
        Assert.True(key.Length >= 40);
    }
}
