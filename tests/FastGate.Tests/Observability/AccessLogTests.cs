using System.Diagnostics;
using System.Text;
using System.Text.Json;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Observability;

public class AccessLogTests
{
    private static string TempPath() => Path.Combine(Path.GetTempPath(), "fastgate-tests", Guid.NewGuid().ToString("n"), "access.log");

    private static List<JsonElement> ReadLines(string path) =>
        File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement).ToList();

    [Fact]
    public async Task RealGateway_WritesOneJsonLinePerRequest_WithTheFields_AndNoSecrets()
    {
        var path = TempPath();
        await using var upstream = new SwitchableUpstream();
        var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            $$"""
            "accessLog": { "path": "{{path.Replace("\\", "\\\\")}}", "sampleRate": 1 }
            """, routeId: "log-route"));
        const string incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        string upstreamHead;
        try
        {
            using var client = await RawClient.ConnectAsync(gateway.EndPoint);
            await client.SendAsync("GET /orders/7?api_key=s3cr3t-key&page=2 HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer s3cr3t-token\r\n" +
                                   "Cookie: session=s3cr3t-cookie\r\nX-Api-Key: s3cr3t-header\r\nX-Request-Id: req-123\r\ntraceparent: " + incoming + "\r\n\r\n");
            var first = await client.ReadResponseAsync();
            Assert.Equal(200, first.Status);
            upstreamHead = upstream.LastHead;
            upstream.Status = 503;
            await client.SendAsync("POST /pay HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello");
            Assert.Equal(503, (await client.ReadResponseAsync()).Status);
            await client.SendAsync("GET /bad HTTP/1.1\r\nHost: a\r\nX: 1\r\n continued\r\n\r\n");
            Assert.Equal(400, (await client.ReadResponseAsync()).Status);
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= 3, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }

        // the upstream got the caller's trace with a new parent id
        var sent = upstreamHead.Split("\r\n").Single(l => l.StartsWith("traceparent:", StringComparison.OrdinalIgnoreCase))["traceparent:".Length..].Trim();
        Assert.StartsWith("00-0af7651916cd43dd8448eb211c80319c-", sent);
        Assert.NotEqual(incoming, sent);

        var text = File.ReadAllText(path);
        foreach (var secret in new[] { "s3cr3t-key", "s3cr3t-token", "s3cr3t-cookie", "s3cr3t-header", "Bearer" })
            Assert.DoesNotContain(secret, text);
        var lines = ReadLines(path);
        Assert.Equal(3, lines.Count);
        var ok = lines[0];
        Assert.Equal("req-123", ok.GetProperty("request_id").GetString());
        Assert.Equal("0af7651916cd43dd8448eb211c80319c", ok.GetProperty("trace_id").GetString());
        Assert.Equal("127.0.0.1", ok.GetProperty("client_ip").GetString());
        Assert.Equal("GET", ok.GetProperty("method").GetString());
        Assert.Equal("shop.test", ok.GetProperty("host").GetString());
        Assert.Equal("/orders/7?REDACTED", ok.GetProperty("path").GetString());
        Assert.Equal("log-route", ok.GetProperty("route").GetString());
        Assert.Equal("", ok.GetProperty("consumer").GetString());
        Assert.Equal(200, ok.GetProperty("status").GetInt32());
        Assert.True(ok.GetProperty("bytes_in").GetInt64() > 0);
        Assert.True(ok.GetProperty("bytes_out").GetInt64() > 0);
        Assert.Equal(upstream.Address, ok.GetProperty("upstream").GetString());
        Assert.True(ok.GetProperty("upstream_ms").GetDouble() >= 0);
        Assert.True(ok.GetProperty("total_ms").GetDouble() >= ok.GetProperty("upstream_ms").GetDouble());
        Assert.Equal("forwarded", ok.GetProperty("decision").GetString());
        Assert.True(DateTimeOffset.TryParse(ok.GetProperty("ts").GetString(), out _));

        var failed = lines[1];
        Assert.Equal(503, failed.GetProperty("status").GetInt32());
        Assert.Equal("/pay", failed.GetProperty("path").GetString());
        Assert.Equal(32, failed.GetProperty("trace_id").GetString()!.Length); // a new trace
        Assert.Equal(32, failed.GetProperty("request_id").GetString()!.Length);

        var rejected = lines[2];
        Assert.Equal(400, rejected.GetProperty("status").GetInt32());
        Assert.Equal("obsolete_line_folding", rejected.GetProperty("decision").GetString());
        Assert.Equal("", rejected.GetProperty("route").GetString());
    }

    [Theory]
    [InlineData("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", true)]
    [InlineData("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", false)]
    [InlineData(null, false)]
    public async Task Upstream_GetsOneValidTraceparent_AndTracestateOnlyWithAValidIncomingOne(string? incoming, bool continued)
    {
        await using var upstream = new SwitchableUpstream();
        await using var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address, "", "trace-route"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("GET / HTTP/1.1\r\nHost: t\r\n" + (incoming is null ? "" : $"traceparent: {incoming}\r\n") + "tracestate: vendor=abc\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        var lines = upstream.LastHead.Split("\r\n");
        var sent = Assert.Single(lines, l => l.StartsWith("traceparent:", StringComparison.OrdinalIgnoreCase))["traceparent:".Length..].Trim();
        Assert.True(FastGate.Observability.TraceContext.TryParse(Encoding.ASCII.GetBytes(sent), out var parsed), sent);
        Assert.Equal(continued, parsed.TraceIdString() == "0af7651916cd43dd8448eb211c80319c");
        Assert.Equal(continued, lines.Any(l => l.Equals("tracestate: vendor=abc", StringComparison.OrdinalIgnoreCase)));
    }

    [Fact]
    public async Task RelativePath_ResolvesAgainstTheConfigFilesDirectory_NotTheWorkingDirectory()
    {
        var dir = Path.Combine(Path.GetTempPath(), "fastgate-tests", Guid.NewGuid().ToString("n"));
        Directory.CreateDirectory(dir);
        var relative = Path.Combine("logs-" + Guid.NewGuid().ToString("n"), "access.log");
        Assert.NotEqual(Path.GetFullPath(dir), Path.GetFullPath(Directory.GetCurrentDirectory()));
        await using var upstream = new SwitchableUpstream();
        var configPath = Path.Combine(dir, "fastgate.json");
        File.WriteAllText(configPath, ObsConfig.Gateway(upstream.Address,
            $$"""
            "accessLog": { "path": "{{relative.Replace("\\", "\\\\")}}", "sampleRate": 1 }
            """, routeId: "log-relative"));
        var expected = Path.Combine(dir, relative);
        Assert.Equal(expected, ConfigLoaderPath(configPath));

        var gateway = await TestGateway.StartFromFileAsync(configPath);
        try
        {
            using var http = gateway.CreateClient();
            Assert.Equal(200, (int)(await http.GetAsync("/relative")).StatusCode);
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= 1, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }
        var line = Assert.Single(ReadLines(expected));
        Assert.Equal("/relative", line.GetProperty("path").GetString());
        Assert.False(File.Exists(Path.Combine(Directory.GetCurrentDirectory(), relative)), "the log went to the working directory");
    }

    private static string ConfigLoaderPath(string configPath)
    {
        var loaded = FastGate.Configuration.ConfigLoader.LoadFile(configPath);
        Assert.True(loaded.IsValid, string.Join("; ", loaded.Errors));
        return loaded.Config!.Observability.AccessLog.Path;
    }

    [Fact]
    public async Task IncludeQuery_KeepsTheQuery_ButRedactsCredentialParameters()
    {
        var path = TempPath();
        await using var upstream = new SwitchableUpstream();
        var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            $$"""
            "accessLog": { "path": "{{path}}", "includeQuery": true }
            """, routeId: "log-query"));
        try
        {
            using var http = gateway.CreateClient();
            await http.GetAsync("/search?q=shoes&access_token=abc123&page=2");
        }
        finally
        {
            await gateway.DisposeAsync();
        }
        var line = Assert.Single(ReadLines(path));
        Assert.Equal("/search?q=shoes&access_token=REDACTED&page=2", line.GetProperty("path").GetString());
    }

    [Fact]
    public async Task GatewayWrittenResponses_CarryXRequestId_AndTheLogShowsTheSameOne()
    {
        var path = TempPath();
        await using var upstream = new SwitchableUpstream();
        using var dead = Ports.Refusing();
        var gateway = await TestGateway.StartAsync($$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "accessLog": { "path": "{{path}}", "sampleRate": 1 },
              "clusters": [ { "id": "up", "destinations": [ { "address": "{{upstream.Address}}" } ] },
                            { "id": "dead", "destinations": [ { "address": "{{dead.Address}}" } ] } ],
              "consumers": [ { "id": "alice", "apiKeys": [ "{{FastGate.Security.ApiKeys.Hash("alice-key-123456")}}" ] } ],
              "cors": [ { "id": "web", "origins": ["https://app.example.com"], "credentials": true } ],
              "rateLimits": [ { "id": "one", "rate": 1, "per": "1h", "burst": 1, "key": "clientIp" } ],
              "routes": [
                { "id": "open", "match": { "pathPrefix": "/open" }, "cluster": "up", "cors": "web" },
                { "id": "auth", "match": { "pathPrefix": "/auth" }, "cluster": "up", "auth": ["apiKey"] },
                { "id": "limited", "match": { "pathPrefix": "/limited" }, "cluster": "up", "rateLimits": ["one"] },
                { "id": "dead", "match": { "pathPrefix": "/dead" }, "cluster": "dead" }
              ],
              "policies": [
                { "id": "deny-admin", "match": { "paths": ["/open/admin/*"] }, "actions": [ { "type": "deny", "status": 403 } ] },
                { "id": "teapot", "match": { "paths": ["/open/tea"] }, "actions": [ { "type": "respond", "status": 418, "body": "tea" } ] }
              ]
            }
            """);
        var sent = new List<(int Status, string Id)>();
        try
        {
            using var client = await RawClient.ConnectAsync(gateway.EndPoint);
            async Task Exchange(string head, int status)
            {
                await client.SendAsync(head + "\r\n");
                var r = await client.ReadResponseAsync();
                Assert.Equal(status, r.Status);
                Assert.True(r.Headers.TryGetValue("X-Request-Id", out var id), $"{status} has no X-Request-Id");
                sent.Add((status, id!));
            }
            await Exchange("GET /auth/x HTTP/1.1\r\nHost: a\r\n", 401);
            await Exchange("GET /auth/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-id-7\r\n", 401);
            await Exchange("GET /open/admin/x HTTP/1.1\r\nHost: a\r\n", 403);
            await Exchange("GET /open/tea HTTP/1.1\r\nHost: a\r\n", 418);
            await Exchange("GET /limited HTTP/1.1\r\nHost: a\r\n", 200);
            await Exchange("GET /limited HTTP/1.1\r\nHost: a\r\n", 429);
            await Exchange("GET /nothing HTTP/1.1\r\nHost: a\r\n", 404);
            await Exchange("GET /dead HTTP/1.1\r\nHost: a\r\n", 502);
            await Exchange("OPTIONS /open HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: GET\r\n", 204);
            await Exchange("OPTIONS /open HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n", 403);
            await Exchange("GET /bad HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-id-8\r\nX: 1\r\n continued\r\n", 400);
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= sent.Count, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }
        var lines = ReadLines(path);
        Assert.Equal(sent.Select(s => s.Status), lines.Select(l => l.GetProperty("status").GetInt32()));
        for (int i = 0; i < sent.Count; i++)
            Assert.Equal(sent[i].Id, lines[i].GetProperty("request_id").GetString());
        Assert.Equal("client-id-7", sent[1].Id); // a client's valid id is kept
        Assert.NotEqual("client-id-8", sent[^1].Id); // an id from a refused head is not trusted: a new one
        var generated = sent.Where((_, i) => i != 1).Select(s => s.Id).ToList();
        Assert.All(generated, id => Assert.Equal(32, id.Length));
        Assert.Equal(generated.Count, generated.Distinct().Count()); // one id per request, never one left over from the last
    }

    /// <summary>Sends one request that asks to close and returns every byte the gateway wrote back.</summary>
    private static async Task<int> ReceivedBytes(TestGateway gateway, string request)
    {
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(gateway.EndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var buffer = new byte[4096];
        int total = 0, n;
        while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0) total += n;
        return total;
    }

    [Fact]
    public async Task BytesOut_IsEveryByteTheClientReceived_ForChunkedAndContentLengthBodies()
    {
        var path = TempPath();
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            while (true)
            {
                var head = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (head.Length == 0) return;
                if (head.StartsWith("GET /chunked", StringComparison.Ordinal))
                {
                    await stream.WriteAsync("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"u8.ToArray(), cancel);
                    for (int i = 0; i < 5; i++)
                    {
                        await stream.WriteAsync(Encoding.ASCII.GetBytes($"{1000 + i:x};ext=1\r\n{new string('c', 1000 + i)}\r\n"), cancel);
                        await stream.FlushAsync(cancel);
                    }
                    await stream.WriteAsync("0\r\nX-Trailer: t\r\n\r\n"u8.ToArray(), cancel);
                }
                else
                {
                    var body = new string('l', 20000);
                    await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\n\r\n"), cancel);
                    await stream.WriteAsync(Encoding.ASCII.GetBytes(body[..7000]), cancel);
                    await stream.FlushAsync(cancel);
                    await stream.WriteAsync(Encoding.ASCII.GetBytes(body[7000..]), cancel);
                }
            }
        });
        var gateway = await TestGateway.StartAsync(ObsConfig.Gateway(upstream.Address,
            $$"""
            "accessLog": { "path": "{{path}}", "sampleRate": 1 }
            """, routeId: "bytes-route"));
        int chunked, length;
        try
        {
            chunked = await ReceivedBytes(gateway, "GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            length = await ReceivedBytes(gateway, "GET /length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        }
        finally
        {
            await gateway.DisposeAsync();
        }
        Assert.True(chunked > 5000 && length > 20000, $"{chunked} {length}");
        var lines = ReadLines(path);
        Assert.Equal(2, lines.Count);
        Assert.Equal(chunked, lines[0].GetProperty("bytes_out").GetInt64());
        Assert.Equal(length, lines[1].GetProperty("bytes_out").GetInt64());
    }

    private static void Write(AccessLog log, int status, string requestId)
    {
        var record = new RequestRecord
        {
            ClientIp = "10.0.0.1"u8, Method = "GET"u8, Host = "h"u8, Path = "/p"u8,
            RequestId = Encoding.ASCII.GetBytes(requestId), Status = status,
            Reason = status == 502 ? RejectReason.UpstreamReset : RejectReason.None,
            StartTimestamp = Stopwatch.GetTimestamp(),
        };
        log.TryWrite(record);
    }

    /// <summary>A stream whose writes wait until released: a disk that stopped.</summary>
    private sealed class StalledStream : MemoryStream
    {
        public readonly ManualResetEventSlim Release = new(false);
        public readonly ManualResetEventSlim Entered = new(false);

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            Entered.Set();
            Release.Wait(TimeSpan.FromSeconds(30)); // never forever, even when the test fails before it releases
            base.Write(buffer.ToArray(), 0, buffer.Length);
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(new ReadOnlySpan<byte>(buffer, offset, count));
    }

    [Fact]
    public async Task BlockedWriter_DropsAndCounts_InsteadOfBlocking()
    {
        var stream = new StalledStream();
        var metrics = new GatewayMetrics();
        var log = new AccessLog(new AccessLogConfig { Enabled = true, BufferEntries = 16 }, output: stream, metrics: metrics);
        Write(log, 200, "first");
        Assert.True(stream.Entered.Wait(TimeSpan.FromSeconds(10)), "the writer never started writing");
        // The writer is now stuck in Write; the ring holds 16 entries, the rest must be dropped, not waited for.
        int accepted = 0;
        for (int i = 0; i < 100; i++)
        {
            var record = new RequestRecord { ClientIp = "10.0.0.1"u8, RequestId = Encoding.ASCII.GetBytes($"r{i}"), Status = 500 };
            if (log.TryWrite(record)) accepted++;
        }
        Assert.Equal(16, accepted);
        Assert.Equal(84, log.Dropped);
        Assert.Equal(84, metrics.AccessLogDropped.Value);
        stream.Release.Set();
        await log.DisposeAsync();
        Assert.Equal(17, log.Written);
        Assert.Equal(17, metrics.AccessLogWritten.Value);
        Assert.Equal(17, Encoding.UTF8.GetString(stream.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public async Task SampleRateZero_DropsSuccesses_ButAlwaysLogsErrors()
    {
        var stream = new MemoryStream();
        var log = new AccessLog(new AccessLogConfig { Enabled = true, SampleRate = 0 }, output: stream);
        for (int i = 0; i < 50; i++) Write(log, 200, $"ok{i}");
        Write(log, 404, "not-found");
        Write(log, 502, "bad-gateway");
        await log.DisposeAsync();
        var ids = Encoding.UTF8.GetString(stream.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("request_id").GetString()).ToList();
        Assert.Equal(["not-found", "bad-gateway"], ids);
    }

    [Fact]
    public async Task FileSink_RotatesBySize_AndKeepsMaxFiles()
    {
        var path = TempPath();
        var log = new AccessLog(new AccessLogConfig { Enabled = true, Path = path, MaxFileBytes = 4096, MaxFiles = 3, BufferEntries = 4096 });
        for (int i = 0; i < 400; i++)
        {
            Write(log, 500, $"request-{i:D5}");
            if (i % 50 == 49) await Task.Yield();
        }
        await log.DisposeAsync();
        var dir = Path.GetDirectoryName(path)!;
        var files = Directory.GetFiles(dir).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(["access.log", "access.log.1", "access.log.2"], files);
        foreach (var f in Directory.GetFiles(dir)) Assert.InRange(new FileInfo(f).Length, 1, 4096);
        // the newest entries are in the current file, every line is whole JSON
        var last = ReadLines(path).Last();
        Assert.Equal("request-00399", last.GetProperty("request_id").GetString());
        foreach (var f in Directory.GetFiles(dir)) _ = ReadLines(f);
    }

    [Fact]
    public async Task TryWrite_DoesNotAllocate()
    {
        var log = new AccessLog(new AccessLogConfig { Enabled = true, BufferEntries = 1 << 16 }, output: Stream.Null);
        Assert.Equal(0, Measure(log));
        await log.DisposeAsync();
    }

    private static long Measure(AccessLog log)
    {
        var ip = "10.0.0.1"u8.ToArray();
        var id = "abc"u8.ToArray();
        var record0 = new RequestRecord { ClientIp = ip, RequestId = id, Status = 200 };
        log.TryWrite(record0);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            var record = new RequestRecord { ClientIp = ip, RequestId = id, Method = "GET"u8, Path = "/x"u8, Status = 200 + i % 300 };
            log.TryWrite(record);
        }
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}
