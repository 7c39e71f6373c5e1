using System.Text.Json;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Security;

/// <summary>A bad tls, devices or mtls section: every error with its JSON path, files opened and parsed at load.</summary>
public sealed class TlsConfigValidationTests : IDisposable
{
    private readonly TestCertificateAuthority _ca = new("FastGate Test Config CA");
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("fastgate-tlsconfig-");
    private readonly string _cert;
    private readonly string _key;
    private readonly string _caPem;

    public TlsConfigValidationTests()
    {
        using var server = _ca.IssueServerCertificate("localhost");
        (_cert, _key) = TestCertificateAuthority.WritePemPair(server, _dir.FullName);
        _caPem = Path.Combine(_dir.FullName, "ca.pem");
        File.WriteAllText(_caPem, _ca.Certificate.ExportCertificatePem());
    }

    public void Dispose()
    {
        _ca.Dispose();
        try { _dir.Delete(recursive: true); } catch (IOException) { }
    }

    private static ConfigLoadResult Load(object tls, string extra = "", string routeExtra = "") => ConfigLoader.Load($$"""
        {
          "listeners": [ { "name": "https", "address": "127.0.0.1:0", "tls": {{JsonSerializer.Serialize(tls)}} } ],
          "clusters": [ { "id": "c", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
          "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "c" {{routeExtra}} } ] {{extra}}
        }
        """);

    private static void AssertError(ConfigLoadResult result, string path, string messagePart) =>
        Assert.True(result.Errors.Any(e => e.Path == path && e.Message.Contains(messagePart, StringComparison.Ordinal)),
            $"expected {path}: ...{messagePart}... in\n" + string.Join("\n", result.Errors));

    [Fact]
    public void ValidPemAndMtlsConfig_Loads()
    {
        var result = Load(new { certificate = _cert, key = _key, clientCertificate = "required", clientCa = _caPem },
            """, "devices": [ { "id": "d1", "spkiSha256": "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99" } ], "mtls": { "deviceHeader": "X-Device" }""",
            """, "auth": ["mtls"], "hsts": "max-age=600" """);
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        var tls = result.Config!.Listeners[0].Tls!;
        Assert.Equal(ClientCertificateMode.Required, tls.ClientCertificate);
        Assert.Equal("X-Device", result.Config.Mtls.DeviceHeader);
    }

    [Fact]
    public void MissingOrUnreadableFiles_AreReportedAtTheirPaths()
    {
        var missing = Path.Combine(_dir.FullName, "nope.pem");
        AssertError(Load(new { certificate = missing, key = _key }), "$.listeners[0].tls.certificate", "nope.pem");
        AssertError(Load(new { certificate = _cert }), "$.listeners[0].tls.key", "is required");
        AssertError(Load(new { }), "$.listeners[0].tls", "needs \"certificate\" and \"key\"");
        AssertError(Load(new { certificate = _cert, key = _key, pfx = "x.pfx" }), "$.listeners[0].tls", "not both");
        // a key that does not belong to the certificate
        using var other = _ca.IssueServerCertificate("other");
        var (_, otherKey) = TestCertificateAuthority.WritePemPair(other, _dir.FullName, "other");
        AssertError(Load(new { certificate = _cert, key = otherKey }), "$.listeners[0].tls.certificate", "cannot load the certificate");
        // a PFX with the wrong password
        var pfx = Path.Combine(_dir.FullName, "s.pfx");
        using (var server = _ca.IssueServerCertificate("localhost"))
            File.WriteAllBytes(pfx, server.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12, "right"));
        AssertError(Load(new { pfx, password = "wrong" }), "$.listeners[0].tls.pfx", "cannot load the certificate");
        Assert.True(Load(new { pfx, password = "right" }).IsValid);
        AssertError(Load(new { pfx, passwordEnv = "FASTGATE_TEST_UNSET_VARIABLE_42" }), "$.listeners[0].tls.passwordEnv", "is not set");
    }

    [Fact]
    public void ClientCertificateSettings_AreChecked()
    {
        AssertError(Load(new { certificate = _cert, key = _key, clientCertificate = "required" }), "$.listeners[0].tls.clientCa", "is required");
        AssertError(Load(new { certificate = _cert, key = _key, clientCertificate = "sometimes", clientCa = _caPem }),
            "$.listeners[0].tls.clientCertificate", "not one of none, optional, required");
        AssertError(Load(new { certificate = _cert, key = _key, clientCa = _caPem }), "$.listeners[0].tls.clientCa", "no effect");
        AssertError(Load(new { certificate = _cert, key = _key, clientCertificate = "optional", clientCa = _key }), "$.listeners[0].tls.clientCa", "no PEM certificate");
    }

    [Fact]
    public void Devices_Mtls_AndHsts_AreChecked()
    {
        var mtls = new { certificate = _cert, key = _key, clientCertificate = "optional", clientCa = _caPem };
        var result = Load(mtls, """
            , "devices": [
                { "id": "a", "spkiSha256": "1234" },
                { "id": "a", "thumbprint": "zz" },
                { "id": "b" },
                { "id": "c d", "thumbprint": "0123456789abcdef0123456789abcdef01234567" },
                { "id": "e", "thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567" }
              ],
              "mtls": { "deviceHeader": "X Device" },
              "policies": [ { "id": "p", "match": { "devices": ["sensr"] }, "actions": [ { "type": "deny" } ] } ]
            """, """, "hsts": "1 year" """);
        AssertError(result, "$.devices[0].spkiSha256", "64 hex digits");
        AssertError(result, "$.devices[1].id", "duplicate device id 'a'");
        AssertError(result, "$.devices[1].thumbprint", "40 (SHA-1) or 64 (SHA-256)");
        AssertError(result, "$.devices[2]", "needs \"spkiSha256\"");
        AssertError(result, "$.devices[3].id", "visible ASCII");
        AssertError(result, "$.devices[4].thumbprint", "already belongs to device 'c d'");
        AssertError(result, "$.mtls.deviceHeader", "not a header name");
        AssertError(result, "$.policies[0].match.devices[0]", "unknown device 'sensr'");
        AssertError(result, "$.routes[0].hsts", "max-age=");

        // mtls needs devices; devices need a listener asking for client certificates; hsts needs a TLS listener
        AssertError(Load(mtls, routeExtra: """, "auth": ["mtls"] """), "$.routes[0].auth[0]", "list them in \"devices\"");
        var plain = ConfigLoader.Load("""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "c", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
              "devices": [ { "id": "d", "thumbprint": "0123456789abcdef0123456789abcdef01234567" } ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "c", "hsts": "max-age=60" } ]
            }
            """);
        AssertError(plain, "$.devices", "set tls.clientCertificate");
        AssertError(plain, "$.routes[0].hsts", "no listener has tls");
    }

    [Fact]
    public void SniEntries_AreChecked()
    {
        var result = Load(new
        {
            certificate = _cert, key = _key,
            sni = new object[]
            {
                new { hosts = Array.Empty<string>(), certificate = _cert, key = _key },
                new { hosts = new[] { "a.test", "bad name", "*.b.test" }, certificate = Path.Combine(_dir.FullName, "missing.pem"), key = _key },
                new { hosts = new[] { "A.test" }, pfx = "x.pfx", certificate = _cert },
            },
        });
        AssertError(result, "$.listeners[0].tls.sni[0].hosts", "list the server names");
        AssertError(result, "$.listeners[0].tls.sni[1].certificate", "missing.pem");
        AssertError(result, "$.listeners[0].tls.sni[1].hosts[1]", "not a DNS name");
        AssertError(result, "$.listeners[0].tls.sni[2].hosts[0]", "already claimed");
        AssertError(result, "$.listeners[0].tls.sni[2]", "not both");
    }

    [Fact]
    public void ExpiredCertificate_IsRefused()
    {
        using var key = System.Security.Cryptography.ECDsa.Create();
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=old", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
        using var old = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-10), DateTimeOffset.UtcNow.AddDays(-1));
        var (cert, pem) = TestCertificateAuthority.WritePemPair(old, _dir.FullName, "old");
        AssertError(Load(new { certificate = cert, key = pem }), "$.listeners[0].tls.certificate", "expired");
    }
}
