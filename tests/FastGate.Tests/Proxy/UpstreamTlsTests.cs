using System.Globalization;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>https:// destinations: a real Kestrel HTTPS upstream with certificates made by a CA generated here.</summary>
public sealed class UpstreamTlsFixture : IAsyncLifetime
{
    public TestCertificateAuthority Ca { get; } = new("FastGate Test CA");
    public TestCertificateAuthority OtherCa { get; } = new("Some Other CA");
    public HttpsUpstream Upstream { get; private set; } = null!;
    public string CaPem { get; private set; } = "";
    public string OtherCaPem { get; private set; } = "";

    public async Task InitializeAsync()
    {
        Upstream = await HttpsUpstream.StartAsync(Ca.IssueServerCertificate("localhost", "api.internal"));
        CaPem = Ca.WritePem();
        OtherCaPem = OtherCa.WritePem();
    }

    public async Task DisposeAsync()
    {
        await Upstream.DisposeAsync();
        File.Delete(CaPem);
        File.Delete(OtherCaPem);
        Ca.Dispose();
        OtherCa.Dispose();
    }
}

public class UpstreamTlsTests : IClassFixture<UpstreamTlsFixture>
{
    private readonly UpstreamTlsFixture _f;

    public UpstreamTlsTests(UpstreamTlsFixture f) => _f = f;

    /// <summary>A gateway config with one cluster (its own id, so its metrics are this test's alone).</summary>
    private static string Config(string cluster, string address, string tls = "") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "{{cluster}}", "destinations": [ { "address": "{{address}}" } ] {{(tls.Length > 0 ? ", \"tls\": " + tls : "")}} } ],
          "routes": [ { "id": "all-{{cluster}}", "match": { "pathPrefix": "/" }, "cluster": "{{cluster}}" } ]
        }
        """;

    private static string Json(string s) => s.Replace("\\", "\\\\");

    private static Dictionary<string, string> Lines(string body) =>
        body.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : "");

    private static double Metric(string scrape, string name, params (string Label, string Value)[] labels)
    {
        foreach (var line in scrape.Split('\n'))
        {
            if (!line.StartsWith(name + "{", StringComparison.Ordinal)) continue;
            if (labels.All(l => line.Contains($"{l.Label}=\"{l.Value}\"", StringComparison.Ordinal)))
                return double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        }
        return 0;
    }

    [Fact]
    public async Task ConfiguredCa_GetAndPost_GoOverOneKeptAliveTlsConnection_WithSniAndDestinationHost()
    {
        int connectionsBefore = _f.Upstream.Connections;
        await using var gateway = await TestGateway.StartAsync(Config("tls-ca", $"https://localhost:{_f.Upstream.Port}",
            $$"""{ "ca": "{{Json(_f.CaPem)}}" }"""));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        var connectionIds = new HashSet<string>();
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync("GET /hello HTTP/1.1\r\nHost: front.test\r\n\r\n");
            var hello = await client.ReadResponseAsync();
            Assert.Equal(200, hello.Status);
            Assert.Equal("Hello, World!", hello.Body);

            var body = new string('p', 50_000 + i);
            await client.SendAsync($"POST /echo HTTP/1.1\r\nHost: front.test\r\nContent-Length: {body.Length}\r\n\r\n{body}");
            var echo = await client.ReadResponseAsync();
            Assert.Equal(200, echo.Status);
            var seen = Lines(echo.Body);
            Assert.Equal("POST", seen["method"]);
            Assert.Equal((50_000 + i).ToString(CultureInfo.InvariantCulture), seen["body"]);
            // preserveHost is off: the upstream sees the destination's authority, not the client's Host
            Assert.Equal($"localhost:{_f.Upstream.Port}", seen["host"]);
            connectionIds.Add(seen["connection"]);
        }
        Assert.Single(connectionIds);
        Assert.Equal(1, _f.Upstream.Connections - connectionsBefore);
        Assert.Contains("localhost", _f.Upstream.ServerNames);
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Metric(scrape, "fastgate_upstream_connections_opened_total", ("cluster", "tls-ca")));
    }

    [Fact]
    public async Task ConfiguredSni_IsSentAndChecked_WhileHostHeaderIsTheDestinationAuthority()
    {
        await using var gateway = await TestGateway.StartAsync(Config("tls-sni", $"https://127.0.0.1:{_f.Upstream.Port}",
            $$"""{ "ca": "{{Json(_f.CaPem)}}", "sni": "api.internal" }"""));
        using var http = gateway.CreateClient();
        var seen = Lines(await http.GetStringAsync("/echo"));
        Assert.Equal($"127.0.0.1:{_f.Upstream.Port}", seen["host"]);
        Assert.Contains("api.internal", _f.Upstream.ServerNames);
    }

    [Fact]
    public async Task UntrustedUpstreamCertificate_Is502_AndTheReasonIsInTheMetrics()
    {
        // the system store does not trust the test CA
        await using var gateway = await TestGateway.StartAsync(Config("tls-untrusted", $"https://localhost:{_f.Upstream.Port}"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(502, response.Status);
        Assert.Contains("upstream_tls_failed", response.Body);
        // the request's counters are recorded after its response is sent (at once on the native transport)
        string scrape = "";
        await Eventually.WaitUntilAsync(async () =>
        {
            scrape = await gateway.ScrapeMetricsAsync();
            return Metric(scrape, "fastgate_upstream_errors_total", ("cluster", "tls-untrusted"), ("kind", "tls")) >= 1
                && Metric(scrape, "fastgate_rejections_total", ("reason", "upstream_tls_failed")) >= 1;
        }, "the refusal is counted");
        Assert.Equal(1, Metric(scrape, "fastgate_upstream_tls_failures_total", ("cluster", "tls-untrusted"), ("error", "certificate_untrusted")));
        Assert.Equal(1, Metric(scrape, "fastgate_upstream_errors_total", ("cluster", "tls-untrusted"), ("kind", "tls")));
        Assert.Equal(1, Metric(scrape, "fastgate_rejections_total", ("reason", "upstream_tls_failed")));
    }

    [Fact]
    public async Task CertificateFromAnotherCa_Is502()
    {
        await using var gateway = await TestGateway.StartAsync(Config("tls-other-ca", $"https://localhost:{_f.Upstream.Port}",
            $$"""{ "ca": "{{Json(_f.OtherCaPem)}}" }"""));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/hello");
        Assert.Equal(502, (int)response.StatusCode);
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Metric(scrape, "fastgate_upstream_tls_failures_total", ("cluster", "tls-other-ca"), ("error", "certificate_untrusted")));
    }

    [Fact]
    public async Task SniTheCertificateDoesNotName_Is502NameMismatch()
    {
        await using var gateway = await TestGateway.StartAsync(Config("tls-mismatch", $"https://127.0.0.1:{_f.Upstream.Port}",
            $$"""{ "ca": "{{Json(_f.CaPem)}}", "sni": "other.internal" }"""));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/hello");
        Assert.Equal(502, (int)response.StatusCode);
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(1, Metric(scrape, "fastgate_upstream_tls_failures_total", ("cluster", "tls-mismatch"), ("error", "certificate_name_mismatch")));
    }

    [Fact]
    public async Task InsecureSkipVerify_AcceptsTheUntrustedCertificate_AndWarns()
    {
        string config = Config("tls-insecure", $"https://localhost:{_f.Upstream.Port}", """{ "insecureSkipVerify": true }""");
        var loaded = ConfigLoader.Load(config);
        Assert.True(loaded.IsValid);
        var warning = Assert.Single(loaded.Warnings);
        Assert.Equal("$.clusters[0].tls.insecureSkipVerify", warning.Path);
        await using var gateway = await TestGateway.StartAsync(config);
        using var http = gateway.CreateClient();
        Assert.Equal("Hello, World!", await http.GetStringAsync("/hello"));
    }

    [Fact]
    public async Task UpstreamClosingAnIdleTlsConnection_TheNextRequestGetsAFreshOne()
    {
        // a TLS upstream that answers one request per connection, then closes without saying so beforehand
        using var certificate = _f.Ca.IssueServerCertificate("localhost");
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await using var tls = new System.Net.Security.SslStream(stream);
            await tls.AuthenticateAsServerAsync(new System.Net.Security.SslServerAuthenticationOptions { ServerCertificate = certificate }, cancel);
            var head = new List<byte>();
            var one = new byte[1];
            while (!(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n'))
            {
                if (await tls.ReadAsync(one, cancel) == 0) return;
                head.Add(one[0]);
            }
            await tls.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce"u8.ToArray(), cancel);
            await tls.FlushAsync(cancel);
        });
        await using var gateway = await TestGateway.StartAsync(Config("tls-stale", $"https://localhost:{upstream.Port}",
            $$"""{ "ca": "{{Json(_f.CaPem)}}" }"""));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
            var response = await client.ReadResponseAsync();
            Assert.Equal(200, response.Status);
            Assert.Equal("once", response.Body);
        }
        Assert.Equal(3, upstream.Connections);
    }

    [Fact]
    public async Task PlainHttpClientToHttpsUpstream_IsNotConfusedWithTls()
    {
        // http:// to a TLS port: the upstream answers garbage or closes; the gateway must say 502, not hang
        await using var gateway = await TestGateway.StartAsync(Config("tls-plain", $"http://127.0.0.1:{_f.Upstream.Port}"));
        using var http = gateway.CreateClient();
        using var response = await http.GetAsync("/hello");
        Assert.Equal(502, (int)response.StatusCode);
    }

    [Theory]
    [InlineData("""{ "ca": "/nonexistent/ca.pem" }""", "$.clusters[0].tls.ca", "cannot read")]
    [InlineData("""{ "ca": "NOTPEM" }""", "$.clusters[0].tls.ca", "")]
    [InlineData("""{ "insecureSkipVerfy": true }""", "$.clusters[0].tls.insecureSkipVerfy", "did you mean 'insecureSkipVerify'")]
    [InlineData("""{ "sni": "1.2.3.4" }""", "$.clusters[0].tls.sni", "not a DNS host name")]
    [InlineData("""{ "ca": "CA", "insecureSkipVerify": true }""", "$.clusters[0].tls.ca", "contradict")]
    [InlineData("""{ "insecureSkipVerify": "yes" }""", "$.clusters[0].tls.insecureSkipVerify", "expected true or false")]
    public void BadTlsSettings_AreErrorsAtTheirJsonPath(string tls, string path, string message)
    {
        var notPem = Path.Combine(Path.GetTempPath(), $"fastgate-notpem-{Guid.NewGuid():N}.txt");
        File.WriteAllText(notPem, "not a certificate\n");
        try
        {
            var config = Config("c", "https://127.0.0.1:9443", tls.Replace("NOTPEM", Json(notPem)).Replace("\"CA\"", $"\"{Json(_f.CaPem)}\""));
            var loaded = ConfigLoader.Load(config);
            Assert.False(loaded.IsValid);
            Assert.Contains(loaded.Errors, e => e.Path == path && e.Message.Contains(message, StringComparison.Ordinal));
        }
        finally
        {
            File.Delete(notPem);
        }
    }

    [Fact]
    public void TlsOnAClusterWithoutHttpsDestinations_IsAnError()
    {
        var loaded = ConfigLoader.Load(Config("c", "http://127.0.0.1:9001", """{ "sni": "api.internal" }"""));
        Assert.Contains(loaded.Errors, e => e.Path == "$.clusters[0].tls");
    }

    [Fact]
    public void RelativeCaPath_ResolvesAgainstTheConfigDirectory()
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-tls-");
        try
        {
            File.Copy(_f.CaPem, Path.Combine(dir.FullName, "ca.pem"));
            var file = Path.Combine(dir.FullName, "fastgate.json");
            File.WriteAllText(file, Config("c", "https://127.0.0.1:9443", """{ "ca": "ca.pem" }"""));
            var loaded = ConfigLoader.LoadFile(file);
            Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
