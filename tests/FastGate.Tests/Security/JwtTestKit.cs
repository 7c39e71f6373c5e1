using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using FastGate.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace FastGate.Tests.Security;

/// <summary>A signing key of the test issuer: an RSA key pair with a kid.</summary>
public sealed class TestSigningKey
{
    public TestSigningKey(string kid)
    {
        Kid = kid;
        Rsa = RSA.Create(2048);
        Key = new RsaSecurityKey(Rsa) { KeyId = kid };
    }

    public string Kid { get; }
    public RSA Rsa { get; }
    public RsaSecurityKey Key { get; }

    /// <summary>The public half as a JWK (what a JWKS endpoint publishes).</summary>
    public object PublicJwk()
    {
        var p = Rsa.ExportParameters(false);
        return new { kty = "RSA", use = "sig", alg = "RS256", kid = Kid, n = Base64UrlEncoder.Encode(p.Modulus), e = Base64UrlEncoder.Encode(p.Exponent) };
    }

    public string PublicPem() => Rsa.ExportSubjectPublicKeyInfoPem();
}

/// <summary>
/// A real OpenID provider stand-in: a Kestrel app on a loopback port serving a JWKS document and a discovery
/// document, counting fetches. Tests swap the published keys (rotation) or make it fail.
/// </summary>
public sealed class JwksServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private volatile TestSigningKey[] _keys;
    private int _jwksFetches;

    private JwksServer(WebApplication app, TestSigningKey[] keys)
    {
        _app = app;
        _keys = keys;
    }

    public string BaseUrl { get; private set; } = "";
    public string JwksUri => BaseUrl + "/jwks";
    public string DiscoveryUri => BaseUrl + "/.well-known/openid-configuration";
    public const string Issuer = "https://idp.test/";
    public int JwksFetches => Volatile.Read(ref _jwksFetches);
    /// <summary>When true the JWKS endpoint answers 500.</summary>
    public volatile bool Failing;

    public void Publish(params TestSigningKey[] keys) => _keys = keys;

    public static async Task<JwksServer> StartAsync(params TestSigningKey[] keys)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var server = new JwksServer(app, keys);
        app.MapGet("/jwks", (HttpContext ctx) =>
        {
            Interlocked.Increment(ref server._jwksFetches);
            if (server.Failing) return Results.StatusCode(500);
            var doc = JsonSerializer.Serialize(new { keys = server._keys.Select(k => k.PublicJwk()).ToArray() });
            return Results.Text(doc, "application/json");
        });
        app.MapGet("/.well-known/openid-configuration", () =>
            Results.Text(JsonSerializer.Serialize(new Dictionary<string, string> { ["issuer"] = Issuer, ["jwks_uri"] = server.JwksUri }), "application/json"));
        await app.StartAsync();
        server.BaseUrl = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return server;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

public static class Tokens
{
    private static readonly JsonWebTokenHandler Handler = new() { SetDefaultTimesOnTokenCreation = false };

    /// <summary>A signed token; claims override the defaults (iss, aud, sub, exp in an hour).</summary>
    public static string Create(TestSigningKey key, Dictionary<string, object>? claims = null, string alg = SecurityAlgorithms.RsaSha256)
    {
        var now = DateTimeOffset.UtcNow;
        var payload = new Dictionary<string, object>
        {
            ["iss"] = JwksServer.Issuer,
            ["aud"] = "orders-api",
            ["sub"] = "user-1",
            ["iat"] = now.ToUnixTimeSeconds(),
            ["exp"] = now.AddHours(1).ToUnixTimeSeconds(),
        };
        if (claims is not null)
            foreach (var (k, v) in claims)
            {
                if (v is null) payload.Remove(k);
                else payload[k] = v;
            }
        return Handler.CreateToken(JsonSerializer.Serialize(payload), new SigningCredentials(key.Key, alg));
    }

    /// <summary>A token assembled by hand (header and payload JSON, signature bytes as given): for the attack list.</summary>
    public static string Raw(string headerJson, string payloadJson, byte[]? signature) =>
        Base64UrlEncoder.Encode(headerJson) + "." + Base64UrlEncoder.Encode(payloadJson) + "." + (signature is null ? "" : Base64UrlEncoder.Encode(signature));

    public static string DefaultPayload(string? sub = "user-1", long? exp = null) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["iss"] = JwksServer.Issuer,
        ["aud"] = "orders-api",
        ["sub"] = sub,
        ["exp"] = exp ?? DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeSeconds(),
    });

    public static async Task<RawResponse> SendAsync(TestGateway gateway, string path, string? token, string extraHeaders = "")
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        var auth = token is null ? "" : $"Authorization: Bearer {token}\r\n";
        await client.SendAsync($"GET {path} HTTP/1.1\r\nHost: api.test\r\n{auth}{extraHeaders}\r\n");
        return await client.ReadResponseAsync();
    }

    public static HttpStatusCode Status(RawResponse r) => (HttpStatusCode)r.Status;
}
