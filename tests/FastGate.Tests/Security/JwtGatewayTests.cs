using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Security;
using FastGate.Tests.Infrastructure;
using FastGate.Tests.RateLimiting;
using Microsoft.IdentityModel.Tokens;

namespace FastGate.Tests.Security;

/// <summary>
/// Bearer tokens through the real gateway: a real JWKS server, a real upstream, raw sockets. Each test uses its own
/// issuer id so the per-issuer metrics it reads are its own (tests run in parallel in one process).
/// </summary>
public class JwtGatewayTests
{
    private const string PartnerSecret = "partner-shared-secret-0123456789abcdef";

    private static string Config(string upstream, string issuerId, string keySource, string extra = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "jwtIssuers": [
            { "id": "{{issuerId}}", "issuer": "{{JwksServer.Issuer}}", "audiences": ["orders-api"], {{keySource}}, "algorithms": ["RS256"] },
            { "id": "partner", "issuer": "https://partner.test/", "audiences": ["orders-api"], "secret": "{{PartnerSecret}}" }
          ],
          "jwt": { "maxTokenBytes": 4096 },
          "rateLimits": [ { "id": "per-tenant", "rate": 1, "per": "1h", "burst": 2, "key": "claim:tenant", "missingKey": "allow" } ],
          "policies": [
            { "id": "admins-only", "match": { "paths": ["/admin/*"], "not": { "claims": { "role": ["admin"] } } }, "actions": [ { "type": "deny" } ] }
          ],
          "routes": [
            { "id": "api", "match": { "pathPrefix": "/api" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"] },
            { "id": "corp-only", "match": { "pathPrefix": "/corp" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt:{{issuerId}}"],
              "rateLimits": ["per-tenant"] },
            { "id": "scoped", "match": { "pathPrefix": "/scoped" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"], "scopes": ["orders:write"] },
            { "id": "admin", "match": { "pathPrefix": "/admin" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"] },
            { "id": "public", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ]
          {{extra}}
        }
        """;

    private static async Task<(DemoUpstreamServer Upstream, JwksServer Jwks, TestGateway Gateway, TestSigningKey Key)> Start(string issuerId)
    {
        var key = new TestSigningKey("k1");
        var upstream = await DemoUpstreamServer.StartAsync();
        var jwks = await JwksServer.StartAsync(key);
        var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), issuerId,
            $"\"jwksUri\": \"{jwks.JwksUri}\", \"requireHttps\": false"));
        return (upstream, jwks, gateway, key);
    }

    private static double Metric(string exposition, string name, string labels)
    {
        foreach (var line in exposition.Split('\n'))
            if (line.StartsWith(name + "{", StringComparison.Ordinal) && line.Contains(labels, StringComparison.Ordinal))
                return double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    private static string PartnerToken(Dictionary<string, object>? claims = null)
    {
        var payload = new Dictionary<string, object>
        {
            ["iss"] = "https://partner.test/", ["aud"] = "orders-api", ["sub"] = "partner-app",
            ["exp"] = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeSeconds(),
        };
        foreach (var (k, v) in claims ?? []) payload[k] = v;
        return new Microsoft.IdentityModel.JsonWebTokens.JsonWebTokenHandler().CreateToken(JsonSerializer.Serialize(payload),
            new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(PartnerSecret)), SecurityAlgorithms.HmacSha256));
    }

    [Fact]
    public async Task ValidToken_IsForwardedWithItsSubject_SpoofedConsumerRemoved_SecondUseServedFromCache()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-valid");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        var token = Tokens.Create(key, new() { ["sub"] = "alice" });

        var first = await Tokens.SendAsync(gateway, "/api/echo", token, "X-Consumer-Id: admin\r\nX-Subject-Id: admin\r\n");
        Assert.Equal(200, first.Status);
        var headers = JsonDocument.Parse(first.Body).RootElement.GetProperty("headers");
        // a token no consumer owns is a subject: forwarded as such, never as a consumer
        Assert.Equal("alice", headers.GetProperty("X-Subject-Id").GetString());
        Assert.False(headers.TryGetProperty("X-Consumer-Id", out _));
        Assert.Equal("Bearer " + token, headers.GetProperty("Authorization").GetString());

        var second = await Tokens.SendAsync(gateway, "/api/echo", token);
        Assert.Equal(200, second.Status);
        var metrics = await gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Metric(metrics, "fastgate_jwt_validations_total", "issuer=\"corp-valid\",result=\"valid\""));
    }

    [Fact]
    public async Task AdminExplain_ValidatesBearerTokensLikeTheRequestPath()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-explain");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        using var admin = gateway.CreateAdminClient();
        async Task<JsonElement> Explain(string path, string? token) => JsonDocument.Parse(await admin.GetStringAsync(
            $"/admin/explain?path={path}" + (token is null ? "" : "&header=" + Uri.EscapeDataString("Authorization: Bearer " + token)))).RootElement;

        var valid = await Explain("/api/x", Tokens.Create(key, new() { ["sub"] = "carol" }));
        Assert.Equal("forward", valid.GetProperty("decision").GetString());
        Assert.Equal("carol", valid.GetProperty("subject").GetProperty("subject").GetString());
        Assert.Equal(JsonValueKind.Null, valid.GetProperty("consumer").ValueKind);

        var missing = await Explain("/api/x", null);
        Assert.Equal(401, missing.GetProperty("status").GetInt32());
        Assert.Equal("authentication_required", missing.GetProperty("reason").GetString());

        var forged = await Explain("/api/x", "not.a.token");
        Assert.Equal(401, forged.GetProperty("status").GetInt32());
        Assert.Equal("invalid_token", forged.GetProperty("reason").GetString());

        var unscoped = await Explain("/scoped/x", Tokens.Create(key));
        Assert.Equal(403, unscoped.GetProperty("status").GetInt32());
        Assert.Equal("insufficient_scope", unscoped.GetProperty("reason").GetString());
        Assert.Equal("forward", (await Explain("/scoped/x", Tokens.Create(key, new() { ["scope"] = "orders:read orders:write" }))).GetProperty("decision").GetString());
    }

    [Fact]
    public async Task MissingOrGarbageToken_Is401WithBearerChallenge_PublicRouteUnaffected()
    {
        var (upstream, jwks, gateway, _) = await Start("corp-missing");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        var missing = await Tokens.SendAsync(gateway, "/api/echo", null);
        Assert.Equal(401, missing.Status);
        Assert.Contains("Bearer realm=\"fastgate\"", missing.Headers["WWW-Authenticate"]);
        Assert.Contains("authentication_required", missing.Body);

        var garbage = await Tokens.SendAsync(gateway, "/api/echo", "not.a.token");
        Assert.Equal(401, garbage.Status);
        Assert.Contains("error=\"invalid_token\"", garbage.Headers["WWW-Authenticate"]);

        // a route without auth ignores a bad token
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/hello", "not.a.token")).Status);
    }

    [Fact]
    public async Task AttackList_EveryForgedOrInvalidToken_IsRefused()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-attacks");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var valid = Tokens.Create(key);
        var parts = valid.Split('.');
        var publicPem = Encoding.UTF8.GetBytes(key.PublicPem());
        string hs256Header = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
        string hs256Payload = Tokens.DefaultPayload();
        string signingInput = Base64UrlEncoder.Encode(hs256Header) + "." + Base64UrlEncoder.Encode(hs256Payload);
        var attacks = new Dictionary<string, string>
        {
            ["alg none"] = Tokens.Raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", Tokens.DefaultPayload(), null),
            ["alg none with kid"] = Tokens.Raw("{\"alg\":\"none\",\"kid\":\"k1\"}", Tokens.DefaultPayload(), null),
            ["HS256 signed with the RSA public key"] = signingInput + "." + Base64UrlEncoder.Encode(HMACSHA256.HashData(publicPem, Encoding.ASCII.GetBytes(signingInput))),
            ["expired"] = Tokens.Create(key, new() { ["exp"] = now - 3600 }),
            ["nbf in the future"] = Tokens.Create(key, new() { ["nbf"] = now + 3600 }),
            ["no exp"] = Tokens.Create(key, new() { ["exp"] = null! }),
            ["wrong iss"] = Tokens.Create(key, new() { ["iss"] = "https://evil.test/" }),
            ["wrong aud"] = Tokens.Create(key, new() { ["aud"] = "billing-api" }),
            ["tampered payload"] = parts[0] + "." + Base64UrlEncoder.Encode(Tokens.DefaultPayload(sub: "root")) + "." + parts[2],
            ["signature stripped"] = parts[0] + "." + parts[1] + ".",
            ["signed by another key with the same kid"] = Tokens.Create(new TestSigningKey("k1")),
            ["oversized"] = Tokens.Create(key, new() { ["pad"] = new string('x', 5000) }),
            ["subject with a line break"] = Tokens.Create(key, new() { ["sub"] = "a\r\nX-Admin: 1" }),
            ["jku pointing elsewhere"] = Tokens.Raw($"{{\"alg\":\"RS256\",\"kid\":\"evil\",\"jku\":\"{jwks.BaseUrl}/jwks\"}}", Tokens.DefaultPayload(), new byte[256]),
        };
        foreach (var (name, token) in attacks)
        {
            var r = await Tokens.SendAsync(gateway, "/api/echo", token);
            Assert.True(r.Status == 401, $"{name}: expected 401, got {r.Status}");
            Assert.True(r.Headers["WWW-Authenticate"].Contains("invalid_token"), $"{name}: {r.Headers["WWW-Authenticate"]}");
        }
        // and the real token still passes
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/echo", valid)).Status);
    }

    [Fact]
    public async Task UnknownKid_OneRefreshThenReject_AFloodOfUnknownKidsStillOneRefresh()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-kid");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(key))).Status);
        Assert.Equal(1, jwks.JwksFetches); // fetched once at start

        var stranger = new TestSigningKey("ghost-0");
        Assert.Equal(401, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(stranger))).Status);
        Assert.Equal(2, jwks.JwksFetches); // one refresh for the unknown kid

        for (int i = 1; i <= 40; i++)
            Assert.Equal(401, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(new TestSigningKey("ghost-" + i)))).Status);
        Assert.Equal(2, jwks.JwksFetches); // at most one refresh per 5 minutes, however many kids
        var metrics = await gateway.ScrapeMetricsAsync();
        Assert.Equal(41, Metric(metrics, "fastgate_jwt_validations_total", "issuer=\"corp-kid\",result=\"unknown_kid\""));
    }

    [Fact]
    public async Task KeyRotation_NewKidTriggersRefreshAndPasses_RetiredKeyRefused()
    {
        var (upstream, jwks, gateway, k1) = await Start("corp-rotate");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(k1))).Status);

        var k2 = new TestSigningKey("k2");
        jwks.Publish(k2); // the issuer rotates: k1 retired
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(k2, new() { ["sub"] = "after-rotation" }))).Status);
        Assert.Equal(2, jwks.JwksFetches);
        // a new token signed with the retired key is refused (a token validated before the rotation stays cached until its exp)
        Assert.Equal(401, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(k1, new() { ["sub"] = "late" }))).Status);
    }

    [Fact]
    public async Task Scopes_ValidTokenWithoutRequiredScopeIs403_WithItIs200()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-scope");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        var readOnly = await Tokens.SendAsync(gateway, "/scoped/hello", Tokens.Create(key, new() { ["scope"] = "orders:read" }));
        Assert.Equal(403, readOnly.Status);
        Assert.Contains("insufficient_scope", readOnly.Headers["WWW-Authenticate"]);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/scoped/hello", Tokens.Create(key, new() { ["scope"] = "orders:read orders:write" }))).Status);
        // "scp" as an array (Azure AD style) counts too
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/scoped/hello", Tokens.Create(key, new() { ["scp"] = new[] { "orders:write" } }))).Status);
        Assert.Equal(401, (await Tokens.SendAsync(gateway, "/scoped/hello", null)).Status);
    }

    [Fact]
    public async Task ClaimsInPolicy_AndClaimKeyedRateLimit_AndIssuerSpecificScheme()
    {
        var (upstream, jwks, gateway, key) = await Start("corp-claims");
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        // policy: /admin/* needs role=admin
        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/admin/hello", Tokens.Create(key, new() { ["role"] = "user" }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/admin/hello", Tokens.Create(key, new() { ["role"] = "admin" }))).Status);

        // claim:tenant limiter: two per tenant, counted per tenant, whoever the subject
        for (int i = 0; i < 2; i++)
            Assert.Equal(200, (await Tokens.SendAsync(gateway, "/corp/hello", Tokens.Create(key, new() { ["tenant"] = "acme", ["sub"] = "u" + i }))).Status);
        Assert.Equal(429, (await Tokens.SendAsync(gateway, "/corp/hello", Tokens.Create(key, new() { ["tenant"] = "acme", ["sub"] = "u9" }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/corp/hello", Tokens.Create(key, new() { ["tenant"] = "globex" }))).Status);

        // "jwt:<id>" accepts that issuer only; "jwt" accepts any configured issuer
        Assert.Equal(401, (await Tokens.SendAsync(gateway, "/corp/hello", PartnerToken())).Status);
        var partner = await Tokens.SendAsync(gateway, "/api/echo", PartnerToken());
        Assert.Equal(200, partner.Status);
        Assert.Equal("partner-app", JsonDocument.Parse(partner.Body).RootElement.GetProperty("headers").GetProperty("X-Subject-Id").GetString());
    }

    [Fact]
    public async Task DiscoveryDocument_AndStaticPemKeys_AreKeySources()
    {
        var key = new TestSigningKey("k1");
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var jwks = await JwksServer.StartAsync(key);
        string u = upstream.Address.ToString().TrimEnd('/');

        await using (var viaDiscovery = await TestGateway.StartAsync(Config(u, "corp-discovery", $"\"discovery\": \"{jwks.DiscoveryUri}\", \"requireHttps\": false")
                         .Replace($"\"issuer\": \"{JwksServer.Issuer}\", ", "")))
        {
            Assert.Equal(200, (await Tokens.SendAsync(viaDiscovery, "/api/hello", Tokens.Create(key))).Status);
            Assert.Equal(401, (await Tokens.SendAsync(viaDiscovery, "/api/hello", Tokens.Create(key, new() { ["iss"] = "https://other.test/" }))).Status);
        }

        var dir = Directory.CreateTempSubdirectory("fastgate-jwt-");
        try
        {
            File.WriteAllText(Path.Combine(dir.FullName, "corp.pem"), key.PublicPem());
            var config = Config(u, "corp-pem", "\"keys\": [\"corp.pem\"]");
            var loaded = ConfigLoader.Load(config, dir.FullName);
            Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
            await using var viaPem = await TestGateway.StartAsync(config.Replace("\"corp.pem\"", JsonSerializer.Serialize(Path.Combine(dir.FullName, "corp.pem"))));
            Assert.Equal(200, (await Tokens.SendAsync(viaPem, "/api/hello", Tokens.Create(key))).Status);
            Assert.Equal(401, (await Tokens.SendAsync(viaPem, "/api/hello", Tokens.Create(new TestSigningKey("k1")))).Status);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void InvalidJwtConfig_ReportsEveryErrorWithItsPath()
    {
        const string config = """
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
              "jwtIssuers": [
                { "id": "a", "issuer": "https://a/", "audiences": ["x"], "jwksUri": "http://a/jwks", "algorithms": ["none", "HS256", "XY1"] },
                { "id": "b", "issuer": "https://b/", "audiences": [], "jwksUri": "https://b/jwks", "secret": "short" }
              ],
              "routes": [
                { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "b", "auth": ["apiKey", "bearer"], "scopes": ["s"] },
                { "id": "r2", "match": { "pathPrefix": "/x" }, "cluster": "b", "auth": ["jwt:nope"] }
              ],
              "policies": [ { "id": "p", "match": { "paths": ["/x"] }, "actions": [ { "type": "requireAuth", "schemes": ["apiKey"], "scopes": ["s"] } ] } ]
            }
            """;
        var loaded = ConfigLoader.Load(config);
        Assert.False(loaded.IsValid);
        var paths = loaded.Errors.Select(e => e.Path).ToList();
        string all = string.Join("\n", loaded.Errors);
        Assert.Contains("$.jwtIssuers[0].jwksUri", paths);          // http without requireHttps: false
        Assert.Contains("$.jwtIssuers[0].algorithms[0]", paths);    // none
        Assert.Contains("$.jwtIssuers[0].algorithms[1]", paths);    // HS256 with an asymmetric key source
        Assert.Contains("$.jwtIssuers[0].algorithms[2]", paths);    // unsupported
        Assert.Contains("$.jwtIssuers[1]", paths);                  // two key sources
        Assert.Contains("$.jwtIssuers[1].audiences", paths);
        Assert.Contains("$.jwtIssuers[1].secret", paths);           // too short
        Assert.Contains("$.routes[1].auth[0]", paths);              // unknown issuer id
        Assert.Contains("$.routes[0].auth[1]", paths);              // unknown scheme
        Assert.Contains("$.routes[0].scopes", paths);               // scopes without jwt
        Assert.Contains("$.policies[0].actions[0].scopes", paths);
        Assert.Contains("never accepted", all);
    }
}

/// <summary>The key source's refresh rules, on a clock the test moves.</summary>
public class JwtKeySourceTests
{
    [Fact]
    public async Task UnknownKidRefresh_AtMostOncePerInterval_AndAFailedFetchKeepsTheLastGoodSet()
    {
        var k1 = new TestSigningKey("k1");
        await using var jwks = await JwksServer.StartAsync(k1);
        var time = FakeTime.Create();
        var config = new JwtIssuerConfig { Id = "t", Issuer = JwksServer.Issuer, Audiences = ["a"], JwksUri = jwks.JwksUri, RequireHttps = false };
        var source = new JwtKeySource(config, ".", time, null);
        await source.InitialLoad;
        Assert.Contains("k1", (IReadOnlySet<string>)source.Current!.KeyIds);

        var first = source.RefreshForUnknownKid();
        Assert.NotNull(first);
        await first!;
        Assert.Null(source.RefreshForUnknownKid());            // within 5 minutes: no fetch
        time.Advance(TimeSpan.FromMinutes(4));
        Assert.Null(source.RefreshForUnknownKid());
        time.Advance(TimeSpan.FromMinutes(1));
        var second = source.RefreshForUnknownKid();           // 5 minutes later: one more
        Assert.NotNull(second);
        await second!;
        Assert.Equal(3, jwks.JwksFetches);

        // the scheduled refresh fails: the last good set stays in use
        jwks.Failing = true;
        time.Advance(TimeSpan.FromHours(1));
        source.Tick();
        await source.PendingFetch;
        Assert.Equal(4, jwks.JwksFetches);
        Assert.Contains("k1", (IReadOnlySet<string>)source.Current!.KeyIds);

        // and the next scheduled fetch picks up a rotation
        jwks.Failing = false;
        jwks.Publish(new TestSigningKey("k2"));
        time.Advance(TimeSpan.FromMinutes(1)); // a failed fetch is retried after 30 s, not an hour
        source.Tick();
        await source.PendingFetch;
        Assert.Equal(["k2"], source.Current!.KeyIds.ToArray());
    }
}
