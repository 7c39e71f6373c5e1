using System.Text;
using System.Text.Json;
using FastGate.Security;
using FastGate.Tests.Infrastructure;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace FastGate.Tests.Security;

/// <summary>
/// A JWT identity is (issuer, subject), never an API-key consumer by accident: a token becomes a consumer only when a
/// consumer lists it; otherwise it is a subject, with its own rule condition, limit key and forwarded headers. Real
/// gateway, real JWKS server, real upstream (which echoes the headers it received), raw sockets.
/// </summary>
public class JwtIdentityTests
{
    private const string PartnerSecret = "partner-shared-secret-0123456789abcdef";
    private const string OpsKey = "ops-api-key-0123456789";

    private static string Config(string upstream, string jwksUri, string extra = "") => $$"""
        {
          {{extra}}
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "jwtIssuers": [
            { "id": "corp", "issuer": "{{JwksServer.Issuer}}", "audiences": ["orders-api"], "jwksUri": "{{jwksUri}}", "requireHttps": false, "algorithms": ["RS256"] },
            { "id": "partner", "issuer": "https://partner.test/", "audiences": ["orders-api"], "secret": "{{PartnerSecret}}" }
          ],
          "consumers": [
            { "id": "ops", "apiKeys": [ "{{ApiKeys.Hash(OpsKey)}}" ],
              "jwt": [ { "issuer": "corp", "subject": "ops-bot" }, { "issuer": "https://partner.test/", "claim": "client_id", "values": ["ci-runner"] } ] }
          ],
          "rateLimits": [
            { "id": "per-subject", "rate": 1, "per": "1h", "burst": 1, "key": "subject", "missingKey": "allow" },
            { "id": "per-consumer", "rate": 1, "per": "1h", "burst": 1, "key": "consumer", "missingKey": "allow" }
          ],
          "policies": [
            { "id": "ops-only", "match": { "paths": ["/ops/*"], "not": { "consumers": ["ops"] } }, "actions": [ { "type": "deny" } ] },
            { "id": "no-partner-ops", "match": { "paths": ["/subjects/*"], "subjects": [ { "issuer": "partner", "subject": "ops" } ] },
              "actions": [ { "type": "deny" } ] }
          ],
          "routes": [
            { "id": "ops", "match": { "pathPrefix": "/ops" }, "cluster": "backend", "stripPrefix": true },
            { "id": "subjects", "match": { "pathPrefix": "/subjects" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"] },
            { "id": "by-subject", "match": { "pathPrefix": "/by-subject" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"], "rateLimits": ["per-subject"] },
            { "id": "by-consumer", "match": { "pathPrefix": "/by-consumer" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt"], "rateLimits": ["per-consumer"] },
            { "id": "api", "match": { "pathPrefix": "/api" }, "cluster": "backend", "stripPrefix": true, "auth": ["jwt", "apiKey"] }
          ]
        }
        """;

    private static async Task<(DemoUpstreamServer Upstream, JwksServer Jwks, TestGateway Gateway, TestSigningKey Key)> Start(string extra = "")
    {
        var key = new TestSigningKey("k1");
        var upstream = await DemoUpstreamServer.StartAsync();
        var jwks = await JwksServer.StartAsync(key);
        var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), jwks.JwksUri, extra));
        return (upstream, jwks, gateway, key);
    }

    private static string PartnerToken(Dictionary<string, object> claims)
    {
        var payload = new Dictionary<string, object>
        {
            ["iss"] = "https://partner.test/", ["aud"] = "orders-api", ["sub"] = "partner-app",
            ["exp"] = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeSeconds(),
        };
        foreach (var (k, v) in claims) payload[k] = v;
        return new JsonWebTokenHandler().CreateToken(JsonSerializer.Serialize(payload),
            new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(PartnerSecret)), SecurityAlgorithms.HmacSha256));
    }

    private static JsonElement Headers(RawResponse r) => JsonDocument.Parse(r.Body).RootElement.GetProperty("headers");

    private static string? Header(JsonElement headers, string name) =>
        headers.EnumerateObject().FirstOrDefault(p => p.Name.Equals(name, StringComparison.OrdinalIgnoreCase)) is { Value.ValueKind: JsonValueKind.String } p
            ? p.Value.GetString() : null;

    [Fact]
    public async Task UnmappedSubject_IsNotTheApiKeyConsumer_IsForwardedAsASubject_ClientIdentityHeadersStripped()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        var ops = Tokens.Create(key, new() { ["sub"] = "ops" });

        // the API-key consumer "ops" passes the consumers rule; a token whose sub is "ops" does not
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/ops/hello", null, $"X-API-Key: {OpsKey}\r\n")).Status);
        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/ops/hello", ops)).Status);

        var r = await Tokens.SendAsync(gateway, "/api/echo", ops,
            "X-Consumer-Id: ops\r\nX-Subject-Id: admin\r\nx-subject-issuer: https://evil.test/\r\nX_Subject_Id: admin\r\n");
        Assert.Equal(200, r.Status);
        var h = Headers(r);
        Assert.Null(Header(h, "X-Consumer-Id"));
        Assert.Equal("ops", Header(h, "X-Subject-Id"));
        Assert.Equal(JwksServer.Issuer, Header(h, "X-Subject-Issuer"));
        Assert.Null(Header(h, "X_Subject_Id")); // a WSGI upstream would read it as X-Subject-Id

        // an API key still forwards its consumer, and never a subject
        var byKey = Headers(await Tokens.SendAsync(gateway, "/api/echo", null, $"X-API-Key: {OpsKey}\r\nX-Subject-Id: admin\r\n"));
        Assert.Equal("ops", Header(byKey, "X-Consumer-Id"));
        Assert.Null(Header(byKey, "X-Subject-Id"));
    }

    [Fact]
    public async Task ConsumerMappedTokens_BySubjectOrByClaim_AreThatConsumer()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        var bySubject = await Tokens.SendAsync(gateway, "/ops/echo", Tokens.Create(key, new() { ["sub"] = "ops-bot" }));
        Assert.Equal(200, bySubject.Status);
        Assert.Equal("ops", Header(Headers(bySubject), "X-Consumer-Id"));
        Assert.Equal("ops-bot", Header(Headers(bySubject), "X-Subject-Id"));

        var byClaim = await Tokens.SendAsync(gateway, "/ops/echo", PartnerToken(new() { ["client_id"] = "ci-runner" }));
        Assert.Equal(200, byClaim.Status);
        Assert.Equal("ops", Header(Headers(byClaim), "X-Consumer-Id"));
        Assert.Equal("https://partner.test/", Header(Headers(byClaim), "X-Subject-Issuer"));

        // the mapping names its issuer: the same subject or claim from another issuer is not the consumer
        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/ops/echo", PartnerToken(new() { ["sub"] = "ops-bot" }))).Status);
        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/ops/echo", Tokens.Create(key, new() { ["client_id"] = "ci-runner" }))).Status);
        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/ops/echo", PartnerToken(new() { ["client_id"] = "other" }))).Status);
    }

    [Fact]
    public async Task SubjectsRule_NamesIssuerAndSubject()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        Assert.Equal(403, (await Tokens.SendAsync(gateway, "/subjects/hello", PartnerToken(new() { ["sub"] = "ops" }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/subjects/hello", Tokens.Create(key, new() { ["sub"] = "ops" }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/subjects/hello", PartnerToken(new() { ["sub"] = "ops2" }))).Status);
    }

    [Fact]
    public async Task SubjectLimitKey_SeparatesIssuers_ConsumerLimitKeyIgnoresUnmappedTokens()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        // burst 1 per (issuer, subject): the same sub from two issuers has two buckets
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/by-subject/hello", Tokens.Create(key, new() { ["sub"] = "ops" }))).Status);
        Assert.Equal(429, (await Tokens.SendAsync(gateway, "/by-subject/hello", Tokens.Create(key, new() { ["sub"] = "ops", ["jti"] = "2" }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/by-subject/hello", PartnerToken(new() { ["sub"] = "ops" }))).Status);
        Assert.Equal(429, (await Tokens.SendAsync(gateway, "/by-subject/hello", PartnerToken(new() { ["sub"] = "ops", ["jti"] = "2" }))).Status);

        // a consumer key counts consumers only: unmapped tokens have no consumer (missingKey: allow), mapped ones do
        for (int i = 0; i < 3; i++)
            Assert.Equal(200, (await Tokens.SendAsync(gateway, "/by-consumer/hello", Tokens.Create(key, new() { ["sub"] = "ops", ["jti"] = "c" + i }))).Status);
        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/by-consumer/hello", Tokens.Create(key, new() { ["sub"] = "ops-bot" }))).Status);
        Assert.Equal(429, (await Tokens.SendAsync(gateway, "/by-consumer/hello", PartnerToken(new() { ["client_id"] = "ci-runner" }))).Status);
    }

    [Fact]
    public async Task AdminExplain_ReportsSubjectsAndConsumersLikeTheRequestPath()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        using var admin = gateway.CreateAdminClient();
        async Task<JsonElement> Explain(string path, string token) => JsonDocument.Parse(await admin.GetStringAsync(
            $"/admin/explain?path={path}&header=" + Uri.EscapeDataString("Authorization: Bearer " + token))).RootElement;

        var subject = await Explain("/ops/x", Tokens.Create(key, new() { ["sub"] = "ops" }));
        Assert.Equal(JsonValueKind.Null, subject.GetProperty("consumer").ValueKind);
        Assert.Equal("ops", subject.GetProperty("subject").GetProperty("subject").GetString());
        Assert.Equal("corp", subject.GetProperty("subject").GetProperty("issuer").GetString());
        Assert.Equal("deny", subject.GetProperty("decision").GetString());

        var mapped = await Explain("/ops/x", Tokens.Create(key, new() { ["sub"] = "ops-bot" }));
        Assert.Equal("ops", mapped.GetProperty("consumer").GetString());
        Assert.Equal("forward", mapped.GetProperty("decision").GetString());
    }

    [Fact]
    public async Task AccessLog_ShowsConsumerOnlyForConsumers_AndTheSubjectOfEveryToken()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fastgate-jwt-log-{Guid.NewGuid():N}.jsonl");
        var (upstream, jwks, gateway, key) = await Start($$"""
            "accessLog": { "path": "{{path.Replace("\\", "\\\\")}}", "sampleRate": 1 },
            """);
        await using var _u = upstream; await using var _j = jwks;
        try
        {
            Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(key, new() { ["sub"] = "ops" }))).Status);
            Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(key, new() { ["sub"] = "ops-bot" }))).Status);
            Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", null, $"X-API-Key: {OpsKey}\r\n")).Status);
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= 3, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }
        try
        {
            var lines = File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement).ToList();
            Assert.Equal(3, lines.Count);
            Assert.Equal("", lines[0].GetProperty("consumer").GetString());
            Assert.Equal("corp:ops", lines[0].GetProperty("subject").GetString());
            Assert.Equal("ops", lines[1].GetProperty("consumer").GetString());
            Assert.Equal("corp:ops-bot", lines[1].GetProperty("subject").GetString());
            Assert.Equal("ops", lines[2].GetProperty("consumer").GetString());
            Assert.False(lines[2].TryGetProperty("subject", out _));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task CritHeader_AnyCriticalExtension_IsRefused()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;
        var handler = new JsonWebTokenHandler();
        string Signed(object crit, Dictionary<string, object>? more = null)
        {
            var header = new Dictionary<string, object> { ["crit"] = crit };
            foreach (var (k, v) in more ?? []) header[k] = v;
            return handler.CreateToken(Tokens.DefaultPayload("crit-user"), new SigningCredentials(key.Key, SecurityAlgorithms.RsaSha256), header);
        }

        Assert.Equal(200, (await Tokens.SendAsync(gateway, "/api/hello", Tokens.Create(key))).Status);
        foreach (var token in new[]
                 {
                     Signed(new[] { "x-unknown" }, new() { ["x-unknown"] = 1 }),
                     Signed(new[] { "b64" }, new() { ["b64"] = true }),
                     Signed(Array.Empty<string>()),
                     Signed(new[] { "exp" }),
                     Signed(new[] { "alg" }),
                     Signed("x-unknown"),
                 })
        {
            var r = await Tokens.SendAsync(gateway, "/api/hello", token);
            Assert.Equal(401, r.Status);
            Assert.Contains("error=\"invalid_token\"", r.Headers["WWW-Authenticate"]);
        }
    }

    [Fact]
    public async Task Subject_NonAsciiIsPercentEncoded_ControlCharactersRefused()
    {
        var (upstream, jwks, gateway, key) = await Start();
        await using var _u = upstream; await using var _j = jwks; await using var _g = gateway;

        foreach (var (sub, forwarded) in new[] { ("café", "caf%C3%A9"), ("a%41", "a%2541"), ("a b", "a%20b"), ("用户", "%E7%94%A8%E6%88%B7") })
        {
            var r = await Tokens.SendAsync(gateway, "/api/echo", Tokens.Create(key, new() { ["sub"] = sub }));
            Assert.Equal(200, r.Status);
            Assert.Equal(forwarded, Header(Headers(r), "X-Subject-Id"));
        }
        // JSON escapes as the token carries them: CR LF, LF, NUL, TAB, DEL, a C1 control (NEL), a lone surrogate
        foreach (var sub in new[] { "a\\r\\nX-Admin: 1", "a\\nb", "a\\u0000b", "a\\tb", "a\\u007fb", "a\\u0085b", "\\ud800x" })
        {
            var payload = Tokens.DefaultPayload("SUB").Replace("\"SUB\"", "\"" + sub + "\"", StringComparison.Ordinal);
            var token = new JsonWebTokenHandler().CreateToken(payload, new SigningCredentials(key.Key, SecurityAlgorithms.RsaSha256));
            var r = await Tokens.SendAsync(gateway, "/api/echo", token);
            Assert.Equal(401, r.Status);
            Assert.Contains("error=\"invalid_token\"", r.Headers["WWW-Authenticate"]);
        }
    }
}
