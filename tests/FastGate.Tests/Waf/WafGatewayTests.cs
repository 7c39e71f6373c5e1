using System.Globalization;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Waf;

/// <summary>The WAF in the gateway: per-route profiles, block and detect modes, body inspection, metrics, config errors.</summary>
public sealed class WafGatewayTests : IAsyncLifetime
{
    private DemoUpstreamServer _upstream = null!;
    private string _dir = "";

    public async Task InitializeAsync()
    {
        _upstream = await DemoUpstreamServer.StartAsync();
        _dir = Directory.CreateTempSubdirectory("fastgate-waf-").FullName;
        Directory.CreateDirectory(Path.Combine(_dir, "rules"));
        File.WriteAllText(Path.Combine(_dir, "crs-setup.conf"), """
            SecDefaultAction "phase:1,log,pass"
            SecDefaultAction "phase:2,log,pass"
            SecAction "id:900110,phase:1,pass,nolog,setvar:tx.inbound_anomaly_score_threshold=5"
            """);
        File.WriteAllText(Path.Combine(_dir, "rules", "test.conf"), """
            SecRule ARGS "@rx (?i)union\s+select" "id:942999,phase:2,block,t:none,t:urlDecodeUni,msg:'SQLi',severity:CRITICAL,setvar:'tx.anomaly_score=+5'"
            SecRule REQUEST_HEADERS:User-Agent "@pm sqlmap nikto" "id:913999,phase:1,block,t:none,msg:'scanner',setvar:'tx.anomaly_score=+5'"
            SecRule TX:ANOMALY_SCORE "@ge %{tx.inbound_anomaly_score_threshold}" "id:949110,phase:1,deny,t:none,msg:'score %{tx.anomaly_score}'"
            SecRule TX:ANOMALY_SCORE "@ge %{tx.inbound_anomaly_score_threshold}" "id:949111,phase:2,deny,t:none,msg:'score %{tx.anomaly_score}'"
            """);
    }

    public async Task DisposeAsync()
    {
        await _upstream.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string Config(string mode, string rules = "", string extra = "", string profileExtra = "") => $$"""
        {
          {{extra}}
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
          "waf": { "profiles": [ { "id": "app", "rules": "{{(rules.Length > 0 ? rules : _dir)}}", "mode": "{{mode}}"{{profileExtra}} } ] },
          "routes": [
            { "id": "protected", "match": { "pathPrefix": "/echo" }, "cluster": "backend", "waf": "app" },
            { "id": "open", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ]
        }
        """;

    private static string Get(string target, string ua = "Mozilla/5.0") =>
        $"GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n";

    private static string Post(string target, string body) =>
        $"POST {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}";

    internal static double Value(string scrape, string series)
    {
        var line = scrape.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        return line is null ? 0 : double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
    }

    private static Task<int> Send(TestGateway g, string raw) => ModSecurityDifferentialTests.SendAsync(g.EndPoint.Port, raw);

    [Fact]
    public async Task Block_mode_over_h2c_refuses_the_same_requests_as_over_http11()
    {
        // the same profile and rows on an "http2" listener: HTTP/2 streams go through the same WAF phases
        await using var gateway = await TestGateway.StartAsync(Config("block").Replace("\"address\": \"127.0.0.1:0\" } ],", "\"address\": \"127.0.0.1:0\", \"http2\": true } ],", StringComparison.Ordinal));
        using var client = new System.Net.Http.HttpMessageInvoker(new System.Net.Http.SocketsHttpHandler { UseProxy = false });
        async Task<int> H2(System.Net.Http.HttpMethod method, string target, string? ua = null, string? form = null)
        {
            var request = new System.Net.Http.HttpRequestMessage(method, $"http://127.0.0.1:{gateway.EndPoint.Port}{target}")
            {
                Version = System.Net.HttpVersion.Version20,
                VersionPolicy = System.Net.Http.HttpVersionPolicy.RequestVersionExact,
            };
            request.Headers.TryAddWithoutValidation("User-Agent", ua ?? "Mozilla/5.0");
            if (form is not null) request.Content = new System.Net.Http.StringContent(form, System.Text.Encoding.ASCII, "application/x-www-form-urlencoded");
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            using var response = await client.SendAsync(request, cancel.Token);
            Assert.Equal(System.Net.HttpVersion.Version20, response.Version);
            return (int)response.StatusCode;
        }
        Assert.Equal(403, await H2(System.Net.Http.HttpMethod.Get, "/echo?q=1%20UNION%20SELECT%20pw"));
        Assert.Equal(403, await H2(System.Net.Http.HttpMethod.Get, "/echo", ua: "sqlmap/1.5"));
        Assert.Equal(403, await H2(System.Net.Http.HttpMethod.Post, "/echo", form: "a=1+union+select+2")); // phase 2 on the body
        Assert.Equal(200, await H2(System.Net.Http.HttpMethod.Post, "/echo", form: "a=hello"));
        Assert.Equal(200, await H2(System.Net.Http.HttpMethod.Get, "/?q=1%20UNION%20SELECT%20pw"));
        // a stream is recorded just after its response ends: the count may lag the client by a moment
        await Eventually.WaitUntilAsync(async () => Value(await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"blocked\"}") == 3,
            "three blocked requests are counted");
        Assert.Equal(1, Value(await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"passed\"}"));
    }

    [Fact]
    public async Task Block_mode_refuses_attacks_on_the_waf_route_only_and_counts_them_by_rule()
    {
        await using var gateway = await TestGateway.StartAsync(Config("block"));
        Assert.Equal(403, await Send(gateway, Get("/echo?q=1%20UNION%20SELECT%20pw")));       // phase 2, no body
        Assert.Equal(403, await Send(gateway, Get("/echo", ua: "sqlmap/1.5")));               // phase 1
        Assert.Equal(403, await Send(gateway, Post("/echo", "a=1+union+select+2")));         // phase 2, the buffered body
        Assert.Equal(200, await Send(gateway, Post("/echo", "a=hello")));
        Assert.Equal(200, await Send(gateway, Get("/echo?q=plain")));
        Assert.Equal(200, await Send(gateway, Get("/?q=1%20UNION%20SELECT%20pw")));            // the route without WAF
        var scrape = await gateway.ScrapeMetricsAsync();
        Assert.Equal(3, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"blocked\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"passed\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"942999\",action=\"blocked\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"913999\",action=\"blocked\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"949110\",action=\"blocked\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"949111\",action=\"blocked\"}"));
        Assert.Equal(3, Value(scrape, "fastgate_rejections_total{reason=\"waf_blocked\"}"));
    }

    [Fact]
    public async Task The_access_log_carries_the_matched_rule_ids_and_the_score_on_waf_routes_only()
    {
        var log = Path.Combine(_dir, "access.log");
        var gateway = await TestGateway.StartAsync(Config("block", extra: $"\"accessLog\": {{ \"path\": \"{log}\", \"sampleRate\": 1 }},"));
        try
        {
            Assert.Equal(403, await Send(gateway, Get("/echo?q=1%20UNION%20SELECT%20pw")));
            Assert.Equal(200, await Send(gateway, Get("/echo?q=fine")));
            Assert.Equal(200, await Send(gateway, Get("/?q=fine")));
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= 3, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }
        var lines = File.ReadAllLines(log).Where(l => l.Length > 0).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, lines.Count);
        Assert.Equal("waf_blocked", lines[0].GetProperty("decision").GetString());
        Assert.Equal("942999,949111 score=5", lines[0].GetProperty("waf").GetString());
        Assert.Equal("score=0", lines[1].GetProperty("waf").GetString());
        Assert.False(lines[2].TryGetProperty("waf", out _));
    }

    /// <summary>One keep-alive connection keeps its transaction, its request strings and the last access-log summary
    /// from request to request: each request must still be logged and counted as itself (a stale summary, a kept
    /// header or a cached metric child under the wrong rule would show here).</summary>
    [Fact]
    public async Task Requests_on_one_connection_are_each_logged_and_counted_as_themselves()
    {
        var log = Path.Combine(_dir, "access-keepalive.log");
        var gateway = await TestGateway.StartAsync(Config("detect", extra: $"\"accessLog\": {{ \"path\": \"{log}\", \"sampleRate\": 1 }},"));
        string scrape;
        try
        {
            using var client = await RawClient.ConnectAsync(gateway.EndPoint);
            string[] requests =
            [
                "/echo?q=1%20UNION%20SELECT%20pw", "/echo?q=1%20UNION%20SELECT%20pw", "/echo?q=fine", "/echo?q=fine",
                "/echo?q=2%20union%20select%20x", "/echo?q=fine",
            ];
            string[] agents = ["Mozilla/5.0", "Mozilla/5.0", "Mozilla/5.0", "nikto", "Mozilla/5.0", "Mozilla/5.0"];
            for (int i = 0; i < requests.Length; i++)
            {
                await client.SendAsync($"GET {requests[i]} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {agents[i]}\r\n\r\n");
                Assert.Equal(200, (await client.ReadResponseAsync()).Status); // detect mode: forwarded
            }
            scrape = await gateway.ScrapeMetricsAsync();
            await Eventually.WaitUntilAsync(() => gateway.Host.Runtime.Observability.AccessLog!.Written >= requests.Length, "every request written to the access log"); // logged just after the response
        }
        finally
        {
            await gateway.DisposeAsync(); // flushes the writer
        }
        var waf = File.ReadAllLines(log).Where(l => l.Length > 0).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("waf").GetString()).ToList();
        Assert.Equal(["942999,949111 score=5", "942999,949111 score=5", "score=0", "913999,949110 score=5", "942999,949111 score=5", "score=0"], waf);
        Assert.Equal(3, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"942999\",action=\"detected\"}"));
        Assert.Equal(3, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"949111\",action=\"detected\"}"));
        Assert.Equal(1, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"913999\",action=\"detected\"}"));
        Assert.Equal(4, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"detected\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"passed\"}"));
    }

    [Fact]
    public async Task Detect_mode_forwards_and_counts_what_it_would_block()
    {
        await using var gateway = await TestGateway.StartAsync(Config("detect"));
        Assert.Equal(200, await Send(gateway, Get("/echo?q=1%20UNION%20SELECT%20pw")));
        Assert.Equal(200, await Send(gateway, Post("/echo", "a=1+union+select+2")));
        // a request is counted when its exchange ends, which may be just after its response reached the client
        string scrape = "";
        await Eventually.WaitUntilAsync(async () => Value(scrape = await gateway.ScrapeMetricsAsync(), "fastgate_waf_requests_total{profile=\"app\",outcome=\"detected\"}") == 2,
            "both requests counted as detected");
        Assert.Equal(0, Value(scrape, "fastgate_waf_requests_total{profile=\"app\",outcome=\"blocked\"}"));
        Assert.Equal(2, Value(scrape, "fastgate_waf_rule_matches_total{profile=\"app\",rule=\"942999\",action=\"detected\"}"));
    }

    [Fact]
    public void A_bad_rule_file_is_a_config_error_with_its_file_and_line()
    {
        var bad = Directory.CreateTempSubdirectory("fastgate-waf-bad-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(bad, "rules"));
            File.WriteAllText(Path.Combine(bad, "crs-setup.conf"), "SecDefaultAction \"phase:2,log,pass\"\n");
            File.WriteAllText(Path.Combine(bad, "rules", "broken.conf"), "\n\nSecRule ARGS \"@rx a\" \"id:1,phase:2,deny,nosuchaction\"\nSecBogus x\n");
            var loaded = ConfigLoader.Load(Config("block", bad));
            Assert.False(loaded.IsValid);
            var error = Assert.Single(loaded.Errors);
            Assert.Equal("$.waf.profiles[0].rules", error.Path);
            Assert.Equal($"{Path.Combine(bad, "rules", "broken.conf")}:4: unsupported directive SecBogus", error.Message);
        }
        finally { Directory.Delete(bad, true); }
    }

    [Fact]
    public async Task An_excluded_target_passes_what_it_was_blocked_for_and_other_arguments_are_still_inspected()
    {
        // without the exclusion: the SQLi in "password" is refused (the query and the form body)
        await using (var plain = await TestGateway.StartAsync(Config("block")))
        {
            Assert.Equal(403, await Send(plain, Post("/echo", "password=1+union+select+2")));
            Assert.Equal(403, await Send(plain, Get("/echo?password=1%20UNION%20SELECT%20pw")));
        }
        await using var gateway = await TestGateway.StartAsync(Config("block",
            profileExtra: ", \"excludeTargets\": [ { \"rule\": \"942000-942999\", \"target\": \"ARGS:password\" } ]"));
        Assert.Equal(200, await Send(gateway, Post("/echo", "password=1+union+select+2")));
        Assert.Equal(200, await Send(gateway, Get("/echo?password=1%20UNION%20SELECT%20pw")));
        Assert.Equal(200, await Send(gateway, Get("/echo?PassWord=1%20UNION%20SELECT%20pw")));       // names are case-insensitive
        // the same value in another argument, or the excluded one next to it, is still refused
        Assert.Equal(403, await Send(gateway, Post("/echo", "comment=1+union+select+2")));
        Assert.Equal(403, await Send(gateway, Post("/echo", "password=1+union+select+2&note=1+union+select+2")));
        Assert.Equal(403, await Send(gateway, Get("/echo?password=x&q=1%20UNION%20SELECT%20pw")));
        // a rule outside the range still refuses (the scanner rule, on the User-Agent)
        Assert.Equal(403, await Send(gateway, Get("/echo?password=1", ua: "sqlmap/1.5")));
    }

    [Fact]
    public async Task A_target_excluded_by_tag_is_passed_by_the_rules_with_that_tag_only()
    {
        File.WriteAllText(Path.Combine(_dir, "rules", "tagged.conf"), """
            SecRule ARGS "@rx (?i)<script" "id:941999,phase:2,block,t:none,t:urlDecodeUni,tag:'attack-xss',msg:'XSS',setvar:'tx.anomaly_score=+5'"
            """);
        await using var gateway = await TestGateway.StartAsync(Config("block",
            profileExtra: ", \"excludeTargets\": [ { \"tag\": \"attack-xss\", \"target\": \"ARGS:/^html_/\" } ]"));
        Assert.Equal(200, await Send(gateway, Post("/echo", "html_body=%3Cscript%3Ex")));
        Assert.Equal(403, await Send(gateway, Post("/echo", "body=%3Cscript%3Ex")));
        Assert.Equal(403, await Send(gateway, Post("/echo", "html_body=1+union+select+2"))); // 942999 has no such tag
    }

    [Fact]
    public void Exclusions_by_target_are_checked_at_their_json_path()
    {
        string With(string entries) => Config("block", profileExtra: ", \"excludeTargets\": [ " + entries + " ]");
        var loaded = ConfigLoader.Load(With("""{ "rule": "942100", "target": "ARGS:password" }"""));
        var error = Assert.Single(loaded.Errors);
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].rule", error.Path);
        Assert.Contains("942100", error.Message, StringComparison.Ordinal);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999", "target": "ARGS:a" }, { "rule": "94x", "target": "ARGS:b" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[1].rule", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999", "target": "NOSUCH:password" }"""));
        error = Assert.Single(loaded.Errors);
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].target", error.Path);
        Assert.Contains("unknown variable NOSUCH", error.Message, StringComparison.Ordinal);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999", "target": "!ARGS:password" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].target", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999", "target": "ARGS:/(/" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].target", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "tag": "no-such-tag", "target": "ARGS" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].tag", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "target": "ARGS" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0]", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999" }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].target", Assert.Single(loaded.Errors).Path);
        loaded = ConfigLoader.Load(With("""{ "rule": "942999", "target": "ARGS:password", "what": 1 }"""));
        Assert.Equal("$.waf.profiles[0].excludeTargets[0].what", Assert.Single(loaded.Errors).Path);
        Assert.True(ConfigLoader.Load(With("""{ "rule": "942000-942999", "target": "ARGS:password" }""")).IsValid);
    }

    [Fact]
    public void Routes_must_name_a_known_profile_and_modes_are_block_or_detect()
    {
        var loaded = ConfigLoader.Load(Config("block").Replace("\"waf\": \"app\"", "\"waf\": \"ap\""));
        Assert.Contains(loaded.Errors, e => e.Path == "$.routes[0].waf" && e.Message.StartsWith("unknown WAF profile 'ap'", StringComparison.Ordinal));
        loaded = ConfigLoader.Load(Config("report"));
        Assert.Contains(loaded.Errors, e => e.Path == "$.waf.profiles[0].mode");
    }
}

public class WafAdminTests
{
    [LinuxFact]
    public async Task Admin_waf_lists_the_profiles_and_the_rules_that_cannot_run_here()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var config = $$"""
            {
              "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
              "waf": { "profiles": [ { "id": "crs", "rules": "/usr/share/modsecurity-crs", "mode": "detect", "paranoiaLevel": 2 } ] },
              "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "waf": "crs" } ]
            }
            """;
        await using var gateway = await TestGateway.StartAsync(config);
        using var http = new System.Net.Http.HttpClient();
        using var doc = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync($"http://{gateway.Admin}/admin/waf"));
        var profile = Assert.Single(doc.RootElement.GetProperty("profiles").EnumerateArray().ToArray());
        Assert.Equal("crs", profile.GetProperty("id").GetString());
        Assert.Equal("detect", profile.GetProperty("mode").GetString());
        Assert.Equal("OWASP_CRS/3.3.4", profile.GetProperty("componentSignature").GetString());
        Assert.Equal(["all"], profile.GetProperty("routes").EnumerateArray().Select(r => r.GetString()));
        var warnings = profile.GetProperty("warnings").EnumerateArray().Select(e => e.GetString()!).ToArray();
        Assert.Contains(warnings, w => w.Contains("REQUEST-910-IP-REPUTATION.conf:", StringComparison.Ordinal) && w.Contains("@geoLookup", StringComparison.Ordinal));
    }
}
