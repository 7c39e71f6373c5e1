using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using FastGate.Security;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

/// <summary>
/// Client certificates (mTLS) over real sockets: a device CA and a foreign CA made in the test, devices allowlisted by
/// SPKI hash or thumbprint, the device id in routes, rules, rate-limit keys and the upstream request.
/// </summary>
public sealed class MtlsGatewayTests : IDisposable
{
    private readonly TestCertificateAuthority _serverCa = new("FastGate Test Server CA");
    private readonly TestCertificateAuthority _deviceCa = new("FastGate Test Device CA");
    private readonly TestCertificateAuthority _foreignCa = new("Somebody Else's CA");
    private readonly X509Certificate2 _sensor;
    private readonly X509Certificate2 _kiosk;
    private readonly X509Certificate2 _unlisted;
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("fastgate-mtls-");

    public MtlsGatewayTests()
    {
        _sensor = _deviceCa.IssueClientCertificate("sensor-1");
        _kiosk = _deviceCa.IssueClientCertificate("kiosk-7");
        _unlisted = _deviceCa.IssueClientCertificate("stolen-laptop");
    }

    public void Dispose()
    {
        foreach (var d in new IDisposable[] { _sensor, _kiosk, _unlisted, _serverCa, _deviceCa, _foreignCa }) d.Dispose();
        try { _dir.Delete(recursive: true); } catch (IOException) { }
    }

    private string Config(string upstream, string mode)
    {
        using var server = _serverCa.IssueServerCertificate("localhost");
        var (cert, key) = TestCertificateAuthority.WritePemPair(server, _dir.FullName);
        var clientCa = Path.Combine(_dir.FullName, "devices-ca.pem");
        File.WriteAllText(clientCa, _deviceCa.Certificate.ExportCertificatePem());
        var tls = JsonSerializer.Serialize(new { certificate = cert, key, clientCertificate = mode, clientCa });
        return $$"""
            {
              "listeners": [ { "name": "mtls", "address": "127.0.0.1:0", "tls": {{tls}} } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
              "devices": [
                { "id": "sensor-1", "spkiSha256": "{{ClientCertificateFingerprints.SpkiSha256Hex(_sensor)}}" },
                { "id": "kiosk-7", "thumbprint": "{{_kiosk.Thumbprint}}" }
              ],
              "rateLimits": [ { "id": "per-device", "rate": 1, "per": "1h", "burst": 2, "key": "device", "missingKey": "allow" } ],
              "policies": [
                { "id": "kiosks-read-only", "match": { "devices": ["kiosk-7"], "methods": ["POST"] }, "actions": [ { "type": "deny", "status": 403 } ] }
              ],
              "routes": [
                { "id": "limited", "match": { "pathPrefix": "/limited" }, "cluster": "backend", "stripPrefix": true, "auth": ["mtls"], "rateLimits": ["per-device"] },
                { "id": "devices", "match": { "pathPrefix": "/device" }, "cluster": "backend", "stripPrefix": true, "auth": ["mtls"] },
                { "id": "public", "match": { "pathPrefix": "/" }, "cluster": "backend" }
              ]
            }
            """;
    }

    private static async Task<RawResponse> Send(RawClient client, string method, string path, string extraHeaders = "")
    {
        await client.SendAsync($"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{(method == "POST" ? "Content-Length: 0\r\n" : "")}{extraHeaders}\r\n");
        return await client.ReadResponseAsync();
    }

    /// <summary>
    /// A refused client certificate ends the connection before any response: in TLS 1.2 the handshake fails, in
    /// TLS 1.3 the client learns it on its first read. Either way no HTTP response arrives.
    /// </summary>
    private static async Task AssertRefused(TestGateway gateway, X509Certificate2 trustedServerCa, X509Certificate2? clientCertificate)
    {
        RawClient client;
        try
        {
            client = await RawClient.ConnectTlsAsync(gateway.EndPoint, trustedServerCa, clientCertificate);
        }
        catch (Exception e) when (e is System.Security.Authentication.AuthenticationException or IOException)
        {
            return;
        }
        using (client)
        {
            await Assert.ThrowsAnyAsync<Exception>(async () =>
            {
                await client.SendAsync("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
                await client.ReadResponseAsync();
            });
        }
    }

    [Fact]
    public async Task Required_NoCertificateAndForeignCa_AreRefusedInTheHandshake()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), "required"));

        await AssertRefused(gateway, _serverCa.Certificate, clientCertificate: null);
        using var foreign = _foreignCa.IssueClientCertificate("sensor-1");
        await AssertRefused(gateway, _serverCa.Certificate, foreign);
        // a certificate of the right CA without the clientAuth usage is refused too
        using var serverUsage = _deviceCa.IssueClientCertificate("sensor-1", eku: "1.3.6.1.5.5.7.3.1");
        await AssertRefused(gateway, _serverCa.Certificate, serverUsage);

        var metrics = await gateway.ScrapeMetricsAsync();
        // no certificate once; a foreign one and one without the clientAuth usage: untrusted twice
        Assert.Contains("fastgate_tls_client_certificate_rejections_total{listener=\"mtls\",reason=\"missing\"} 1\n", metrics);
        Assert.Contains("fastgate_tls_client_certificate_rejections_total{listener=\"mtls\",reason=\"untrusted\"} 2\n", metrics);

        // the allowlisted device gets through on the same listener
        using var sensor = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _sensor);
        Assert.Equal(200, (await Send(sensor, "GET", "/hello")).Status);
    }

    [Fact]
    public async Task AllowedDevices_AreForwarded_SpoofedDeviceHeaderRemoved_UnlistedDeviceGets401()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), "required"));

        // by SPKI hash
        using var sensor = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _sensor);
        var echo = await Send(sensor, "GET", "/device/echo", "X-Device-Id: kiosk-7\r\n");
        Assert.Equal(200, echo.Status);
        var headers = JsonDocument.Parse(echo.Body).RootElement.GetProperty("headers");
        Assert.Equal("sensor-1", headers.GetProperty("X-Device-Id").GetString());

        // by thumbprint
        using var kiosk = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _kiosk);
        var kioskEcho = await Send(kiosk, "GET", "/device/echo");
        Assert.Equal("kiosk-7", JsonDocument.Parse(kioskEcho.Body).RootElement.GetProperty("headers").GetProperty("X-Device-Id").GetString());

        // a certificate from the device CA that is not allowlisted: the TLS session stands, the mtls route refuses
        using var unlisted = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _unlisted);
        Assert.Equal(401, (await Send(unlisted, "GET", "/device/echo")).Status);
        var publicEcho = await Send(unlisted, "GET", "/echo", "X-Device-Id: sensor-1\r\n");
        Assert.Equal(200, publicEcho.Status);
        Assert.False(JsonDocument.Parse(publicEcho.Body).RootElement.GetProperty("headers").TryGetProperty("X-Device-Id", out _));
    }

    [Fact]
    public async Task Optional_WithoutCertificate_PublicRoutesServe_MtlsRoutes401()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), "optional"));
        using var anonymous = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate);
        Assert.Equal(200, (await Send(anonymous, "GET", "/hello")).Status);
        Assert.Equal(401, (await Send(anonymous, "GET", "/device/hello")).Status);

        using var sensor = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _sensor);
        Assert.Equal(200, (await Send(sensor, "GET", "/device/hello")).Status);
        // optional still means a presented certificate must be trusted
        using var foreign = _foreignCa.IssueClientCertificate("sensor-1");
        await AssertRefused(gateway, _serverCa.Certificate, foreign);
    }

    [Fact]
    public async Task AdminExplain_TakesADeviceId()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), "required"));
        using var admin = gateway.CreateAdminClient();
        var none = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?path=/device/x")).RootElement;
        Assert.Equal(401, none.GetProperty("status").GetInt32());
        var sensor = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?path=/device/x&device=sensor-1")).RootElement;
        Assert.Equal("forward", sensor.GetProperty("decision").GetString());
        Assert.Equal("sensor-1", sensor.GetProperty("device").GetString());
        var kioskPost = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?method=POST&path=/device/x&device=kiosk-7")).RootElement;
        Assert.Equal("deny", kioskPost.GetProperty("decision").GetString());
        Assert.Equal("kiosks-read-only", kioskPost.GetProperty("rule").GetString());
    }

    [Fact]
    public async Task DeviceIds_InPolicyRulesAndRateLimitKeys()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), "required"));
        using var kiosk = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _kiosk);
        using var sensor = await RawClient.ConnectTlsAsync(gateway.EndPoint, _serverCa.Certificate, _sensor);

        // the rule names kiosk-7 only
        Assert.Equal(403, (await Send(kiosk, "POST", "/device/echo")).Status);
        Assert.Equal(200, (await Send(sensor, "POST", "/device/echo")).Status);

        // burst 2 per device: the sensor's third request is limited, the kiosk still has its own budget
        for (int i = 0; i < 2; i++) Assert.Equal(200, (await Send(sensor, "GET", "/limited/hello")).Status);
        Assert.Equal(429, (await Send(sensor, "GET", "/limited/hello")).Status);
        Assert.Equal(200, (await Send(kiosk, "GET", "/limited/hello")).Status);
    }
}
