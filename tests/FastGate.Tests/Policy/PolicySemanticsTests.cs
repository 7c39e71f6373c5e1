using System.Text;
using FastGate.Policy;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Policy;

public class PolicySemanticsTests
{
    private const string Rules = """
        "ipLists": [ { "id": "office", "cidrs": ["10.0.0.0/8", "2001:db8::/32"] } ],
        "policies": [
          { "id": "block-admin", "match": { "paths": ["/admin/*"], "not": { "clientIps": ["office"] } },
            "actions": [ { "type": "deny", "status": 403, "message": "forbidden" } ] },
          { "id": "tag", "match": { "methods": ["POST"] }, "mode": "report",
            "actions": [ { "type": "setRequestHeaders", "headers": { "X-Write": "1" } } ] },
          { "id": "add-env", "match": { "paths": ["/api/*"] },
            "actions": [ { "type": "setRequestHeaders", "headers": { "X-Env": "prod" } }, { "type": "setResponseHeaders", "headers": { "X-Policy": "1" } } ] },
          { "id": "allow-health", "match": { "paths": ["/api/health"] }, "actions": [ { "type": "allow" } ] },
          { "id": "deny-delete", "match": { "methods": ["DELETE"], "paths": ["/api/*"] }, "actions": [ { "type": "deny", "status": 405, "message": "no deletes" } ] },
          { "id": "users", "match": { "paths": ["/api/users/{id}"] },
            "actions": [ { "type": "rewritePath", "path": "/v2/user" }, { "type": "route", "cluster": "canary" } ] },
          { "id": "teapot", "match": { "hosts": ["tea.example.com"], "paths": ["/teapot"] },
            "actions": [ { "type": "respond", "status": 418, "body": "short and stout" } ] },
          { "id": "no-debug", "match": { "headers": [ { "name": "X-Debug", "equals": "1" } ] }, "actions": [ { "type": "deny", "status": 400, "message": "no debug" } ] },
          { "id": "drop-query", "match": { "query": [ { "name": "q", "regex": "^drop" } ] }, "actions": [ { "type": "deny" } ] },
          { "id": "strip-cookie", "match": { "paths": ["/api/*"] }, "actions": [ { "type": "removeRequestHeaders", "names": ["Cookie"] } ] },
          { "id": "wild-host", "match": { "hosts": ["*.internal.example"], "methods": ["PURGE"] }, "actions": [ { "type": "respond", "status": 204 } ] },
          { "id": "api-route-only", "match": { "routes": ["web"], "paths": ["/only-web"] }, "actions": [ { "type": "deny", "status": 404 } ] }
        ]
        """;

    private static readonly CompiledPolicy Policy = Compile(Rules);

    [Theory]
    // method, target, host, ip, extra header, verdict, deciding rule, matched enforce rules, report matches
    [InlineData("GET", "/admin/users", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 0)]
    [InlineData("GET", "/admin", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 0)]
    [InlineData("GET", "/admin/users", "api.example.com", "10.1.2.3", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "/admin/users", "api.example.com", "2001:db8::5", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "//admin//users/", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 0)]
    [InlineData("GET", "/%61dmin/users", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 0)]
    [InlineData("GET", "//admin/", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 0)]
    [InlineData("GET", "/administrator", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "/api/health", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, "allow-health", "add-env,allow-health,strip-cookie", 0)]
    // allow decided first: the later deny of deny-delete is ignored, its rule still counts as matched.
    [InlineData("DELETE", "/api/health", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, "allow-health", "add-env,allow-health,deny-delete,strip-cookie", 0)]
    // deny decides: rules after it contribute nothing.
    [InlineData("DELETE", "/api/orders", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "deny-delete", "add-env,deny-delete", 0)]
    // report mode: counted, never enforced.
    [InlineData("POST", "/api/orders", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "add-env,strip-cookie", 1)]
    [InlineData("POST", "/admin", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "block-admin", "block-admin", 1)]
    [InlineData("GET", "/api/users/42", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "add-env,users,strip-cookie", 0)]
    [InlineData("GET", "/api/users/42/orders", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "add-env,strip-cookie", 0)]
    [InlineData("GET", "/teapot", "tea.example.com:8080", "203.0.113.7", "", PolicyVerdict.Respond, "teapot", "teapot", 0)]
    [InlineData("GET", "/teapot", "TEA.Example.COM", "203.0.113.7", "", PolicyVerdict.Respond, "teapot", "teapot", 0)]
    [InlineData("GET", "/teapot", "tea.example.com.", "203.0.113.7", "", PolicyVerdict.Respond, "teapot", "teapot", 0)]
    [InlineData("GET", "/teapot", "coffee.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "/x", "api.example.com", "203.0.113.7", "x-debug: 1", PolicyVerdict.Deny, "no-debug", "no-debug", 0)]
    [InlineData("GET", "/x", "api.example.com", "203.0.113.7", "X-Debug: 2", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "/x?a=1&q=dropme", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "drop-query", "drop-query", 0)]
    [InlineData("GET", "/x?q=%64rop", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "drop-query", "drop-query", 0)]
    [InlineData("GET", "/x?q=keep&q=drop", "api.example.com", "203.0.113.7", "", PolicyVerdict.Deny, "drop-query", "drop-query", 0)]
    [InlineData("GET", "/x?q=keep", "api.example.com", "203.0.113.7", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("PURGE", "/cache", "a.internal.example", "203.0.113.7", "", PolicyVerdict.Respond, "wild-host", "wild-host", 0)]
    [InlineData("PURGE", "/cache", "internal.example", "203.0.113.7", "", PolicyVerdict.Allow, null, "", 0)]
    [InlineData("GET", "/cache", "a.internal.example", "203.0.113.7", "", PolicyVerdict.Allow, null, "", 0)]
    public void Table(string method, string target, string host, string ip, string header, PolicyVerdict verdict, string? deciding, string matched, int reports)
    {
        var head = header.Length == 0 ? Request(method, target, host) : Request(method, target, host, header);
        var result = Evaluate(Policy, head, ip);
        Assert.Equal(verdict, result.Verdict);
        Assert.Equal(deciding, DecidingId(Policy, result));
        Assert.Equal(matched, string.Join(",", MatchedIds(Policy, result)));
        Assert.Equal(reports, result.ReportMatches);

        // The index and a direct check of every rule in order agree.
        var linear = new PolicyResult();
        Policy.EvaluateLinear(new RequestFacts(head, Ip(ip), 0), linear);
        Assert.Equal(result.Verdict, linear.Verdict);
        Assert.Equal(result.Matched.ToArray(), linear.Matched.ToArray());
    }

    [Fact]
    public void RouteCondition_UsesRouteIndex()
    {
        var head = Request("GET", "/only-web");
        Assert.Equal(PolicyVerdict.Allow, Evaluate(Policy, head, routeIndex: 0).Verdict);
        Assert.Equal(PolicyVerdict.Deny, Evaluate(Policy, head, routeIndex: 1).Verdict);
        Assert.Equal(PolicyVerdict.Allow, Evaluate(Policy, head, routeIndex: -1).Verdict);
    }

    [Fact]
    public void DefaultDeny_DecidesWhenNoRuleDoes()
    {
        var policy = Compile("""
            "defaultAction": "deny",
            "policies": [ { "id": "open", "match": { "paths": ["/public/*"] }, "actions": [ { "type": "allow" } ] },
                          { "id": "hdr", "match": { "paths": ["/x"] }, "actions": [ { "type": "setRequestHeaders", "headers": { "X-A": "1" } } ] } ]
            """);
        var r = Evaluate(policy, Request("GET", "/public/a"));
        Assert.Equal((PolicyVerdict.Allow, 0), (r.Verdict, r.DecidingRule));
        r = Evaluate(policy, Request("GET", "/x"));
        Assert.Equal((PolicyVerdict.Deny, -1), (r.Verdict, r.DecidingRule));
        Assert.Equal(["hdr"], MatchedIds(policy, r));
        Assert.Equal("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 22\r\n", Encoding.ASCII.GetString(policy.DefaultDenyResponseHead));
    }

    [Fact]
    public void ReportMode_IsCountedPerRule()
    {
        var policy = Compile(Rules);
        for (int i = 0; i < 3; i++) Evaluate(policy, Request("POST", "/api/x"));
        Evaluate(policy, Request("GET", "/api/x"));
        Assert.Equal(3, policy.ReportCount(1));
        Assert.Equal(0, policy.ReportCount(0));
    }

    [Fact]
    public void Actions_ArePrecomputedBytes()
    {
        var deny = Policy.Rules[0];
        Assert.Equal(RuleDecision.Deny, deny.Decision);
        Assert.Equal("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 22\r\n", Encoding.ASCII.GetString(deny.ResponseHead));
        Assert.Equal("{\"error\":\"forbidden\"}\n", Encoding.UTF8.GetString(deny.ResponseBody));
        var env = Policy.Rules[2];
        Assert.Equal("X-Env: prod\r\n", Encoding.ASCII.GetString(env.SetRequestHeaderLines));
        Assert.Equal("x-env", Encoding.ASCII.GetString(env.SetRequestHeaderNames.Single()));
        Assert.Equal("X-Policy: 1\r\n", Encoding.ASCII.GetString(env.SetResponseHeaderLines));
        var users = Policy.Rules[5];
        Assert.Equal("/v2/user", Encoding.ASCII.GetString(users.RewritePath!));
        Assert.Equal(("canary", 1), (users.RouteToCluster, users.RouteToClusterIndex));
        var teapot = Policy.Rules[6];
        Assert.Equal("HTTP/1.1 418 Unknown\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 15\r\n", Encoding.ASCII.GetString(teapot.ResponseHead));
        Assert.Equal("cookie", Encoding.ASCII.GetString(Policy.Rules[9].RemoveRequestHeaderNames.Single()));

        var r = Evaluate(Policy, Request("GET", "/api/users/7"));
        Assert.Equal((5, 5), (r.RewriteRule, r.RouteRule));
    }

    [Fact]
    public void Explain_ListsEveryRule()
    {
        var result = new PolicyResult();
        var policy = Compile(Rules); // its own: the Table rows count report matches on the shared one
        var lines = policy.Explain(new RequestFacts(Request("POST", "/admin/x"), Ip("203.0.113.7"), 0), result);
        Assert.Equal(policy.Rules.Length, lines.Count);
        Assert.Equal(new RuleExplanation("block-admin", true, FastGate.Configuration.PolicyMode.Enforce, true), lines[0]);
        Assert.Equal(new RuleExplanation("tag", true, FastGate.Configuration.PolicyMode.Report, false), lines[1]);
        Assert.False(lines[2].Matched);
        Assert.Equal(0, policy.ReportCount(1)); // explain does not count
    }

    [Theory]
    [InlineData("/users/{id}", "/users/1", true)]
    [InlineData("/users/{id}", "/users/1/", true)]
    [InlineData("/users/{id}", "/users", false)]
    [InlineData("/users/{id}", "/users/1/orders", false)]
    [InlineData("/users/{id}/orders", "/users/1/orders", true)]
    [InlineData("/users/{id}/orders", "/users/1/order", false)]
    [InlineData("/users/{id}/orders/*", "/users/1/orders/9/items", true)]
    [InlineData("/users/{id}/orders/*", "/users/1/orders", true)]
    [InlineData("/users/me", "/users/me", true)]
    [InlineData("/users/me", "/users/Me", false)]
    [InlineData("/a/{x}/{y}", "/a/b/c", true)]
    [InlineData("/*", "/anything/at/all", true)]
    [InlineData("/", "/", true)]
    [InlineData("/", "/x", false)]
    [InlineData("/a%20b", "/a%20b", true)]
    [InlineData("/a/b", "/a%2Fb", false)]
    public void PathTemplates(string pattern, string path, bool matches)
    {
        var policy = Compile($$"""
            "policies": [ { "id": "p", "match": { "paths": ["{{pattern}}"] }, "actions": [ { "type": "deny" } ] } ]
            """);
        // an encoded slash only gets this far when http.escapedSlashes keeps it (the default refuses it at parse)
        var request = Parse($"GET {path} HTTP/1.1\nHost: api.example.com\n\n", FastGate.Http.HttpLimits.Default with { EscapedSlashes = FastGate.Http.EscapedSlashAction.Keep });
        Assert.Equal(matches ? PolicyVerdict.Deny : PolicyVerdict.Allow, Evaluate(policy, request).Verdict);
    }

    [Fact]
    public void TemplateAndLiteral_BothCandidates_FirstRuleDecides()
    {
        var policy = Compile("""
            "policies": [
              { "id": "me", "match": { "paths": ["/users/me"] }, "actions": [ { "type": "allow" } ] },
              { "id": "any", "match": { "paths": ["/users/{id}"] }, "actions": [ { "type": "deny" } ] }
            ]
            """);
        Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/users/me")).Verdict);
        Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/users/you")).Verdict);
    }

    [Fact]
    public void RegexConditions_OnHeaderBytes_IncludingLongValues()
    {
        var policy = Compile("""
            "policies": [
              { "id": "bot", "match": { "headers": [ { "name": "User-Agent", "regex": "(?i)bot\\b" } ] }, "actions": [ { "type": "deny" } ] },
              { "id": "absent", "match": { "headers": [ { "name": "X-Key", "present": false } ], "paths": ["/k"] }, "actions": [ { "type": "deny" } ] },
              { "id": "one", "match": { "headers": [ { "name": "X-Tier", "oneOf": ["gold", "silver"] } ] }, "actions": [ { "type": "respond", "status": 200 } ] }
            ]
            """);
        Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/", "h", "User-Agent: GoogleBot/2.1")).Verdict);
        Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/", "h", "User-Agent: robots-are-fine")).Verdict);
        Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/", "h", "User-Agent: " + new string('x', 3000) + " bot")).Verdict);
        Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/k")).Verdict);
        Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/k", "h", "X-Key: 1")).Verdict);
        Assert.Equal(PolicyVerdict.Respond, Evaluate(policy, Request("GET", "/", "h", "X-Tier: silver")).Verdict);
        Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/", "h", "X-Tier: Silver")).Verdict);
    }

    [Fact]
    public void Evaluate_AllocatesNothing()
    {
        var policy = Compile(Rules.Replace("\"policies\": [", """
            "policies": [ { "id": "ua", "match": { "headers": [ { "name": "User-Agent", "regex": "curl" } ], "paths": ["/ua"] }, "actions": [ { "type": "deny" } ] },
            """));
        var heads = new[]
        {
            Request("GET", "/admin/%61/x"), Request("DELETE", "/api/orders?q=drop%20it"), Request("POST", "/api/users/1"),
            Request("GET", "/ua", "h", "User-Agent: curl/8"), Request("PURGE", "/x", "a.internal.example"),
            Request("GET", "/" + string.Join("/", Enumerable.Repeat("s", 100))),
        };
        var result = new PolicyResult();
        var client = Ip("203.0.113.9");
        for (int i = 0; i < 200; i++) foreach (var h in heads) policy.Evaluate(new RequestFacts(h, client, 0), result);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) foreach (var h in heads) policy.Evaluate(new RequestFacts(h, client, 0), result);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
