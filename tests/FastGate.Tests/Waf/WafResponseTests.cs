using System.Net;
using System.Net.Http;
using System.Text;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace FastGate.Tests.Waf;

/// <summary>
/// The response phases over real sockets: phase 3 on the upstream's status line and headers, phase 4 on its body
/// (read before any of the response goes out), block and detect modes, the listed types, the body limit
/// (ProcessPartial: the first bytes inspected, the whole body delivered), and profiles without inspectResponses.
/// </summary>
public sealed class WafResponseTests : IAsyncLifetime
{
    private MappedUpstream _upstream = null!;
    private string _address = "";
    private string _dir = "";
    private const string Leak = "You have an error in your SQL syntax near 'x'";
    private static readonly string Big = new string('a', 700_000);

    public async Task InitializeAsync()
    {
        _upstream = await MappedUpstream.StartAsync(app =>
        {
            app.MapGet("/page", () => Results.Text("<html><body>Welcome</body></html>", "text/html"));
            app.MapGet("/leak", () => Results.Text($"<html><body>{Leak}</body></html>", "text/html; charset=utf-8"));
            app.MapGet("/leak.json", () => Results.Text($"{{\"error\":\"{Leak}\"}}", "application/json"));
            app.MapGet("/leak-late", () => Results.Text(Big + Leak, "text/html"));   // the leak past the 512 KiB read
            app.MapGet("/leak-early", () => Results.Text(Leak + Big, "text/html"));
            app.MapGet("/debug", (HttpContext c) => { c.Response.Headers["X-Debug-Token"] = "abc"; return Results.Text("ok", "text/plain"); });
            app.MapGet("/error", () => Results.Text("<html>oops</html>", "text/html", statusCode: 500));
            // chunked (no Content-Length, flushed in pieces): the leak split across chunks
            app.MapGet("/chunked-page", async (HttpContext c) => await Pieces(c, "<html><body>", "Welcome", "</body></html>"));
            app.MapGet("/chunked-leak", async (HttpContext c) => await Pieces(c, "<html><body>You have an err", "or in your SQL syn", "tax near 'x'</body></html>"));
            app.MapGet("/chunked-late", async (HttpContext c) => await Pieces(c, Big[..300_000], Big[300_000..], Leak));
        });
        _address = _upstream.Address;

        _dir = Directory.CreateTempSubdirectory("fastgate-waf-resp-").FullName;
        Directory.CreateDirectory(Path.Combine(_dir, "rules"));
        File.WriteAllText(Path.Combine(_dir, "crs-setup.conf"), """
            SecDefaultAction "phase:1,log,pass"
            SecDefaultAction "phase:2,log,pass"
            SecAction "id:900110,phase:1,pass,nolog,setvar:tx.outbound_anomaly_score_threshold=4"
            """);
        // the shape of CRS's response rules: phase 3/4 rules add to the outbound score, 959100 denies on it in phase 4
        File.WriteAllText(Path.Combine(_dir, "rules", "response.conf"), """
            SecRule RESPONSE_HEADERS_NAMES "@streq x-debug-token" "id:950999,phase:3,block,t:none,t:lowercase,msg:'debug header',setvar:'tx.outbound_anomaly_score=+5'"
            SecRule RESPONSE_STATUS "@rx ^5\d\d$" "id:950998,phase:3,pass,t:none,msg:'5xx',setvar:'tx.outbound_anomaly_score=+1'"
            SecRule RESPONSE_BODY "@rx (?i)error in your SQL syntax" "id:951999,phase:4,block,t:none,msg:'SQL error leak',setvar:'tx.outbound_anomaly_score=+5'"
            SecRule TX:OUTBOUND_ANOMALY_SCORE "@ge %{tx.outbound_anomaly_score_threshold}" "id:959100,phase:4,deny,t:none,msg:'outbound score %{tx.outbound_anomaly_score}'"
            """);
    }

    private static async Task Pieces(HttpContext c, params string[] pieces)
    {
        c.Response.ContentType = "text/html";
        foreach (var p in pieces)
        {
            await c.Response.WriteAsync(p);
            await c.Response.Body.FlushAsync();
        }
    }

    public async Task DisposeAsync()
    {
        await _upstream.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string Config(string mode, string profileExtra = ", \"inspectResponses\": true") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_address}}" } ] } ],
          "waf": { "profiles": [ { "id": "app", "rules": "{{_dir}}", "mode": "{{mode}}"{{profileExtra}} } ] },
          "routes": [
            { "id": "protected", "match": { "pathPrefix": "/" }, "cluster": "backend", "waf": "app" }
          ]
        }
        """;

    private static async Task<RawResponse> Get(TestGateway gateway, string target, string method = "GET")
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync($"{method} {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n\r\n");
        return await client.ReadResponseAsync(headRequest: method == "HEAD");
    }

    private static double Value(string scrape, string series) => WafGatewayTests.Value(scrape, series);

    [Fact]
    public async Task Block_mode_refuses_responses_the_rules_deny_before_any_of_them_goes_out()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block"));
        var page = await Get(gateway, "/page");
        Assert.Equal(200, page.Status);
        Assert.Equal("<html><body>Welcome</body></html>", page.Body);
        var leak = await Get(gateway, "/leak");                       // phase 4 on the body: 951999 then 959100
        Assert.Equal(403, leak.Status);
        Assert.DoesNotContain("SQL", leak.Body, StringComparison.Ordinal);
        Assert.Equal(403, (await Get(gateway, "/debug")).Status);    // phase 3 on a header name; 959100 in phase 4
        var error = await Get(gateway, "/error");                     // 950998 adds 1: under the threshold
        Assert.Equal(500, error.Status);
        Assert.Equal("<html>oops</html>", error.Body);
        var json = await Get(gateway, "/leak.json");                  // not a listed type: phase 4 runs without the body
        Assert.Equal(200, json.Status);
        Assert.Contains(Leak, json.Body, StringComparison.Ordinal);

        var scrape = await gateway.ScrapeMetricsAsync();
        await Eventually.WaitUntilAsync(async () => Value(scrape = await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"passed\"}") == 3,
            "three passed responses counted");
        Assert.Equal(2, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"blocked\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"951999\",action=\"blocked\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"950999\",action=\"blocked\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"959100\",action=\"blocked\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"950998\",action=\"passed\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_rejections_total{reason=\"waf_blocked\"}"));
    }

    [Fact]
    public async Task Detect_mode_delivers_the_response_whole_and_counts_it()
    {
        await using var gateway = await TestGateway.StartAsync(Config("detect"));
        var leak = await Get(gateway, "/leak");
        Assert.Equal(200, leak.Status);
        Assert.Equal($"<html><body>{Leak}</body></html>", leak.Body);
        string scrape = "";
        await Eventually.WaitUntilAsync(async () => Value(scrape = await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"detected\"}") == 1,
            "the response counted as detected");
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"951999\",action=\"detected\"}"));
    }

    [Fact]
    public async Task A_body_longer_than_the_limit_has_its_first_bytes_inspected_and_arrives_whole()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block"));
        var late = await Get(gateway, "/leak-late");                  // the leak lies past the first 524,288 bytes
        Assert.Equal(200, late.Status);
        Assert.Equal(Big.Length + Leak.Length, late.Body.Length);
        Assert.Equal(Big + Leak, late.Body);
        Assert.Equal(403, (await Get(gateway, "/leak-early")).Status);
        // a keep-alive connection: an inspected response, then the next request on the same connection
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync("GET /page HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
            var page = await client.ReadResponseAsync();
            Assert.Equal(200, page.Status);
            Assert.Equal("<html><body>Welcome</body></html>", page.Body);
        }
    }

    [Fact]
    public async Task Chunked_bodies_are_inspected_across_their_chunks_and_relayed_whole()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block"));
        var leak = await Get(gateway, "/chunked-leak");
        Assert.Equal(403, leak.Status);
        Assert.DoesNotContain("SQL", leak.Body, StringComparison.Ordinal);
        var late = await Get(gateway, "/chunked-late");           // the leak past the first 524,288 bytes of data
        Assert.Equal(200, late.Status);
        Assert.Equal(Big + Leak, late.Body);
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        for (int i = 0; i < 3; i++)
        {
            // keep-alive: the upstream connection is reused after an inspected chunked body, and the framing stays whole
            await client.SendAsync("GET /chunked-page HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
            var page = await client.ReadResponseAsync();
            Assert.Equal(200, page.Status);
            Assert.Equal("chunked", page.Headers["transfer-encoding"], ignoreCase: true);
            Assert.Equal("<html><body>Welcome</body></html>", page.Body);
        }
    }

    [Fact]
    public async Task Over_h2c_the_same_responses_are_refused_and_the_others_arrive_whole()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block").Replace("\"address\": \"127.0.0.1:0\" } ],", "\"address\": \"127.0.0.1:0\", \"http2\": true } ],", StringComparison.Ordinal));
        using var client = new HttpMessageInvoker(new SocketsHttpHandler { UseProxy = false });
        async Task<(int Status, string Body)> H2(string target)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{gateway.EndPoint.Port}{target}")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            using var response = await client.SendAsync(request, cancel.Token);
            Assert.Equal(HttpVersion.Version20, response.Version);
            return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(cancel.Token));
        }
        Assert.Equal((200, "<html><body>Welcome</body></html>"), await H2("/page"));
        Assert.Equal(403, (await H2("/leak")).Status);
        Assert.Equal(403, (await H2("/chunked-leak")).Status);
        Assert.Equal(403, (await H2("/debug")).Status);
        Assert.Equal((200, Big + Leak), await H2("/leak-late"));
        Assert.Equal((200, Big + Leak), await H2("/chunked-late"));
        await Eventually.WaitUntilAsync(async () => Value(await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"blocked\"}") == 3,
            "three blocked responses counted");
    }

    [Fact]
    public async Task An_upstream_that_stalls_in_the_inspected_body_gets_a_504_and_nothing_of_it_goes_out()
    {
        // a hostile upstream: the head promises 1000 bytes of HTML, 10 come, then nothing (the connection stays open)
        using var release = new CancellationTokenSource();
        await using var upstream = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n<html>abcd"), cancel);
            try { await Task.Delay(Timeout.Infinite, CancellationTokenSource.CreateLinkedTokenSource(cancel, release.Token).Token); } catch (OperationCanceledException) { }
        });
        var config = Config("block").Replace(_address, upstream.Address, StringComparison.Ordinal)
            .Replace("\"listeners\"", "\"limits\": { \"upstreamResponseTimeout\": \"500ms\" },\n  \"listeners\"", StringComparison.Ordinal);
        await using var gateway = await TestGateway.StartAsync(config);
        var response = await Get(gateway, "/stall");
        release.Cancel();
        Assert.Equal(504, response.Status);
        Assert.DoesNotContain("abcd", response.Body, StringComparison.Ordinal);
    }

    [Fact]
    public void Chunk_data_is_taken_out_of_its_framing()
    {
        var raw = "5\r\nhello\r\n3;ext=1\r\n, w\r\na\r\norld!12345\r\n0\r\n\r\n"u8.ToArray();
        var data = new byte[64];
        int n = FastGate.Proxy.ProxyConnection.ChunkData(raw, data);
        Assert.Equal("hello, world!12345", Encoding.ASCII.GetString(data, 0, n));
        Assert.Equal("hello, w", Encoding.ASCII.GetString(data, 0, FastGate.Proxy.ProxyConnection.ChunkData(raw, data.AsSpan(0, 8))));
        Assert.Equal("hel", Encoding.ASCII.GetString(data, 0, FastGate.Proxy.ProxyConnection.ChunkData(raw.AsSpan(0, 6), data))); // cut mid-chunk
    }

    [Fact]
    public async Task A_smaller_limit_and_other_types_are_the_profiles_own()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block",
            ", \"inspectResponses\": true, \"responseBodyLimit\": 16, \"responseBodyTypes\": [ \"application/json\" ]"));
        Assert.Equal(200, (await Get(gateway, "/leak")).Status);           // text/html is no longer listed
        var json = await Get(gateway, "/leak.json");                        // listed, but the leak starts past byte 16
        Assert.Equal(200, json.Status);
        Assert.Contains(Leak, json.Body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_inspectResponses_responses_are_not_inspected()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block", profileExtra: ""));
        Assert.Equal(200, (await Get(gateway, "/leak")).Status);
        Assert.Equal(200, (await Get(gateway, "/debug")).Status);
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(0, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"951999\",action=\"blocked\"}"));
    }

    [Fact]
    public void The_response_settings_are_checked_at_their_json_path()
    {
        var loaded = ConfigLoader.Load(Config("block", ", \"inspectResponses\": true, \"responseBodyLimit\": -1, \"responseBodyTypes\": [ \"text/html\", \"html\", \"text/plain; charset=utf-8\" ]"));
        Assert.False(loaded.IsValid);
        Assert.Equal(["$.waf.profiles[0].responseBodyLimit", "$.waf.profiles[0].responseBodyTypes[1]", "$.waf.profiles[0].responseBodyTypes[2]"],
            loaded.Errors.Select(e => e.Path).Order(StringComparer.Ordinal).ToArray());
    }
}
