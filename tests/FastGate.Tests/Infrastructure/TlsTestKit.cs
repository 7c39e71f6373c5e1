using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>A certificate authority made in the test, and server certificates it signs.</summary>
public sealed class TestCertificateAuthority : IDisposable
{
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public TestCertificateAuthority(string name)
    {
        var request = new CertificateRequest($"CN={name}", _key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        Certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
    }

    public X509Certificate2 Certificate { get; }

    /// <summary>A server certificate (with its private key) for these DNS names and 127.0.0.1 / ::1.</summary>
    public X509Certificate2 IssueServerCertificate(params string[] dnsNames)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={dnsNames[0]}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        foreach (var n in dnsNames) san.AddDnsName(n);
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var serial = new byte[12];
        RandomNumberGenerator.Fill(serial);
        using var cert = request.Create(Certificate, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), serial);
        using var withKey = cert.CopyWithPrivateKey(key);
        // a PKCS#12 round trip gives a certificate whose key every platform's TLS stack can use
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>A client certificate (with its private key, EKU clientAuth) for a device.</summary>
    public X509Certificate2 IssueClientCertificate(string subject, string? eku = "1.3.6.1.5.5.7.3.2")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={subject}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        if (eku is not null) request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(eku)], false));
        var serial = new byte[12];
        RandomNumberGenerator.Fill(serial);
        using var cert = request.Create(Certificate, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), serial);
        using var withKey = cert.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>Writes a certificate and its private key as PEM files (certificate.pem, key.pem) into <paramref name="directory"/>.</summary>
    public static (string Certificate, string Key) WritePemPair(X509Certificate2 certificate, string directory, string name = "server")
    {
        var certPath = Path.Combine(directory, name + ".pem");
        var keyPath = Path.Combine(directory, name + ".key");
        // written to temporary names and moved into place, as a certificate manager would
        File.WriteAllText(certPath + ".tmp", certificate.ExportCertificatePem());
        File.WriteAllText(keyPath + ".tmp", certificate.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
        File.Move(keyPath + ".tmp", keyPath, overwrite: true);
        File.Move(certPath + ".tmp", certPath, overwrite: true);
        return (certPath, keyPath);
    }

    /// <summary>Writes the CA certificate as PEM into a temporary file and returns its path.</summary>
    public string WritePem()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fastgate-ca-{Guid.NewGuid():N}.pem");
        File.WriteAllText(path, Certificate.ExportCertificatePem());
        return path;
    }

    public void Dispose()
    {
        Certificate.Dispose();
        _key.Dispose();
    }
}

/// <summary>
/// A real Kestrel HTTPS upstream on an ephemeral loopback port. It records the server name (SNI) of every handshake
/// and counts TCP connections; /hello answers "Hello, World!", /echo answers method, Host, body size and the
/// connection id as text lines.
/// </summary>
public sealed class HttpsUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _connections;

    private HttpsUpstream(WebApplication app) => _app = app;

    public int Port { get; private set; }
    public int Connections => Volatile.Read(ref _connections);
    /// <summary>The server name each handshake asked for (empty string: no SNI).</summary>
    public ConcurrentQueue<string> ServerNames { get; } = new();

    public static async Task<HttpsUpstream> StartAsync(X509Certificate2 certificate)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        HttpsUpstream? self = null;
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(IPAddress.Loopback, 0, lo =>
            {
                lo.Protocols = HttpProtocols.Http1AndHttp2;
                lo.Use(next => ctx =>
                {
                    Interlocked.Increment(ref self!._connections);
                    return next(ctx);
                });
                lo.UseHttps(new HttpsConnectionAdapterOptions
                {
                    ServerCertificateSelector = (_, name) =>
                    {
                        self!.ServerNames.Enqueue(name ?? "");
                        return certificate;
                    },
                });
            });
        });
        var app = builder.Build();
        self = new HttpsUpstream(app);
        app.MapGet("/hello", () => Results.Text("Hello, World!"));
        app.Map("/echo", async (HttpContext ctx) =>
        {
            long bodyBytes = 0;
            var buffer = new byte[16384];
            int n;
            while ((n = await ctx.Request.Body.ReadAsync(buffer)) > 0) bodyBytes += n;
            return Results.Text($"method={ctx.Request.Method}\nhost={ctx.Request.Host}\nbody={bodyBytes}\nconnection={ctx.Connection.Id}\n" +
                                $"xff={ctx.Request.Headers["X-Forwarded-For"]}\n");
        });
        await app.StartAsync();
        self.Port = new Uri(app.Urls.First()).Port;
        return self;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
