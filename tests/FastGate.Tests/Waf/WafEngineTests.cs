using FastGate.Tests.Infrastructure;
using FastGate.Waf;

namespace FastGate.Tests.Waf;

public class WafParserTests
{
    [Fact]
    public void An_unsupported_directive_is_an_error_with_file_and_line()
    {
        var set = WafRuleSet.FromText("SecRuleEngine On\n\n# comment\nSecFooBar On\n", "rules.conf");
        var e = Assert.Single(set.Errors);
        Assert.Equal("rules.conf:4: unsupported directive SecFooBar", e.ToString());
    }

    [Fact]
    public void An_unsupported_operator_disables_the_rule_with_a_warning_at_its_line()
    {
        var set = WafRuleSet.FromText("SecRule ARGS \"@geoLookup\" \\\n  \"id:10,phase:2,deny\"\nSecRule ARGS \"@rx a\" \"id:11,phase:2,deny\"", "f.conf");
        Assert.Empty(set.Errors);
        var w = Assert.Single(set.Warnings);
        Assert.Equal("f.conf:1: rule 10 disabled: operator @geoLookup is not supported", w.ToString());
    }

    [Fact]
    public void Unknown_variables_and_broken_quotes_are_errors()
    {
        var set = WafRuleSet.FromText("SecRule NOPE \"@rx a\" \"id:1,phase:2,deny\"\nSecRule ARGS \"@rx a", "g.conf");
        Assert.Equal(["g.conf:1: unknown variable NOPE", "g.conf:2: unterminated quoted argument"], set.Errors.Select(e => e.ToString()).Order());
    }

    [Fact]
    public void A_chain_without_a_following_rule_is_an_error()
    {
        var set = WafRuleSet.FromText("SecRule ARGS \"@rx a\" \"id:1,phase:2,deny,chain\"", "h.conf");
        Assert.Contains(set.Errors, e => e.ToString() == "h.conf:1: the last rule asks for a chain that never comes");
    }

    [Fact]
    public void Selector_regexes_with_pipes_split_correctly()
    {
        var set = WafRuleSet.FromText("SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm|_ga/|ARGS \"@rx x\" \"id:5,phase:2,deny\"");
        Assert.Empty(set.Errors);
        var rule = set.Phases[2].Single();
        Assert.Equal(["REQUEST_COOKIES", "ARGS"], rule.Targets.Select(t => t.Collection));
        Assert.NotNull(Assert.Single(rule.Exclusions).KeyRegex);
    }
}

public class WafEvaluationTests
{
    private static WafTransaction Run(string rules, string uri, string method = "GET", (string, string)[]? headers = null, string? body = null)
    {
        var set = WafRuleSet.FromText(rules);
        Assert.Empty(set.Errors);
        var req = new WafRequest { Method = method, Uri = uri };
        foreach (var h in headers ?? []) req.Headers.Add(h);
        if (body is not null) req.Body = System.Text.Encoding.Latin1.GetBytes(body);
        var tx = new WafTransaction(set, req);
        if (!tx.Evaluate(1)) tx.Evaluate(2);
        return tx;
    }

    [Fact]
    public void Chains_setvar_and_anomaly_threshold_deny()
    {
        var rules = """
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.threshold=5"
            SecRule ARGS "@rx (?i)union\s+select" "id:100,phase:2,pass,t:none,t:urlDecodeUni,setvar:'tx.score=+5',msg:'sqli'"
            SecRule REQUEST_METHOD "@streq GET" "id:101,phase:2,pass,chain"
                SecRule ARGS:q "@contains evil" "setvar:tx.score=+1"
            SecRule TX:SCORE "@ge %{tx.threshold}" "id:949,phase:2,deny,msg:'score %{tx.score}'"
            """;
        var tx = Run(rules, "/a?q=1%20UNION%20SELECT%20x");
        Assert.Equal(403, tx.Status);
        Assert.Equal([100, 949], tx.Matches.Select(m => m.Id));
        Assert.Equal("score 5", tx.Matches[1].Message);
        Assert.Null(Run(rules, "/a?q=evil").Interruption);
    }

    [Fact]
    public void Exclusions_counts_and_ctl_remove_target()
    {
        var rules = """
            SecRule &ARGS "@eq 2" "id:10,phase:1,pass,setvar:tx.two=1"
            SecRule REQUEST_URI "@beginsWith /login" "id:11,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20;ARGS:password"
            SecRule ARGS|!ARGS:safe "@rx <script" "id:20,phase:2,deny"
            """;
        Assert.Null(Run(rules, "/x?safe=%3Cscript&b=1").Interruption);
        Assert.Equal("1", Run(rules, "/x?safe=1&b=1").Tx("two"));
        Assert.Equal(20, Run(rules, "/x?a=%3Cscript").Interruption!.Id);
        Assert.Null(Run(rules, "/login?password=%3Cscript").Interruption);
        Assert.Equal(20, Run(rules, "/login?other=%3Cscript").Interruption!.Id);
    }

    [Fact]
    public void SkipAfter_jumps_to_its_marker()
    {
        var rules = """
            SecRule REQUEST_METHOD "@streq POST" "id:1,phase:1,pass,nolog,skipAfter:END"
            SecAction "id:2,phase:1,deny"
            SecMarker END
            """;
        Assert.NotNull(Run(rules, "/").Interruption);
        Assert.Null(Run(rules, "/", "POST").Interruption);
    }

    /// <summary>The skip targets are resolved at load (WafRuleSet.SkipAfterIndex): the jump lands after the first
    /// marker of that name that follows the rule, a marker before the rule does not count, a missing one skips the rest
    /// of the phase, and a skip in phase 1 does not reach into phase 2.</summary>
    [Fact]
    public void SkipAfter_resumes_after_the_next_marker_of_its_name_only()
    {
        var rules = """
            SecMarker LATER
            SecRule REQUEST_METHOD "@streq POST" "id:1,phase:1,pass,nolog,skipAfter:LATER"
            SecAction "id:2,phase:1,pass,setvar:tx.a=1"
            SecMarker OTHER
            SecAction "id:3,phase:1,pass,setvar:tx.b=1"
            SecMarker LATER
            SecAction "id:4,phase:1,pass,setvar:tx.c=1"
            SecRule REQUEST_METHOD "@streq PUT" "id:5,phase:1,pass,nolog,skipAfter:MISSING"
            SecAction "id:6,phase:1,pass,setvar:tx.d=1"
            SecAction "id:7,phase:2,pass,setvar:tx.e=1"
            """;
        string Seen(WafTransaction t) => string.Concat(new[] { "a", "b", "c", "d", "e" }.Where(v => t.Tx(v) is not null));
        Assert.Equal("abcde", Seen(Run(rules, "/")));
        Assert.Equal("cde", Seen(Run(rules, "/", "POST")));
        Assert.Equal("abce", Seen(Run(rules, "/", "PUT")));
    }

    /// <summary>A rule whose collections have no value is passed without evaluating it (WafRuleSet.RunNeeds): it
    /// must still decide as an evaluated one — no match on nothing, even negated; a count of nothing is 0 and can
    /// match; a body's ARGS_POST makes phase 2's rules on ARGS run.</summary>
    [Fact]
    public void Rules_on_collections_without_values_decide_as_if_evaluated()
    {
        var rules = """
            SecRule REQUEST_COOKIES|ARGS_NAMES "!@rx ^never$" "id:1,phase:1,pass,setvar:tx.a=1"
            SecRule &REQUEST_COOKIES "@eq 0" "id:2,phase:1,pass,setvar:tx.b=1"
            SecRule ARGS "@rx evil" "id:3,phase:2,pass,setvar:tx.c=1"
            SecRule XML:/* "@rx ." "id:4,phase:2,pass,setvar:tx.d=1"
            """;
        string Seen(WafTransaction t) => string.Concat(new[] { "a", "b", "c", "d" }.Where(v => t.Tx(v) is not null));
        Assert.Equal("b", Seen(Run(rules, "/")));
        Assert.Equal("a", Seen(Run(rules, "/", headers: [("Cookie", "s=1")])));
        Assert.Equal("abc", Seen(Run(rules, "/?q=evil")));
        Assert.Equal("bc", Seen(Run(rules, "/", "POST", [("Content-Type", "application/x-www-form-urlencoded")], "q=evil"))); // body args: phase 2 only
    }

    [Fact]
    public void Request_strings_are_kept_only_while_their_bytes_repeat()
    {
        var previous = "Mozilla/5.0";
        Assert.Same(previous, WafStep.Same(previous, "Mozilla/5.0"u8));
        var changed = WafStep.Same(previous, "Mozilla/5.1"u8);
        Assert.Equal("Mozilla/5.1", changed);
        Assert.Equal("Mozilla", WafStep.Same(previous, "Mozilla"u8));
        Assert.Equal("\u00e9", WafStep.Same("e", [0xE9])); // Latin-1: one char per byte
    }

    /// <summary>Selector regexes that are only a literal are matched as text (contains, or starts with for ^): the
    /// keys they select must be exactly the regex's.</summary>
    [Theory]
    [InlineData("__utm", "contains")]
    [InlineData("^header_name_", "starts")]
    [InlineData("rfi_parameter_.*", "contains")]
    [InlineData("MULTIPART_HEADERS_CONTENT_TYPES_*", "contains")]
    [InlineData("S?DW[a-f0-9]+", null)]
    [InlineData("^a$", null)]
    [InlineData("a|b", null)]
    [InlineData(".*", null)]
    public void Literal_selector_regexes_select_the_keys_the_regex_does(string pattern, string? form)
    {
        var literal = WafTarget.LiteralForm(pattern);
        Assert.Equal(form, literal is null ? null : literal.Value.Anchored ? "starts" : "contains");
        var set = WafRuleSet.FromText($"SecRule REQUEST_COOKIES:/{pattern}/ \"@rx .\" \"id:1,phase:1,pass\"");
        Assert.Empty(set.Errors);
        var target = set.Phases[1].Single().Targets.Single();
        var regex = new System.Text.RegularExpressions.Regex(PcreRegex.Translate(pattern), System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        string[] keys = ["__utma", "x__UTMz", "_utm", "header_name_host", "x-header_name_", "HEADER_NAME_A", "rfi_parameter_", "rfi_parameter",
            "multipart_headers_content_types", "multipart_headers_content_type", "xmultipart_headers_content_types_x", "sdw0a", "dw", "a", "b", ""];
        foreach (var key in keys) Assert.True(regex.IsMatch(key) == target.SelectsKey(key), $"{pattern} on '{key}'");
    }

    /// <summary>The XML body processor: XML:/* is the root element's text (every text and CDATA node, comments left
    /// out), XML://@* each attribute value; a body that does not parse sets REQBODY_ERROR; ctl:requestBodyProcessor=XML
    /// (ModSecurity's rule 200000) turns it on for a type FastGate would not pick itself.</summary>
    [Fact]
    public void Xml_bodies_become_the_xml_collection()
    {
        var rules = """
            SecRule REQUEST_HEADERS:Content-Type "@rx ^application/x-fastgate-xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
            SecRule XML:/* "@rx union\s+select" "id:10,phase:2,deny"
            SecRule XML://@* "@contains javascript:" "id:11,phase:2,deny"
            SecRule REQBODY_ERROR "@eq 1" "id:12,phase:2,deny"
            SecRule &XML:/* "@eq 1" "id:13,phase:2,pass,setvar:tx.root=1"
            SecRule XML:/* "@streq 1 text tail" "id:14,phase:2,pass,setvar:tx.text=1"
            SecRule REQBODY_PROCESSOR "@streq XML" "id:15,phase:2,pass,setvar:tx.processor=1"
            """;
        (string, string)[] xml = [("Content-Type", "application/xml")];
        Assert.Equal(10, Run(rules, "/", "POST", xml, "<q><a>1 union  select</a> x</q>").Interruption?.Id);
        Assert.Equal(10, Run(rules, "/", "POST", [("Content-Type", "text/xml; charset=utf-8")], "<q><![CDATA[1 union select]]></q>").Interruption?.Id);
        Assert.Equal(11, Run(rules, "/", "POST", xml, "<a href=\"javascript:alert(1)\">x</a>").Interruption?.Id);
        Assert.Equal(12, Run(rules, "/", "POST", xml, "<a><b></a>").Interruption?.Id);
        var ok = Run(rules, "/", "POST", xml, "<?xml version=\"1.0\"?><a>1<!-- union select --> text<b x=\"y\"> tail</b></a>");
        Assert.Null(ok.Interruption);
        Assert.Equal(("1", "1", "1"), (ok.Tx("root"), ok.Tx("text"), ok.Tx("processor")));
        // not an XML type: no XML collection, unless a rule asks for the processor
        Assert.Null(Run(rules, "/", "POST", [("Content-Type", "application/octet-stream")], "<q>1 union select</q>").Interruption);
        Assert.Equal(10, Run(rules, "/", "POST", [("Content-Type", "application/x-fastgate-xml")], "<q>1 union select</q>").Interruption?.Id);
        // an external entity is not fetched: the document parses without it or not at all, never with a file's content
        var xxe = Run(rules, "/", "POST", xml, "<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/hostname\">]><a>&e;</a>");
        Assert.NotEqual("1", xxe.Tx("text"));
    }

    /// <summary>@rx with a macro (CRS 920480: <c>!@rx ^%{tx.allowed_request_content_type_charset}$</c>) is expanded
    /// per request, as ModSecurity v3 does; read as a literal pattern it flagged every charset parameter.</summary>
    [Fact]
    public void Rx_patterns_with_macros_are_expanded_per_request()
    {
        var rules = """
            SecAction "id:1,phase:1,pass,nolog,setvar:'tx.allowed=utf-8|iso-8859-1'"
            SecRule REQUEST_HEADERS:Content-Type "@rx charset\s*=\s*([^;\s]+)" "id:2,phase:1,deny,capture,t:none,t:lowercase,chain"
                SecRule TX:1 "!@rx ^%{tx.allowed}$" "t:none"
            """;
        Assert.Null(Run(rules, "/", headers: [("Content-Type", "text/plain; charset=UTF-8")]).Interruption);
        Assert.Null(Run(rules, "/", headers: [("Content-Type", "text/plain; charset=iso-8859-1")]).Interruption);
        Assert.Equal(2, Run(rules, "/", headers: [("Content-Type", "text/plain; charset=utf-7")]).Interruption?.Id);
        Assert.Equal(2, Run(rules.Replace("utf-8|iso-8859-1", "iso-8859-1"), "/", headers: [("Content-Type", "text/plain; charset=utf-8")]).Interruption?.Id);
    }

    /// <summary>TX names the rules spell out live in slots, names made at run time in a dictionary: a value must be
    /// found whichever way it was written and read (a run-time name that a rule also spells out, a regex selector over
    /// both, a macro, a deletion).</summary>
    [Fact]
    public void Tx_variables_are_one_table_whether_named_in_the_rules_or_at_run_time()
    {
        var rules = """
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.static_a=1,setvar:'tx.dyn_%{request_method}=2',setvar:'tx.other_%{request_method}=3'"
            SecRule TX:/^dyn_/ "@eq 2" "id:2,phase:1,pass,nolog,setvar:tx.saw_dyn=1"
            SecRule TX:/^static_/ "@eq 1" "id:3,phase:1,pass,nolog,setvar:tx.saw_static=1"
            SecRule TX:dyn_get "@eq 2" "id:4,phase:1,pass,nolog,setvar:tx.direct=%{tx.dyn_get}%{tx.other_get}"
            SecAction "id:5,phase:1,pass,nolog,setvar:!tx.static_a,setvar:'!tx.other_%{request_method}'"
            SecRule &TX:static_a "@eq 0" "id:6,phase:1,pass,nolog,setvar:tx.gone=1"
            SecRule &TX:/^other_/ "@eq 0" "id:7,phase:1,pass,nolog,setvar:tx.gone2=1"
            SecRule TX:/^saw_/ "@eq 1" "id:8,phase:1,pass,nolog,setvar:tx.saws=+1"
            """;
        var tx = Run(rules, "/");
        Assert.Equal(("1", "1", "23", "1", "1", "2"), (tx.Tx("saw_dyn"), tx.Tx("saw_static"), tx.Tx("direct"), tx.Tx("gone"), tx.Tx("gone2"), tx.Tx("saws")));
        Assert.Equal("2", tx.Tx("dyn_get"));
        Assert.Null(tx.Tx("static_a"));
    }

    [Fact]
    public void A_bad_xpath_selector_is_a_load_error()
    {
        var set = WafRuleSet.FromText("SecRule XML:/[[ \"@rx a\" \"id:1,phase:2,deny\"", "x.conf");
        Assert.StartsWith("x.conf:1: bad XPath /[[", Assert.Single(set.Errors).ToString());
    }

    [Fact]
    public void Json_and_form_bodies_become_args()
    {
        var rules = "SecRule ARGS:json.user.name \"@streq bob\" \"id:1,phase:2,deny\"\nSecRule ARGS_POST:a \"@pm evil\" \"id:2,phase:2,deny\"";
        Assert.Equal(1, Run(rules, "/", "POST", [("Content-Type", "application/json")], """{"user":{"name":"bob"}}""").Interruption!.Id);
        Assert.Equal(2, Run(rules, "/", "POST", [("Content-Type", "application/x-www-form-urlencoded")], "a=very+EVIL").Interruption!.Id);
    }

    [Theory]
    [InlineData("urlDecodeUni", "a%u0041%41+b", "aAA b")]
    [InlineData("htmlEntityDecode", "&lt;a&#x41;&#66;", "<aAB")]
    [InlineData("jsDecode", "\\x41\\u0042\\n", "AB\n")]
    [InlineData("cssDecode", "\\41 b", "Ab")]
    [InlineData("cmdLine", "C^a\"t  /etc,x", "cat/etc x")]
    [InlineData("normalisePath", "/a/./b/../c//d", "/a/c/d")]
    [InlineData("normalizePathWin", "\\a\\..\\b", "/b")]
    [InlineData("replaceComments", "a/*x*/b/*", "a b ")]
    [InlineData("compressWhitespace", "a \t\n b", "a b")]
    [InlineData("removeWhitespace", "a b\tc", "abc")]
    [InlineData("utf8toUnicode", "\u00c3\u00a9", "%u00e9")]
    [InlineData("base64Decode", "aGVsbG8=", "hello")]
    [InlineData("hexEncode", "AB", "4142")]
    [InlineData("length", "abcd", "4")]
    [InlineData("lowercase", "AbC", "abc")]
    public void Transformations(string name, string input, string expected) =>
        Assert.Equal(expected, Transforms.Get(name)!(input));

    [Theory]
    [InlineData("[([]*?x", "[([]*?x")]
    [InlineData("[]a]\\w", "[]a][a-zA-Z0-9_]")]
    [InlineData("[^]\\d]++", "[^]0-9]+")]
    [InlineData("\\x{41}", "\\x41")]
    public void Pcre_patterns_translate(string pcre, string dotnet) => Assert.Equal(dotnet, PcreRegex.Translate(pcre));

    [Theory]
    [InlineData("1' or '1'='1", true)]
    [InlineData("admin'--", true)]
    [InlineData("1 union select password from users", true)]
    [InlineData("1; drop table users", true)]
    [InlineData("1 or 1=1", true)]
    [InlineData("' and sleep(5)--", true)]
    [InlineData("O'Brien", false)]
    [InlineData("select your plan", false)]
    [InlineData("tom and jerry", false)]
    [InlineData("1234", false)]
    [InlineData("benchmark(10000000,md5(1))", true)]
    public void DetectSqli(string input, bool sqli) => Assert.Equal(sqli, InjectionDetector.SqliFingerprint(input) is not null);

    [Theory]
    [InlineData("<script>alert(1)</script>", true)]
    [InlineData("<img src=x onerror=alert(1)>", true)]
    [InlineData("\" onmouseover=\"alert(1)", true)]
    [InlineData("<a href=\"javascript:alert(1)\">x</a>", true)]
    [InlineData("javascript:alert(1)", false)] // a script URL outside an attribute: not markup (as libinjection)
    [InlineData("<b>bold</b>", false)]
    [InlineData("a < b and c > d", false)]
    [InlineData("hello world", false)]
    public void DetectXss(string input, bool xss) => Assert.Equal(xss, InjectionDetector.IsXss(input));

    [Fact]
    public void Operators()
    {
        var rules = """
            SecRule ARGS:a "@validateByteRange 32-126" "id:1,phase:2,pass,setvar:tx.range=1"
            SecRule REQUEST_URI_RAW "@validateUrlEncoding" "id:2,phase:2,pass,setvar:tx.url=1"
            SecRule ARGS:u "@validateUtf8Encoding" "id:3,phase:2,pass,setvar:tx.utf=1"
            SecRule REMOTE_ADDR "@ipMatch 127.0.0.0/8,10.0.0.1" "id:4,phase:2,pass,setvar:tx.ip=1"
            SecRule ARGS:w "@within GET POST" "id:5,phase:2,pass,setvar:tx.within=1"
            SecRule ARGS:e "@endsWith .php" "id:6,phase:2,pass,setvar:tx.ends=1"
            SecRule ARGS:p "@pm foo BAR" "id:7,phase:2,pass,capture,setvar:tx.pm=%{tx.0}"
            """;
        var tx = Run(rules, "/x?a=%01&u=%C3%28&w=POST&e=a.php&p=xxbarxx&bad=%zz");
        Assert.Equal(["1", "1", "1", "1", "1", "1", "BAR"], new[] { "range", "url", "utf", "ip", "within", "ends", "pm" }.Select(tx.Tx));
        var clean = Run(rules, "/x?a=abc&u=%C3%A9&w=PUT&e=a.html&p=zzz");
        Assert.All(new[] { "range", "url", "utf", "within", "ends", "pm" }, k => Assert.Null(clean.Tx(k)));
    }
}

public class CrsLoadTests
{
    [LinuxFact]
    public void The_Debian_CRS_loads_with_only_the_listed_warnings()
    {
        if (!Directory.Exists("/usr/share/modsecurity-crs")) Assert.Fail("modsecurity-crs is not installed (tests/install-deps.sh)");
        var set = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs" });
        Assert.True(set.Errors.Count == 0, string.Join("\n", set.Errors));
        Assert.True(set.RuleCount > 500, $"{set.RuleCount} rules");
        // what CRS 3.3 uses that FastGate does not run: IP reputation (geo, RBL) and the persistent IP collection
        Assert.True(set.Warnings.All(w => w.Message.Contains("@geoLookup") || w.Message.Contains("@rbl") || w.Message.Contains("@ipMatchFromFile") || w.Message.Contains("initcol")),
            string.Join("\n", set.Warnings));
    }
}

public class WafTransactionReuseTests
{
    private static WafRequest Request(string uri, string? body = null)
    {
        var r = new WafRequest { Method = body is null ? "GET" : "POST", Uri = uri, RemoteAddress = "198.51.100.7" };
        r.Headers.Add(("Host", "shop.example.com"));
        r.Headers.Add(("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"));
        r.Headers.Add(("Accept", "text/html"));
        r.Headers.Add(("Cookie", "session=3f9a1c; theme=dark"));
        if (body is not null)
        {
            r.Headers.Add(("Content-Type", "application/x-www-form-urlencoded"));
            r.Headers.Add(("Content-Length", body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        return r;
    }

    private static (bool Blocked, int Score, string Ids) Evaluate(WafTransaction tx, string? body)
    {
        bool blocked = tx.Evaluate(1);
        if (!blocked)
        {
            tx.SetBody(body is null ? null : System.Text.Encoding.Latin1.GetBytes(body));
            blocked = tx.Evaluate(2);
        }
        return (blocked, tx.AnomalyScore, string.Join(",", tx.Matches.Select(m => m.Id)));
    }

    /// <summary>A connection reuses one transaction: after Reset nothing of the previous request (TX scores, ctl
    /// removals, matches, the body) may show, so a reused one decides every request exactly as a new one does.</summary>
    [LinuxFact]
    public void AReusedTransaction_DecidesEachRequestAsANewOneDoes()
    {
        if (!Directory.Exists("/usr/share/modsecurity-crs")) Assert.Fail("modsecurity-crs is not installed (tests/install-deps.sh)");
        var set = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs", ParanoiaLevel = 2 });
        (string Uri, string? Body)[] requests =
        [
            ("/products/42?id=1%27%20OR%20%271%27=%271", null), // SQLi
            ("/products/42?sort=price&page=2", null),
            ("/search", "q=<script>alert(document.cookie)</script>"), // XSS in the body
            ("/account/settings", "name=Ada&theme=dark"),
            ("/files?path=../../etc/passwd", null), // LFI
            ("/", null),
        ];
        WafTransaction? reused = null;
        int blocked = 0;
        foreach (var (uri, body) in requests.Concat(requests.Reverse()))
        {
            var fresh = Evaluate(new WafTransaction(set, Request(uri, body)), body);
            if (reused is null) reused = new WafTransaction(set, Request(uri, body));
            else reused.Reset(set, Request(uri, body));
            Assert.Equal(fresh, Evaluate(reused, body));
            if (fresh.Blocked) blocked++;
        }
        Assert.Equal(6, blocked); // the three attacks, both times: the table tells the two kinds apart
    }
}

public class WafConnectionCacheTests
{
    private static WafRequest Request(string ua)
    {
        var r = new WafRequest { Method = "GET", Uri = "/", RemoteAddress = "198.51.100.7" };
        r.Headers.Add(("Host", "shop.example.com"));
        r.Headers.Add(("User-Agent", ua));
        return r;
    }

    /// <summary>
    /// A connection's transaction keeps operator results and transformed values for the strings that repeat (the
    /// same string objects, as WafStep keeps them): a capturing rule must still capture on every request (TX is new
    /// each time), results follow the value, and a reload's rule set does not see the old set's results.
    /// </summary>
    [Fact]
    public void Results_kept_across_requests_still_capture_follow_the_value_and_the_rule_set()
    {
        const string rules = """
            SecRule REQUEST_HEADERS:User-Agent "@rx ^(\w+)/" "id:10,phase:1,pass,nolog,t:none,t:lowercase,capture,setvar:tx.agent=%{tx.1}"
            SecRule REQUEST_HEADERS:Host "@rx example" "id:12,phase:1,pass,t:none,setvar:tx.hosts=+1"
            SecRule TX:agent "@streq BAD" "id:11,phase:1,deny,t:none"
            """;
        var sqlmapSet = WafRuleSet.FromText(rules.Replace("BAD", "sqlmap", StringComparison.Ordinal));
        var curlSet = WafRuleSet.FromText(rules.Replace("BAD", "curl", StringComparison.Ordinal));
        Assert.Empty(sqlmapSet.Errors);
        var sqlmap = Request("SQLMap/1.5");
        var curl = Request("curl/8.5");
        WafTransaction? tx = null;
        bool Blocked(WafRuleSet set, WafRequest r)
        {
            if (tx is null) tx = new WafTransaction(set, r); else tx.Reset(set, r);
            bool blocked = tx.Evaluate(1) || tx.Evaluate(2);
            Assert.Equal("1", tx.Tx("hosts")); // a cached match still runs its setvars, once per request
            return blocked;
        }
        for (int i = 0; i < 3; i++)
        {
            Assert.True(Blocked(sqlmapSet, sqlmap));   // the same strings again: the capture is made again
            Assert.Equal("sqlmap", tx!.Tx("agent"));
            Assert.False(Blocked(sqlmapSet, curl));
            Assert.Equal("curl", tx.Tx("agent"));
        }
        // the reloaded set: the same request strings, the other decision
        Assert.False(Blocked(curlSet, sqlmap));
        Assert.True(Blocked(curlSet, curl));
        Assert.True(Blocked(sqlmapSet, sqlmap));
    }
}

public class TransformTests
{
    [Theory]
    [InlineData("compressWhitespace", "a  b\t\tc\nd", "a b c d")]
    [InlineData("compressWhitespace", "a\tb", "a b")]
    [InlineData("replaceComments", "sel/*x*/ect", "sel ect")]
    [InlineData("replaceComments", "a*/b", "ab")]
    [InlineData("cmdLine", "C:\\Win\"d^ows ,; /x (y", "c:windows/x(y")]
    [InlineData("cmdLine", "cat  /etc", "cat/etc")]
    [InlineData("normalisePath", "/a/./b/../c//d", "/a/c/d")]
    [InlineData("normalisePath", "../x/.", "../x/")]
    [InlineData("normalisePathWin", "\\a\\..\\b", "/b")]
    public void ATransformation_ChangesWhatItMust(string name, string input, string expected) =>
        Assert.Equal(expected, Transforms.Get(name)!(input));

    /// <summary>An unchanged value comes back as the same string: no allocation, and the per-request cache keyed by
    /// reference finds it again in the next step.</summary>
    [Theory]
    [InlineData("compressWhitespace", "a b c")]
    [InlineData("replaceComments", "nothing to see / * here")]
    [InlineData("cmdLine", "ls -la tmp/x")]
    [InlineData("normalisePath", "/products/42/")]
    [InlineData("normalisePath", "relative/path.html")]
    public void AnUnchangedValue_IsTheSameString(string name, string input)
    {
        var output = Transforms.Get(name)!(input);
        Assert.Equal(input, output);
        Assert.Same(input, output);
    }
}

/// <summary>
/// The constant checks folded at load (WafRuleSet.Fold: CRS's "TX:EXECUTING_PARANOIA_LEVEL @lt N ... skipAfter"): the
/// folded walk must decide every request as the plain walk does, fold nothing a later rule could change, and record
/// the matched variables the folded rules would have set.
/// </summary>
public class WafConstantFoldTests
{
    private static WafTransaction Run(WafRuleSet set, (string, string)[]? headers = null, string uri = "/", string method = "GET")
    {
        var req = new WafRequest { Method = method, Uri = uri };
        foreach (var h in headers ?? []) req.Headers.Add(h);
        var tx = new WafTransaction(set, req);
        if (!tx.Evaluate(1)) tx.Evaluate(2);
        return tx;
    }

    private static (WafRuleSet Folded, WafRuleSet Plain) Both(string rules)
    {
        var folded = WafRuleSet.FromText(rules, "(text)", fold: true);
        var plain = WafRuleSet.FromText(rules, "(text)", fold: false);
        Assert.Empty(folded.Errors);
        Assert.Null(plain.Fold);
        return (folded, plain);
    }

    [LinuxFact]
    public void Crs_paranoia_checks_are_folded_and_decide_as_the_plain_walk_at_pl1_and_pl2()
    {
        if (!Directory.Exists("/usr/share/modsecurity-crs")) Assert.Fail("modsecurity-crs is not installed (tests/install-deps.sh)");
        (string Uri, string? Ua, string? Body)[] requests =
        [
            ("/", null, null), // no User-Agent: 920320 at PL2 only
            ("/", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", null),
            ("/products/42?id=1%27%20OR%20%271%27=%271", "Mozilla/5.0", null),
            ("/search", "Mozilla/5.0", "q=<script>alert(document.cookie)</script>"),
            ("/files?path=../../etc/passwd", "Mozilla/5.0", null),
            ("/x?cmd=;cat%20/etc/passwd", "curl/8.5", null),
            ("/x?a=1&b=select+1+from+dual", "sqlmap/1.5", null),
            ("/account/settings", "Mozilla/5.0", "name=Ada&theme=dark"),
        ];
        foreach (var pl in new[] { 1, 2 })
        {
            var folded = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs", ParanoiaLevel = pl });
            var plain = WafRuleSet.Load(new WafLoadOptions { Rules = "/usr/share/modsecurity-crs", ParanoiaLevel = pl, FoldConstants = false });
            Assert.NotNull(folded.Fold);
            Assert.Contains(folded.Fold!.Slots, s => folded.TxSlotNames[s] == "executing_paranoia_level");
            Assert.Equal(pl.ToString(System.Globalization.CultureInfo.InvariantCulture), folded.Fold.Values[Array.FindIndex(folded.Fold.Slots, s => folded.TxSlotNames[s] == "executing_paranoia_level")]);
            Assert.True(folded.Fold.FoldedRules > 100, $"{folded.Fold.FoldedRules} rules folded");
            foreach (var (uri, ua, body) in requests)
            {
                (bool, int, string) Decide(WafRuleSet set)
                {
                    var r = new WafRequest { Method = body is null ? "GET" : "POST", Uri = uri, RemoteAddress = "198.51.100.7" };
                    r.Headers.Add(("Host", "shop.example.com"));
                    if (ua is not null) r.Headers.Add(("User-Agent", ua));
                    if (body is not null) r.Headers.Add(("Content-Type", "application/x-www-form-urlencoded"));
                    var tx = new WafTransaction(set, r);
                    bool blocked = tx.Evaluate(1);
                    if (!blocked) { tx.SetBody(body is null ? null : System.Text.Encoding.Latin1.GetBytes(body)); blocked = tx.Evaluate(2); }
                    return (blocked, tx.AnomalyScore, string.Join(",", tx.Matches.Select(m => m.Id)));
                }
                Assert.Equal(Decide(plain), Decide(folded));
            }
            // PL2's rules still run at PL2 (and only there): 920320, a request without User-Agent
            var noUa = new WafTransaction(folded, new WafRequest { Uri = "/", Headers = { ("Host", "shop.example.com") } });
            if (!noUa.Evaluate(1)) noUa.Evaluate(2);
            Assert.Equal(pl >= 2, noUa.Matches.Any(m => m.Id == 920320));
        }
    }

    [Fact]
    public void A_check_before_a_later_writer_is_not_folded_and_a_changed_value_walks_the_plain_edges()
    {
        var (folded, plain) = Both("""
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
            SecRule TX:LEVEL "@lt 2" "id:10,phase:1,pass,nolog,skipAfter:END"
            SecAction "id:11,phase:1,pass,nolog,setvar:tx.pl2=1"
            SecMarker END
            SecRule REQUEST_HEADERS:X-Level "@streq 2" "id:20,phase:1,pass,nolog,setvar:tx.level=2"
            SecRule TX:LEVEL "@lt 2" "id:30,phase:2,pass,nolog,skipAfter:END2"
            SecAction "id:31,phase:2,pass,nolog,setvar:tx.pl2b=1"
            SecMarker END2
            """);
        Assert.NotNull(folded.Fold); // rule 30 (phase 2)
        Assert.Null(folded.Fold!.Edges[1]); // rule 10 lies before rule 20, the last writer: phase 1 folds nothing
        Assert.Equal(1, folded.Fold.FoldedRules);
        foreach (var set in new[] { folded, plain })
        {
            var low = Run(set);
            Assert.Null(low.Tx("pl2"));
            Assert.Null(low.Tx("pl2b"));
            var high = Run(set, [("X-Level", "2")]);
            Assert.Null(high.Tx("pl2")); // rule 10 ran before rule 20 set 2
            Assert.Equal("1", high.Tx("pl2b")); // the fold assumed 1: phase 2 walks the plain edges
        }
    }

    [Theory]
    [InlineData("SecRule REQUEST_HEADERS:X-Level \"@streq 2\" \"id:20,phase:2,pass,nolog,setvar:tx.level=2\"")] // a writer in phase 2
    [InlineData("SecRule REQUEST_HEADERS:X-Level \"@streq 2\" \"id:20,phase:2,pass,nolog,setvar:'tx.%{request_headers.x-name}=2'\"")] // a name made at run time
    public void A_variable_a_later_phase_may_write_is_not_folded_by_its_name_or_a_run_time_one(string writer)
    {
        var (folded, plain) = Both($"""
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
            {writer}
            SecRule TX:LEVEL "@lt 2" "id:30,phase:2,pass,nolog,skipAfter:END2"
            SecAction "id:31,phase:2,pass,nolog,setvar:tx.pl2b=1"
            SecMarker END2
            """);
        Assert.Null(folded.Fold);
        foreach (var set in new[] { folded, plain })
        {
            Assert.Null(Run(set).Tx("pl2b"));
            Assert.Equal("1", Run(set, [("X-Level", "2"), ("X-Name", "level")]).Tx("pl2b"));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)] // the same phase: the walk leaves the folded edges at the rule whose ctl ran
    public void A_ctl_that_removes_a_folded_check_sends_the_walk_back_to_the_plain_edges(int ctlPhase)
    {
        var (folded, plain) = Both($$"""
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
            SecRule REQUEST_HEADERS:X-Off "@streq 1" "id:5,phase:{{ctlPhase}},pass,nolog,ctl:ruleRemoveById=30"
            SecRule TX:LEVEL "@lt 2" "id:30,phase:2,pass,nolog,skipAfter:END2"
            SecAction "id:31,phase:2,pass,nolog,setvar:tx.pl2b=1"
            SecMarker END2
            """);
        Assert.Equal(1, folded.Fold!.FoldedRules);
        foreach (var set in new[] { folded, plain })
        {
            Assert.Null(Run(set).Tx("pl2b"));
            Assert.Equal("1", Run(set, [("X-Off", "1")]).Tx("pl2b")); // 30 removed: nothing skips 31
        }
    }

    [Fact]
    public void Folded_matches_still_record_their_matched_variables()
    {
        var (folded, plain) = Both("""
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
            SecRule TX:LEVEL "@lt 2" "id:10,phase:1,pass,nolog,skipAfter:END"
            SecAction "id:11,phase:1,pass,nolog,setvar:tx.pl2=1"
            SecMarker END
            SecRule REQUEST_METHOD "@streq GET" "id:40,phase:1,pass,nolog,chain"
                SecRule MATCHED_VARS_NAMES "@streq TX:level" "setvar:tx.seen=1"
            SecRule TX:LEVEL "@lt 1" "id:50,phase:1,pass,nolog,skipAfter:END3"
            SecRule MATCHED_VAR_NAME "@streq TX:level" "id:51,phase:1,pass,nolog,setvar:tx.last=1"
            SecMarker END3
            SecRule &TX:exclusions|TX:exclusions "@eq 0" "id:60,phase:1,pass,nolog,skipAfter:END6"
            SecAction "id:61,phase:1,pass,nolog,setvar:tx.excl=1"
            SecMarker END6
            SecRule MATCHED_VAR_NAME "@streq TX" "id:62,phase:1,pass,nolog,setvar:tx.countname=1"
            """);
        Assert.Equal(3, folded.Fold!.FoldedRules);
        foreach (var set in new[] { folded, plain })
        {
            var tx = Run(set);
            Assert.Null(tx.Tx("pl2"));
            Assert.Equal("1", tx.Tx("seen")); // 10's match is in MATCHED_VARS although the walk never visits 10
            Assert.Null(tx.Tx("last")); // 40 matched last
            Assert.Null(tx.Tx("excl")); // &TX:exclusions is 0: 60 skips 61
            Assert.Equal("1", tx.Tx("countname")); // and its match (the count's name, TX) is the last matched variable
        }
    }
}
