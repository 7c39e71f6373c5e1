using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using FastGate.Security;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>
/// HTTP/2 from clients (docs/http2.md): one table of requests sent as HTTP/1.1, h2c (prior knowledge) and h2 over
/// TLS (ALPN) must get the same statuses: the same admission decision whatever the protocol. Real sockets: the
/// gateway, the demo upstream (HTTP/1.1), .NET's HttpClient as the client.
/// </summary>
public sealed class Http2Tests : IAsyncLifetime
{
    private const string Key = "h2-table-key-alice";
    private readonly TestCertificateAuthority _ca = new("FastGate H2 Test CA");
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("fastgate-h2-");
    private DemoUpstreamServer _upstream = null!;
    private TestGateway _gateway = null!;

    public enum Protocol { Http11, Http11Tls, H2c, H2Tls }

    public async Task InitializeAsync()
    {
        _upstream = await DemoUpstreamServer.StartAsync();
        using var server = _ca.IssueServerCertificate("localhost");
        var (cert, key) = TestCertificateAuthority.WritePemPair(server, _dir.FullName);
        var tls = JsonSerializer.Serialize(new { certificate = cert, key });
        _gateway = await TestGateway.StartAsync($$"""
            {
              "listeners": [
                { "name": "plain", "address": "127.0.0.1:0", "http2": true },
                { "name": "tls", "address": "127.0.0.1:0", "http2": true, "tls": {{tls}} }
              ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
              "consumers": [ { "id": "alice", "apiKeys": [ "{{ApiKeys.Hash(Key)}}" ] } ],
              "rateLimits": [ { "id": "one-per-bucket", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 1, "key": "header:X-Bucket" } ],
              "policies": [
                { "id": "no-admin", "match": { "paths": ["/admin/*"] }, "actions": [ { "type": "deny" } ] },
                { "id": "teapot", "match": { "paths": ["/tea"] }, "actions": [ { "type": "respond", "status": 418, "body": "short and stout" } ] }
              ],
              "routes": [
                { "id": "keyed", "match": { "pathPrefix": "/keyed" }, "cluster": "backend", "auth": ["apiKey"], "stripPrefix": true },
                { "id": "limited", "match": { "pathPrefix": "/limited" }, "cluster": "backend", "rateLimits": ["one-per-bucket"], "stripPrefix": true },
                { "id": "echo", "match": { "pathPrefix": "/echo" }, "cluster": "backend" },
                { "id": "hello", "match": { "path": "/hello" }, "cluster": "backend" },
                { "id": "status", "match": { "pathPrefix": "/status" }, "cluster": "backend" },
                { "id": "admin", "match": { "pathPrefix": "/admin" }, "cluster": "backend" },
                { "id": "tea", "match": { "path": "/tea" }, "cluster": "backend" }
              ]
            }
            """);
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _upstream.DisposeAsync();
        _ca.Dispose();
        try { _dir.Delete(recursive: true); } catch (IOException) { }
    }

    private HttpMessageInvoker Client(Protocol protocol) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        SslOptions = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, certificate, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(_ca.Certificate);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return certificate is not null && chain.Build(X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
            },
        },
    });

    private Uri Base(Protocol protocol) => protocol is Protocol.H2Tls or Protocol.Http11Tls
        ? new Uri($"https://localhost:{_gateway.Host.ListenerEndPoints[1].Port}")
        : new Uri($"http://127.0.0.1:{_gateway.Host.ListenerEndPoints[0].Port}");

    private async Task<(HttpResponseMessage Response, string Body)> SendAsync(Protocol protocol, HttpMethod method, string target,
        (string, string)[]? headers = null, string? body = null)
    {
        using var client = Client(protocol);
        var request = new HttpRequestMessage(method, new Uri(Base(protocol), target))
        {
            Version = protocol is Protocol.Http11 or Protocol.Http11Tls ? HttpVersion.Version11 : HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        foreach (var (name, value) in headers ?? []) request.Headers.TryAddWithoutValidation(name, value);
        if (body is not null) request.Content = new StringContent(body);
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var response = await client.SendAsync(request, cancel.Token);
        var text = await response.Content.ReadAsStringAsync(cancel.Token);
        Assert.Equal(protocol is Protocol.Http11 or Protocol.Http11Tls ? HttpVersion.Version11 : HttpVersion.Version20, response.Version);
        return (response, text);
    }

    /// <summary>The shared decision table: (method, target, headers, body) → status, for every protocol alike.</summary>
    public static TheoryData<Protocol, string, string, string, string, int> Table()
    {
        var rows = new (string Method, string Target, string Headers, string Body, int Status)[]
        {
            ("GET", "/hello", "", "", 200),
            ("GET", "/nowhere", "", "", 404),
            ("GET", "/keyed/hello", "", "", 401),
            ("GET", "/keyed/hello", "X-API-Key=wrong-key", "", 401),
            ("GET", "/keyed/hello", $"X-API-Key={Key}", "", 200),
            ("GET", "/admin/panel", "", "", 403),
            ("GET", "/tea", "", "", 418),
            // the canonical path decides: an escaped or doubled spelling of /keyed is still /keyed
            // (System.Uri resolves dot segments and leading '//' itself: those spellings are the raw-socket tests')
            ("GET", "/%6beyed/hello", "", "", 401),
            ("GET", "/x//keyed/hello", "", "", 404),
            ("GET", "/echo/a%2fb", "", "", 400),
            ("GET", "/echo/a%5Cb", "", "", 400),
            ("POST", "/echo", "", "hello body", 200),
            ("GET", "/status/503", "", "", 503),
        };
        var data = new TheoryData<Protocol, string, string, string, string, int>();
        foreach (var protocol in Enum.GetValues<Protocol>())
            foreach (var r in rows) data.Add(protocol, r.Method, r.Target, r.Headers, r.Body, r.Status);
        return data;
    }

    [Theory]
    [MemberData(nameof(Table))]
    public async Task DecisionTable_SameStatusWhateverTheProtocol(Protocol protocol, string method, string target, string headers, string body, int status)
    {
        var fields = headers.Length == 0 ? [] : headers.Split(';').Select(h => h.Split('=', 2)).Select(p => (p[0], p[1])).ToArray();
        var (response, _) = await SendAsync(protocol, new HttpMethod(method), target, fields, body.Length > 0 ? body : null);
        Assert.Equal(status, (int)response.StatusCode);
        Assert.True(response.Headers.Contains("X-Request-Id"));
    }

    [Theory]
    [InlineData(Protocol.Http11)]
    [InlineData(Protocol.H2c)]
    [InlineData(Protocol.H2Tls)]
    public async Task RateLimit_SecondRequestOfABucket_Is429WhateverTheProtocol(Protocol protocol)
    {
        var bucket = ("X-Bucket", "bucket-" + protocol);
        var (first, _) = await SendAsync(protocol, HttpMethod.Get, "/limited/hello", [bucket]);
        var (second, _) = await SendAsync(protocol, HttpMethod.Get, "/limited/hello", [bucket]);
        Assert.Equal(200, (int)first.StatusCode);
        Assert.Equal(429, (int)second.StatusCode);
    }

    [Theory]
    [InlineData(Protocol.H2c, "http")]
    [InlineData(Protocol.H2Tls, "https")]
    public async Task Forwarded_IdentitiesAreTheGatewaysAndCannotBeSpoofed(Protocol protocol, string proto)
    {
        var (response, body) = await SendAsync(protocol, HttpMethod.Get, "/keyed/echo",
            [("X-API-Key", Key), ("X-Consumer-Id", "mallory"), ("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "evil.example"),
             ("X-Real-IP", "10.9.9.9"), ("X-Request-Id", "req-h2-1")]);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Contains("\"path\":\"/echo\"", body);
        var echoed = JsonDocument.Parse(body).RootElement.GetProperty("headers");
        string? Header(string name) => echoed.EnumerateObject().FirstOrDefault(p => p.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Value is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;
        Assert.Equal("alice", Header("X-Consumer-Id"));
        Assert.Equal(proto, Header("X-Forwarded-Proto"));
        Assert.Equal("127.0.0.1", Header("X-Forwarded-For"));
        Assert.Null(Header("X-Real-IP"));
        Assert.Null(Header("X-API-Key")); // the credential the gateway consumed is not forwarded
        Assert.Equal("req-h2-1", Header("X-Request-Id"));
        Assert.Equal("req-h2-1", response.Headers.GetValues("X-Request-Id").Single());
    }

    [Fact]
    public async Task H2Requests_AreCountedAndLoggedPerRoute()
    {
        static double Value(string exposition, string sample)
        {
            foreach (var line in exposition.Split('\n'))
                if (line.StartsWith(sample + " ", StringComparison.Ordinal))
                    return double.Parse(line[(sample.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            return 0;
        }
        double before = Value(await _gateway.ScrapeMetricsAsync(), "fastgate_requests_total{route=\"tea\",code=\"418\"}");
        await SendAsync(Protocol.H2c, HttpMethod.Get, "/tea");
        await SendAsync(Protocol.H2Tls, HttpMethod.Get, "/tea");
        // a stream is recorded just after its response ends: the count may lag the client by a moment
        await Eventually.WaitUntilAsync(async () => Value(await _gateway.ScrapeMetricsAsync(), "fastgate_requests_total{route=\"tea\",code=\"418\"}") - before == 2,
            "both HTTP/2 requests are counted for the route");
    }

    [Fact]
    public async Task H2cListener_StillServesStrictHttp11_AndRefusesWhatItRefused()
    {
        // on an "http2" listener an HTTP/1.1 connection goes to the same strict loop: a smuggling attempt is a 400
        using var client = await RawClient.ConnectAsync(_gateway.Host.ListenerEndPoints[0]);
        await client.SendAsync("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(400, response.Status);
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task H2_RequestBodyStreamsToTheUpstream_AndTheResponseComesBack()
    {
        var payload = new string('x', 200_000);
        var (response, body) = await SendAsync(Protocol.H2c, HttpMethod.Post, "/echo", body: payload);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Contains("\"bodyBytes\":200000", body);
    }

    [Fact]
    public async Task PlainListenerWithoutHttp2_ClosesAnH2cPreface()
    {
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(_upstream.Address.ToString().TrimEnd('/')));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.InRange(response.Status, 400, 505); // the HTTP/1.1 parser refuses the preface: no HTTP/2 unless enabled
    }

    [Theory]
    [InlineData("\"http2\": \"yes\"", "", "$.listeners[0].http2")]
    [InlineData("\"http2\": true", "\"protocol\": \"h3\",", "$.clusters[0].protocol")]
    public void Config_BadHttp2OrProtocol_IsAnErrorAtItsJsonPath(string listener, string cluster, string path)
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load($$"""
            { "listeners": [ { "address": "127.0.0.1:0", {{listener}} } ],
              "clusters": [ { "id": "c", {{cluster}} "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "c" } ] }
            """);
        Assert.Contains(loaded.Errors, e => e.Path == path);
    }

    [Fact]
    public void Config_Http2ListenerAndH2Cluster_AreValid()
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load("""
            { "listeners": [ { "address": "127.0.0.1:0", "http2": true } ],
              "clusters": [ { "id": "c", "protocol": "h2", "destinations": [ { "address": "http://127.0.0.1:1" } ] } ],
              "routes": [ { "id": "r", "match": { "pathPrefix": "/" }, "cluster": "c" } ] }
            """);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        Assert.True(loaded.Config!.Listeners[0].Http2);
        Assert.Equal(FastGate.Configuration.UpstreamProtocol.H2, loaded.Config.Clusters[0].Protocol);
    }
}
