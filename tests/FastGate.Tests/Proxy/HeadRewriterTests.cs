using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Proxy;
using FastGate.Security;

namespace FastGate.Tests.Proxy;

/// <summary>
/// HeadRewriter as the pure functions it is: a parsed head (and the compiled config it is matched against) in, the
/// bytes written to a Pipe out. The gateway tests cover the same rules end to end; these pin each one down alone.
/// </summary>
public sealed class HeadRewriterTests : IDisposable
{
    private const string AliceKey = "alice-secret-key-1";
    private const string ClientIp = "203.0.113.7";
    private const string TrustedProxyIp = "198.51.100.1";

    private static readonly string ConfigJson = $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "backend", "destinations": [ { "address": "http://10.0.0.5:8080" } ] } ],
          "consumers": [ { "id": "alice", "apiKeys": [ "{{ApiKeys.Hash(AliceKey)}}" ] } ],
          "apiKeys": { "queryParameter": "api_key" },
          "trustedProxies": ["198.51.100.0/24"],
          "routes": [
            { "id": "stripped", "match": { "pathPrefix": "/svc" }, "cluster": "backend", "stripPrefix": true },
            { "id": "preserved", "match": { "hosts": ["keep.example.com"] }, "cluster": "backend", "preserveHost": true },
            { "id": "key-forwarded", "match": { "pathPrefix": "/fwd" }, "cluster": "backend", "forwardApiKey": true },
            { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ]
        }
        """;

    private readonly UpstreamPoolStore _pools = new(new FastGate.Observability.GatewayMetrics());
    private readonly GatewaySnapshot _snapshot;

    public HeadRewriterTests()
    {
        var loaded = ConfigLoader.Load(ConfigJson);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        _snapshot = SnapshotCompiler.Compile(loaded.Config!, loaded.Text, _pools);
    }

    public void Dispose() => _pools.Dispose();

    private RequestHead ParseRequest(string text)
    {
        var head = new RequestHead();
        var status = HttpRequestParser.TryParse(Encoding.Latin1.GetBytes(text), _snapshot.Limits, head, out _, out var reason);
        Assert.True(status == ParseStatus.Complete, $"{status} {reason}");
        return head;
    }

    /// <summary>The upstream request head for <paramref name="request"/>, as the proxy would write it.</summary>
    private string Upstream(string request, bool tls = false, bool fromTrustedProxy = false, string requestId = "req-1",
        string traceParent = "")
    {
        using var head = ParseRequest(request);
        // decided as the request path decides it (Pipeline/Admission), then rewritten from the exchange
        var x = new FastGate.Pipeline.Exchange(head, new PolicyResult());
        var peer = fromTrustedProxy ? TrustedProxyIp : ClientIp;
        x.Begin(Encoding.ASCII.GetBytes(peer), ClientAddress.From(IPAddress.Parse(peer)), null);
        FastGate.Pipeline.Admission.Decide(_snapshot, x, null);
        Assert.NotNull(x.Route);
        var pipe = new Pipe();
        HeadRewriter.WriteUpstreamRequest(pipe.Writer, x, x.Route.Cluster.Destinations[0], Encoding.ASCII.GetBytes(requestId), tls,
            Encoding.ASCII.GetBytes(traceParent), dropTraceState: false);
        return Drain(pipe);
    }

    /// <summary>The client response head for <paramref name="response"/> to <paramref name="request"/>.</summary>
    private string Client(string response, string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n", bool close = false, bool interim = false,
        string extraHeaders = "", string requestId = "req-1")
    {
        using var req = ParseRequest(request);
        using var resp = new ResponseHead();
        var status = HttpResponseParser.TryParse(new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(response)), _snapshot.Limits, resp,
            req.Method, out _, out var reason);
        Assert.True(status == ParseStatus.Complete, $"{status} {reason}");
        var pipe = new Pipe();
        var x = new FastGate.Pipeline.Exchange(req, new PolicyResult());
        x.Begin(Encoding.ASCII.GetBytes(ClientIp), ClientAddress.From(IPAddress.Parse(ClientIp)), null);
        HeadRewriter.WriteClientResponse(pipe.Writer, resp, x, Encoding.ASCII.GetBytes(requestId), close, interim, Encoding.ASCII.GetBytes(extraHeaders));
        return Drain(pipe);
    }

    private static string Drain(Pipe pipe)
    {
        pipe.Writer.Complete();
        Assert.True(pipe.Reader.TryRead(out var result));
        var text = Encoding.Latin1.GetString(result.Buffer.ToArray());
        pipe.Reader.AdvanceTo(result.Buffer.End);
        return text;
    }

    private static string[] Lines(string head) => head.Split("\r\n");

    // ---- the upstream request ----

    [Fact]
    public void PlainRequest_GetsTheDestinationAuthorityAndTheForwardingHeaders_InThisOrder()
    {
        Assert.Equal(
            "GET /a?x=1 HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nAccept: */*\r\n" +
            "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: api.example.com\r\nX-Request-Id: req-1\r\n\r\n",
            Upstream("GET /a?x=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"));
    }

    [Fact]
    public void HopByHopHeaders_AndTheHeadersConnectionNames_AreRemoved()
    {
        var head = Upstream("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
                            "TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n");
        foreach (var name in new[] { "Connection:", "X-Hop:", "Keep-Alive:", "TE:", "Trailer:", "Proxy-Connection:", "Upgrade:" })
            Assert.DoesNotContain(Lines(head), l => l.StartsWith(name, StringComparison.OrdinalIgnoreCase));
        Assert.Contains("X-Kept: 2", Lines(head));
    }

    [Fact]
    public void ForwardingHeaders_AppendToXForwardedFor_AndReplaceProtoHostAndRequestId()
    {
        var head = Upstream("GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 198.51.100.2\r\n" +
                            "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Request-Id: client-chosen\r\n\r\n", tls: true);
        var lines = Lines(head);
        Assert.Equal("X-Forwarded-For: 198.51.100.1, 198.51.100.2, 203.0.113.7", Assert.Single(lines, l => l.StartsWith("X-Forwarded-For:")));
        Assert.Equal("X-Forwarded-Proto: https", Assert.Single(lines, l => l.StartsWith("X-Forwarded-Proto:")));
        Assert.Equal("X-Forwarded-Host: api.example.com", Assert.Single(lines, l => l.StartsWith("X-Forwarded-Host:")));
        Assert.Equal("X-Request-Id: req-1", Assert.Single(lines, l => l.StartsWith("X-Request-Id:")));
    }

    [Fact]
    public void ForwardedAndXRealIp_AreDropped_UnlessThePeerIsATrustedProxy()
    {
        const string request = "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=192.0.2.9\r\nX-Real-IP: 192.0.2.9\r\n\r\n";
        var untrusted = Lines(Upstream(request));
        Assert.DoesNotContain(untrusted, l => l.StartsWith("Forwarded:") || l.StartsWith("X-Real-IP:"));
        var trusted = Lines(Upstream(request, fromTrustedProxy: true));
        Assert.Contains("Forwarded: for=192.0.2.9", trusted);
        Assert.Contains("X-Real-IP: 192.0.2.9", trusted);
    }

    [Theory]
    [InlineData("//a//b", "/a/b")]
    [InlineData("/%61/%62c", "/a/bc")] // unreserved characters decoded (dot segments never get here: they are refused)
    [InlineData("/a?x=%2F&y", "/a?x=%2F&y")] // the query is sent as it came
    public void ThePathForwardedIsTheCanonicalPath(string target, string forwarded)
    {
        Assert.StartsWith($"GET {forwarded} HTTP/1.1\r\n", Upstream($"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    [Theory]
    [InlineData("API.Example.COM", "api.example.com")]
    [InlineData("api.example.com.", "api.example.com")]
    [InlineData("API.example.com.:8443", "api.example.com:8443")] // lower-case without the dot, with the port
    public void XForwardedHost_IsTheCanonicalAuthority(string host, string forwarded)
    {
        Assert.Contains($"\r\nX-Forwarded-Host: {forwarded}\r\n", Upstream($"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
    }

    [Theory]
    [InlineData("/svc/x", "/x")]
    [InlineData("/svc", "/")]
    [InlineData("/svc/", "/")]
    [InlineData("/svc?a=1", "/?a=1")]
    [InlineData("/svcx", "/svcx")] // another route: prefixes are whole segments
    public void StripPrefix_RemovesTheRoutePrefix(string target, string forwarded)
    {
        Assert.StartsWith($"GET {forwarded} HTTP/1.1\r\n", Upstream($"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    [Fact]
    public void PreserveHost_SendsTheClientsCanonicalHost()
    {
        Assert.Contains("\r\nHost: keep.example.com\r\n", Upstream("GET / HTTP/1.1\r\nHost: Keep.Example.com\r\n\r\n"));
        Assert.Contains("\r\nHost: 10.0.0.5:8080\r\n", Upstream("GET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n"));
    }

    [Fact]
    public void IdentityHeaders_AndTheirUnderscoreSpellings_AreDropped_TheGatewaySetsTheConsumer()
    {
        var head = Upstream("GET / HTTP/1.1\r\nHost: a\r\nX-Consumer-Id: mallory\r\nX_Consumer_Id: mallory\r\nX-Subject-Id: mallory\r\n" +
                            $"X-Subject-Issuer: mallory\r\nX_Forwarded_For: 192.0.2.66\r\nX-API-Key: {AliceKey}\r\n\r\n");
        Assert.DoesNotContain("mallory", head);
        Assert.DoesNotContain("192.0.2.66", head);
        Assert.Contains("X-Consumer-Id: alice", Lines(head));
        Assert.DoesNotContain(Lines(head), l => l.StartsWith("X_", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("X-API-Key: " + AliceKey)]
    [InlineData("Authorization: ApiKey " + AliceKey)]
    public void TheApiKey_IsNotForwarded_UnlessTheRouteForwardsIt(string credential)
    {
        Assert.DoesNotContain(AliceKey, Upstream($"GET /x HTTP/1.1\r\nHost: a\r\n{credential}\r\n\r\n"));
        Assert.Contains(credential + "\r\n", Upstream($"GET /fwd HTTP/1.1\r\nHost: a\r\n{credential}\r\n\r\n"));
    }

    [Fact]
    public void OtherAuthorization_IsForwarded()
    {
        Assert.Contains("Authorization: Bearer abc\r\n", Upstream("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\n\r\n"));
    }

    [Theory]
    [InlineData("/x?a=1&api_key=" + AliceKey + "&b=2", "/x?a=1&b=2")]
    [InlineData("/x?api_key=" + AliceKey, "/x")]
    [InlineData("/x?api_key=" + AliceKey + "&x=api_key%3D", "/x?x=api_key%3D")]
    [InlineData("/svc/y?api_key=" + AliceKey + "&b=2", "/y?b=2")]
    [InlineData("/fwd?api_key=" + AliceKey, "/fwd?api_key=" + AliceKey)]
    public void TheApiKeyQueryParameter_IsDroppedFromTheForwardedQuery(string target, string forwarded)
    {
        Assert.StartsWith($"GET {forwarded} HTTP/1.1\r\n", Upstream($"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    [Fact]
    public void Http10Request_IsSentAsHttp10WithConnectionClose_AndNoForwardedHostWithoutAHost()
    {
        Assert.Equal(
            "GET / HTTP/1.0\r\nHost: 10.0.0.5:8080\r\n" +
            "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\nX-Request-Id: req-1\r\nConnection: close\r\n\r\n",
            Upstream("GET / HTTP/1.0\r\n\r\n"));
    }

    [Fact]
    public void UpgradeRequest_KeepsConnectionUpgradeAndTheUpgradeToken()
    {
        var head = Upstream("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n");
        Assert.EndsWith("X-Request-Id: req-1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", head);
        Assert.Single(Lines(head), l => l.StartsWith("Upgrade:"));
        Assert.Contains("Sec-WebSocket-Version: 13", Lines(head));
    }

    [Fact]
    public void RepeatedEqualContentLengths_GoOnAsOne_AndExpectIsTheGatewaysToAnswer()
    {
        var head = Upstream("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        Assert.Equal("Content-Length: 5", Assert.Single(Lines(head), l => l.StartsWith("Content-Length:")));
        Assert.DoesNotContain(Lines(head), l => l.StartsWith("Expect:"));
    }

    [Fact]
    public void AGivenTraceParent_ReplacesTheClients()
    {
        const string ours = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        var head = Upstream("GET / HTTP/1.1\r\nHost: a\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n\r\n", traceParent: ours);
        Assert.Equal("traceparent: " + ours, Assert.Single(Lines(head), l => l.StartsWith("traceparent:")));
    }

    // ---- the client response ----

    [Fact]
    public void Response_HopByHopRemoved_RequestIdAdded()
    {
        Assert.Equal("HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 2\r\nX-Request-Id: req-1\r\n\r\n",
            Client("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: up\r\nContent-Length: 2\r\n\r\n"));
    }

    [Fact]
    public void Response_TheUpstreamsRequestIdIsKept_NotDuplicated()
    {
        var head = Client("HTTP/1.1 200 OK\r\nX-Request-Id: upstream-id\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal("X-Request-Id: upstream-id", Assert.Single(Lines(head), l => l.StartsWith("X-Request-Id:")));
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, null)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, "close")]
    [InlineData("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false, "keep-alive")]
    [InlineData("GET / HTTP/1.0\r\n\r\n", true, "close")]
    public void Response_ConnectionHeader_ForHttp10AndClose(string request, bool close, string? connection)
    {
        var lines = Lines(Client("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", request, close));
        if (connection is null) Assert.DoesNotContain(lines, l => l.StartsWith("Connection:"));
        else Assert.Equal("Connection: " + connection, Assert.Single(lines, l => l.StartsWith("Connection:")));
    }

    [Fact]
    public void Response_SwitchingProtocols_KeepsConnectionUpgrade()
    {
        var head = Client("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        Assert.EndsWith("X-Request-Id: req-1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", head);
        Assert.Single(Lines(head), l => l.StartsWith("Connection:"));
    }

    [Fact]
    public void Response_NoFramingOn204_A304KeepsItsContentLength()
    {
        Assert.DoesNotContain("Content-Length", Client("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"));
        Assert.Contains("Content-Length: 5\r\n", Client("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"));
        Assert.Equal("Content-Length: 5", Assert.Single(Lines(Client("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n")), l => l.StartsWith("Content-Length:")));
    }

    [Fact]
    public void Response_Interim_HasNoRequestIdNoConnectionNoExtraHeaders()
    {
        Assert.Equal("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            Client("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", close: true, interim: true, extraHeaders: "RateLimit: x\r\n"));
    }

    [Fact]
    public void Response_ExtraHeaders_ComeBeforeTheRequestId()
    {
        Assert.EndsWith("RateLimit-Remaining: 3\r\nX-Request-Id: req-1\r\n\r\n",
            Client("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", extraHeaders: "RateLimit-Remaining: 3\r\n"));
    }
}
