using System.Text;
using FastGate.Tests.Infrastructure;
using FastGate.Waf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace FastGate.Tests.Waf;

/// <summary>
/// The response phases against the reference: nginx + ModSecurity v3 (SecResponseBodyAccess On with its recommended
/// types and limit) and FastGate (inspectResponses) in front of one upstream whose pages leak what CRS's RESPONSE-95x
/// rules look for — directory listings, CGI and PHP source, SQL, Java, PHP and IIS errors — and benign ones. Each
/// page's matched rule ids (ModSecurity's from its audit log, FastGate's from the same engine and rule set the gateway
/// runs) must be the same; the gateway must refuse exactly the pages its engine denies, and ModSecurity's outbound
/// anomaly rule (959100) must have matched on exactly those.
/// </summary>
[Collection(nameof(ModSecurityResponseCollection))]
public class ModSecurityResponseDifferentialTests(ModSecurityResponseFixture fx, ITestOutputHelper output)
{
    internal static readonly (string Path, string Type, int Status, string Body)[] Pages =
    [
        ("/benign", "text/html", 200, "<html><head><title>Shop</title></head><body><h1>Welcome</h1><p>Our prices are the best.</p></body></html>"),
        ("/benign-text", "text/plain", 200, "Order 42 confirmed. Thank you for shopping with us."),
        ("/not-found", "text/html", 404, "<html><body>Not found</body></html>"),
        ("/server-error", "text/html", 500, "<html><body>Internal error, please try again later</body></html>"),
        ("/listing", "text/html", 200, "<html><head><title>Index of /files</title></head><body><h1>Index of /files</h1><a href=\"a.txt\">a.txt</a></body></html>"),
        ("/cgi", "text/plain", 200, "#!/usr/bin/perl\nuse strict;\nprint \"Content-type: text/html\\n\\n\";\n"),
        ("/mysql", "text/html", 200, "<html><body>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''' at line 1</body></html>"),
        ("/postgres", "text/html", 200, "<html><body>Warning: pg_query(): Query failed: ERROR:  syntax error at or near \"'\" LINE 1</body></html>"),
        ("/mssql", "text/html", 200, "<html><body>Microsoft OLE DB Provider for SQL Server</font> <font face=\"Arial\" size=2>error '80040e14'</body></html>"),
        ("/oracle", "text/html", 200, "<html><body>ORA-01756: quoted string not properly terminated</body></html>"),
        ("/java", "text/html", 200, "<html><body>java.lang.NullPointerException\n\tat com.example.Shop.checkout(Shop.java:42)\n\tat javax.servlet.http.HttpServlet.service(HttpServlet.java:790)</body></html>"),
        ("/php-error", "text/html", 200, "<html><body><b>Warning</b>:  mysql_connect(): Access denied for user 'root'@'localhost' in <b>/var/www/html/db.php</b> on line <b>3</b></body></html>"),
        ("/php-source", "text/plain", 200, "<?php\n$db = mysqli_connect('localhost', 'root', 'secret');\necho $db;\n?>"),
        ("/iis", "text/html", 200, "<html><body>Error in c:\\inetpub\\wwwroot\\default.asp line 12</body></html>"),
        ("/json-error", "application/json", 200, "{\"error\":\"You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version\"}"),
        ("/xml", "text/xml", 200, "<?xml version=\"1.0\"?><order><id>7</id><note>ORA-00933: SQL command not properly ended</note></order>"),
    ];

    [LinuxFact]
    public async Task Same_response_rule_matches_as_ModSecurity_at_paranoia_level_1() => await CompareAsync(fx.Pl1);

    [LinuxFact]
    public async Task Same_response_rule_matches_as_ModSecurity_at_paranoia_level_2() => await CompareAsync(fx.Pl2);

    private async Task CompareAsync(ModSecurityResponseFixture.Pair pair)
    {
        var disagreements = new List<string>();
        var engine = WafRuleSet.Load(new WafLoadOptions { Rules = fx.CrsFolder, ParanoiaLevel = pair.ParanoiaLevel });
        int refused = 0;
        foreach (var (path, type, status, body) in Pages)
        {
            var request = $"GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: text/html\r\nConnection: close\r\n\r\n";
            long logMark = File.Exists(pair.AuditLog) ? new FileInfo(pair.AuditLog).Length : 0;
            int modsec = await ModSecurityDifferentialTests.SendAsync(pair.Nginx.Port, request);
            int fastgate = await ModSecurityDifferentialTests.SendAsync(pair.Gateway.EndPoint.Port, request);
            await ModSecurityDifferentialTests.SendAsync(pair.Nginx.Port, "GET /__mark HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n");
            var modsecIds = ModSecurityDifferentialTests.ModSecurityIds(pair.AuditLog, logMark);
            var (ours, denied) = OurIds(engine, request, type, status, body);
            if (denied) refused++;
            bool sameIds = modsecIds.SetEquals(ours);
            bool sameDecision = denied == modsecIds.Contains(959100) && (fastgate == 403) == denied && (denied || fastgate == status);
            var line = $"{(sameIds && sameDecision ? "same" : "DIFFERENT"),-9} {path,-14} modsecurity={modsec} [{string.Join(',', modsecIds.Order())}] fastgate={fastgate} [{string.Join(',', ours.Order())}]";
            output.WriteLine(line);
            if (!sameIds || !sameDecision) disagreements.Add(line);
        }
        output.WriteLine($"PL{pair.ParanoiaLevel}: {Pages.Length - disagreements.Count}/{Pages.Length} same, {refused} refused");
        Assert.True(disagreements.Count == 0, "disagreements with ModSecurity:\n" + string.Join("\n", disagreements));
        Assert.True(refused >= 8, $"the corpus must exercise the response rules: {refused} pages refused"); // the leaks, not the benign pages
    }

    private static (HashSet<int> Ids, bool Denied) OurIds(WafRuleSet set, string raw, string type, int status, string body)
    {
        var headEnd = raw.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var lines = raw[..headEnd].Split("\r\n");
        var start = lines[0].Split(' ');
        var req = new WafRequest { Method = start[0], Uri = start[1], Protocol = start[2] };
        foreach (var l in lines.Skip(1)) { var c = l.IndexOf(':'); req.Headers.Add((l[..c], l[(c + 1)..].Trim())); }
        var tx = new WafTransaction(set, req);
        var bytes = Encoding.UTF8.GetBytes(body);
        bool denied = tx.Evaluate(1) || tx.Evaluate(2)
            || tx.EvaluateResponseHeaders(status, "HTTP/1.1", [("Content-Type", type), ("Content-Length", bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture))])
            || tx.EvaluateResponseBody(bytes, hasBody: WafProfileConfig.DefaultResponseBodyTypes.Contains(type));
        return (tx.Matches.Select(m => m.Id).ToHashSet(), denied);
    }
}

[CollectionDefinition(nameof(ModSecurityResponseCollection))]
public sealed class ModSecurityResponseCollection : ICollectionFixture<ModSecurityResponseFixture>;

/// <summary>One upstream serving the pages above; per paranoia level an nginx + ModSecurity + CRS with response body
/// access and a FastGate whose profile inspects responses, on the same CRS folder.</summary>
public sealed class ModSecurityResponseFixture : IAsyncLifetime
{
    public sealed record Pair(int ParanoiaLevel, NginxUpstream Nginx, TestGateway Gateway, string AuditLog);

    private MappedUpstream? _upstream;
    private string _address = "";
    private string _dir = "";
    public string CrsFolder { get; private set; } = "";
    public Pair Pl1 { get; private set; } = null!;
    public Pair Pl2 { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (!OperatingSystem.IsLinux()) return;
        _dir = Directory.CreateTempSubdirectory("fastgate-crs-resp-").FullName;
        CrsFolder = ModSecurityFixture.MakeCrsFolder(_dir);
        _upstream = await MappedUpstream.StartAsync(app =>
        {
            foreach (var (path, type, status, body) in ModSecurityResponseDifferentialTests.Pages)
                app.MapGet(path, () => Results.Text(body, type, Encoding.UTF8, status));
            app.MapGet("/__mark", () => Results.Text("mark"));
        });
        _address = _upstream.Address;
        Pl1 = await StartPairAsync(1);
        Pl2 = await StartPairAsync(2);
    }

    private async Task<Pair> StartPairAsync(int pl)
    {
        var nginx = await ModSecurityFixture.StartModSecurityAsync(_dir, CrsFolder, pl, _address.TrimEnd('/'), Path.Combine(_dir, $"audit-pl{pl}.log"), """
            SecRuleEngine On
            SecRequestBodyAccess On
            SecResponseBodyAccess On
            SecResponseBodyMimeType text/plain text/html text/xml
            SecResponseBodyLimit 524288
            SecResponseBodyLimitAction ProcessPartial
            """);
        var config = $$"""
            {
              "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_address.TrimEnd('/')}}" } ] } ],
              "waf": { "profiles": [ { "id": "crs", "rules": "{{CrsFolder}}", "mode": "block", "paranoiaLevel": {{pl}}, "inspectResponses": true } ] },
              "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "waf": "crs" } ]
            }
            """;
        var gateway = await TestGateway.StartAsync(config);
        return new Pair(pl, nginx, gateway, Path.Combine(_dir, $"audit-pl{pl}.log"));
    }

    public async Task DisposeAsync()
    {
        if (!OperatingSystem.IsLinux()) return;
        foreach (var p in new[] { Pl1, Pl2 })
        {
            if (p is null) continue;
            await p.Gateway.DisposeAsync();
            await p.Nginx.DisposeAsync();
        }
        if (_upstream is not null) await _upstream.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
