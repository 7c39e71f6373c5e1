using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

/// <summary>Listener TLS termination over real sockets: certificates made by a CA in the test, files on disk.</summary>
public sealed class TlsGatewayTests : IDisposable
{
    private readonly TestCertificateAuthority _ca = new("FastGate Test Listener CA");
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("fastgate-tls-");

    public void Dispose()
    {
        _ca.Dispose();
        try { _dir.Delete(recursive: true); } catch (IOException) { }
    }

    private static string Config(string upstream, string tls, string extra = "") => $$"""
        {
          "listeners": [ { "name": "https", "address": "127.0.0.1:0", "tls": {{tls}} }, { "name": "plain", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [
            { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "hsts": "max-age=31536000; includeSubDomains" }
          ] {{extra}}
        }
        """;

    private string PemTls()
    {
        using var server = _ca.IssueServerCertificate("localhost");
        var (cert, key) = TestCertificateAuthority.WritePemPair(server, _dir.FullName);
        return JsonSerializer.Serialize(new { certificate = cert, key });
    }

    /// <summary>The thumbprint of the certificate the gateway presented to this client.</summary>
    internal static string Served(RawClient client) => X509CertificateLoader.LoadCertificate(client.Tls!.RemoteCertificate!.GetRawCertData()).Thumbprint;

    /// <summary>The value of one sample line (name with labels) in a Prometheus text exposition; 0 when absent.</summary>
    private static double MetricValue(string exposition, string sample)
    {
        foreach (var line in exposition.Split('\n'))
            if (line.StartsWith(sample + " ", StringComparison.Ordinal))
                return double.Parse(line[(sample.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    private static async Task<RawResponse> Get(RawClient client, string path, string extraHeaders = "")
    {
        await client.SendAsync($"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extraHeaders}\r\n");
        return await client.ReadResponseAsync();
    }

    [Fact]
    public async Task HttpsListener_ProxiesHttp11OverTls_ForwardedProtoHttps_HstsOnlyOverTls()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), PemTls()));
        var https = gateway.Host.ListenerEndPoints[0];
        var plain = gateway.Host.ListenerEndPoints[1];

        using var client = await RawClient.ConnectTlsAsync(https, _ca.Certificate);
        Assert.Contains(client.Tls!.SslProtocol, new[] { SslProtocols.Tls12, SslProtocols.Tls13 });
        Assert.Equal(SslApplicationProtocol.Http11, client.Tls.NegotiatedApplicationProtocol);
        var hello = await Get(client, "/hello");
        Assert.Equal(200, hello.Status);
        Assert.Equal("Hello, World!", hello.Body);
        Assert.Equal("max-age=31536000; includeSubDomains", hello.Headers["Strict-Transport-Security"]);

        // keep-alive over the same TLS session; the upstream learns the client used https (a client's claim is replaced)
        var echo = await Get(client, "/echo", "X-Forwarded-Proto: http\r\n");
        Assert.Equal(200, echo.Status);
        Assert.Equal("https", JsonDocument.Parse(echo.Body).RootElement.GetProperty("headers").GetProperty("X-Forwarded-Proto").GetString());

        // the plain listener of the same gateway sends no HSTS and says http
        using var plainClient = await RawClient.ConnectAsync(plain);
        var plainEcho = await Get(plainClient, "/echo");
        Assert.False(plainEcho.Headers.ContainsKey("Strict-Transport-Security"));
        Assert.Equal("http", JsonDocument.Parse(plainEcho.Body).RootElement.GetProperty("headers").GetProperty("X-Forwarded-Proto").GetString());
    }

    [Fact]
    public async Task Tls12AndTls13_BothNegotiate()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), PemTls()));
        foreach (var protocol in new[] { SslProtocols.Tls12, SslProtocols.Tls13 })
        {
            using var client = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate, protocols: protocol);
            Assert.Equal(protocol, client.Tls!.SslProtocol);
            Assert.Equal(200, (await Get(client, "/hello")).Status);
        }
    }

    /// <summary>
    /// A TLS 1.1 ClientHello written byte by byte (the platform's own TLS client refuses to send one, so it cannot tell
    /// who refused): the gateway must answer with an alert or close, never with a ServerHello. The system OpenSSL of
    /// some distributions refuses TLS 1.1 by itself, so the listener's own setting is checked as well.
    /// </summary>
    [Fact]
    public async Task Tls11ClientHello_IsAnsweredWithAnAlert_NotAServerHello()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), PemTls()));
        Assert.Equal(SslProtocols.Tls12 | SslProtocols.Tls13, gateway.Host.TlsListeners[0].ServerOptions.EnabledSslProtocols);
        var body = new List<byte> { 0x03, 0x02 };                 // client_version TLS 1.1, no supported_versions extension
        body.AddRange(new byte[32]);                              // random
        body.Add(0x00);                                           // no session id
        body.AddRange(new byte[] { 0x00, 0x06, 0xC0, 0x09, 0xC0, 0x13, 0x00, 0x2F }); // ECDHE-ECDSA/RSA-AES128-SHA, AES128-SHA
        body.AddRange(new byte[] { 0x01, 0x00 });                 // null compression
        byte[] extensions = [0x00, 0x0A, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17,  // supported_groups: secp256r1
                             0x00, 0x0B, 0x00, 0x02, 0x01, 0x00];             // ec_point_formats: uncompressed
        body.AddRange(new byte[] { 0x00, (byte)extensions.Length });
        body.AddRange(extensions);
        var handshake = new List<byte> { 0x01, 0x00, (byte)(body.Count >> 8), (byte)body.Count };
        handshake.AddRange(body);
        var record = new List<byte> { 0x16, 0x03, 0x01, (byte)(handshake.Count >> 8), (byte)handshake.Count };
        record.AddRange(handshake);

        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(record.ToArray());
        var answer = new byte[7];
        int got = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            while (got < answer.Length)
            {
                int n = await stream.ReadAsync(answer.AsMemory(got), cts.Token);
                if (n == 0) break;
                got += n;
            }
        }
        catch (IOException)
        {
            // reset: refused as well
        }
        Assert.False(got > 0 && answer[0] == 0x16, "the gateway answered a TLS 1.1 ClientHello with a handshake record");
        if (got == answer.Length)
        {
            Assert.Equal(0x15, answer[0]); // alert
            Assert.Equal(2, answer[5]);    // fatal
            Assert.Contains(answer[6], new byte[] { 70, 40 }); // protocol_version (or handshake_failure)
        }
    }

    [Fact]
    public async Task PlainHttpOnTheTlsPort_IsClosedWithoutAResponse()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), PemTls()));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
        Assert.True(await client.IsClosedByServerAsync());
        Assert.Equal(1, MetricValue(await gateway.ScrapeMetricsAsync(), "fastgate_tls_handshake_failures_total{listener=\"https\"}"));
    }

    [Fact]
    public async Task SilentClient_IsClosedAfterTheHeaderTimeout_WithoutAHandshake()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var config = Config(upstream.Address.ToString().TrimEnd('/'), PemTls(), """, "limits": { "headerTimeout": "1s" }""");
        await using var gateway = await TestGateway.StartAsync(config);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        Assert.True(await client.IsClosedByServerAsync(timeoutMs: 15000)); // the handshake deadline is the header timeout
    }

    [Fact]
    public async Task SniEntries_ChooseTheCertificateByServerName_OthersGetTheListenersOwn()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        using var fallback = _ca.IssueServerCertificate("localhost");
        using var api = _ca.IssueServerCertificate("api.test");
        using var apps = _ca.IssueServerCertificate("*.apps.test");
        var (fallbackCert, fallbackKey) = TestCertificateAuthority.WritePemPair(fallback, _dir.FullName, "fallback");
        var (apiCert, apiKey) = TestCertificateAuthority.WritePemPair(api, _dir.FullName, "api");
        var appsPfx = Path.Combine(_dir.FullName, "apps.pfx");
        File.WriteAllBytes(appsPfx, apps.Export(X509ContentType.Pkcs12, "apps-pass"));
        var tls = JsonSerializer.Serialize(new
        {
            certificate = fallbackCert, key = fallbackKey,
            sni = new object[]
            {
                new { hosts = new[] { "api.test", "API2.test" }, certificate = apiCert, key = apiKey },
                new { hosts = new[] { "*.apps.test" }, pfx = appsPfx, password = "apps-pass" },
            },
        });
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), tls));

        async Task<string> ServedFor(string name)
        {
            using var client = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate, targetHost: name);
            Assert.Equal(200, (await Get(client, "/hello")).Status);
            return Served(client);
        }
        Assert.Equal(api.Thumbprint, await ServedFor("api.test"));
        Assert.Equal(api.Thumbprint, await ServedFor("api2.TEST"));
        Assert.Equal(apps.Thumbprint, await ServedFor("tenant-1.apps.test"));
        Assert.Equal(fallback.Thumbprint, await ServedFor("a.b.apps.test")); // a wildcard covers one label
        Assert.Equal(fallback.Thumbprint, await ServedFor("other.test"));
        Assert.Equal(fallback.Thumbprint, await ServedFor("127.0.0.1")); // an IP address sends no SNI
        Assert.Contains("fastgate_tls_certificate_expiry_timestamp_seconds{listener=\"https/api.test\"}", await gateway.ScrapeMetricsAsync());
    }

    [Fact]
    public async Task PfxListener_WithPasswordFromEnvironment_Serves()
    {
        using var server = _ca.IssueServerCertificate("localhost");
        var pfx = Path.Combine(_dir.FullName, "server.pfx");
        File.WriteAllBytes(pfx, server.Export(X509ContentType.Pkcs12, "s3cret"));
        Environment.SetEnvironmentVariable("FASTGATE_TEST_PFX_PASSWORD", "s3cret");
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var tls = JsonSerializer.Serialize(new { pfx, passwordEnv = "FASTGATE_TEST_PFX_PASSWORD" });
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), tls));
        using var client = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate);
        Assert.Equal(server.Thumbprint, Served(client));
        Assert.Equal(200, (await Get(client, "/hello")).Status);
    }

    [Fact]
    public async Task CertificateFilesReplaced_NewHandshakesUseTheNewCertificate_OpenConnectionsKeepWorking_BadFilesKeepTheOld()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        using var first = _ca.IssueServerCertificate("localhost");
        var (certPath, keyPath) = TestCertificateAuthority.WritePemPair(first, _dir.FullName);
        var tls = JsonSerializer.Serialize(new { certificate = certPath, key = keyPath });
        var previousInterval = FastGate.Security.ListenerTls.PollInterval;
        FastGate.Security.ListenerTls.PollInterval = TimeSpan.FromMilliseconds(200);
        try
        {
            await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/'), tls));
            using var before = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate);
            Assert.Equal(first.Thumbprint, Served(before));
            Assert.Equal(200, (await Get(before, "/hello")).Status);

            using var second = _ca.IssueServerCertificate("localhost");
            TestCertificateAuthority.WritePemPair(second, _dir.FullName);
            string? served = null;
            // the file poller has no signal: poll new handshakes until one is served the new certificate
            await Eventually.WaitUntilAsync(async () =>
            {
                using var probe = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate);
                return (served = Served(probe)) == second.Thumbprint;
            }, "new handshakes are served the replaced certificate", describe: () => $"served {served}");
            Assert.Equal(second.Thumbprint, served);
            // the connection made before the reload was not dropped
            Assert.Equal(200, (await Get(before, "/hello")).Status);

            // a broken certificate file: the reload fails, the second certificate stays in use
            // (a poll between the two renames above may already have failed once: count from here)
            const string errors = "fastgate_tls_certificate_reloads_total{listener=\"https\",result=\"error\"}";
            string metrics = await gateway.ScrapeMetricsAsync();
            double errorsBefore = MetricValue(metrics, errors);
            await File.WriteAllTextAsync(certPath, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
            await Eventually.WaitUntilAsync(async () => MetricValue(metrics = await gateway.ScrapeMetricsAsync(), errors) > errorsBefore,
                "the broken certificate file is counted as a failed reload");
            Assert.True(MetricValue(metrics, errors) > errorsBefore, metrics);
            Assert.Equal(second.Thumbprint, gateway.Host.TlsListeners[0].Certificate.Thumbprint);
            using var after = await RawClient.ConnectTlsAsync(gateway.EndPoint, _ca.Certificate);
            Assert.Equal(second.Thumbprint, Served(after));
            Assert.Equal(200, (await Get(after, "/hello")).Status);
            Assert.Contains("fastgate_tls_certificate_expiry_timestamp_seconds{listener=\"https\"}", metrics);
        }
        finally
        {
            FastGate.Security.ListenerTls.PollInterval = previousInterval;
        }
    }
}
