using System.Text;
using FastGate.Policy;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Policy;

/// <summary>The indexed evaluator against a direct in-order check of every rule, on random rule sets and requests.</summary>
public class PolicyIndexTests
{
    private static readonly string[] Hosts = ["a.example.com", "b.example.com", "*.example.com", "*.b.example.com", "*", "other.test"];
    private static readonly string[] Paths = ["/a", "/a/*", "/a/b", "/a/{x}", "/a/{x}/c", "/b/*", "/*", "/", "/a/b/*", "/{x}/b"];
    private static readonly string[] Methods = ["GET", "POST", "DELETE", "PURGE"];
    private static readonly string[] Actions =
    [
        """{ "type": "allow" }""", """{ "type": "deny" }""", """{ "type": "respond", "status": 200 }""",
        """{ "type": "setRequestHeaders", "headers": { "X-A": "1" } }""", """{ "type": "rewritePath", "path": "/z" }""",
    ];

    private static string Pick(Random rng, string[] from, int max)
    {
        int n = rng.Next(max + 1);
        return string.Join(", ", Enumerable.Range(0, n).Select(_ => "\"" + from[rng.Next(from.Length)] + "\"").Distinct());
    }

    private static string RandomMatch(Random rng, bool allowNot)
    {
        var parts = new List<string>();
        if (rng.Next(2) == 0) parts.Add($"\"hosts\": [{Pick(rng, Hosts, 2)}]");
        if (rng.Next(2) == 0) parts.Add($"\"paths\": [{Pick(rng, Paths, 2)}]");
        if (rng.Next(3) == 0) parts.Add($"\"methods\": [{Pick(rng, Methods, 2)}]");
        if (rng.Next(4) == 0) parts.Add("\"headers\": [ { \"name\": \"X-T\", \"equals\": \"1\" } ]");
        if (rng.Next(4) == 0) parts.Add("\"clientIps\": [\"10.0.0.0/8\", \"2001:db8::/32\"]");
        if (rng.Next(6) == 0) parts.Add("\"query\": [ { \"name\": \"k\", \"present\": true } ]");
        if (rng.Next(6) == 0) parts.Add("\"routes\": [\"web\"]");
        if (parts.Count == 0 || (parts.Count == 1 && parts[0].StartsWith("\"hosts\": [\"*\"")))
            parts.Add($"\"paths\": [\"{Paths[rng.Next(Paths.Length)]}\"]"); // few catch-alls, so many rules get to decide
        // the not block's methods are always ["GET"]: drop the random ones, a key given twice is a config error
        if (allowNot && rng.Next(5) == 0)
            parts.Add("\"not\": {" + System.Text.RegularExpressions.Regex.Replace(RandomMatch(rng, false), "\"methods\": \\[[^\\]]*\\],? ?", "") + " \"methods\": [\"GET\"] }");
        return string.Join(", ", parts) + (parts.Count > 0 && !allowNot ? "," : "");
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public void Index_AgreesWithLinearScan(int seed)
    {
        var rng = new Random(seed);
        var rules = new StringBuilder();
        for (int i = 0; i < 60; i++)
        {
            if (i > 0) rules.Append(',');
            var mode = rng.Next(6) == 0 ? ", \"mode\": \"report\"" : "";
            rules.Append($"{{ \"id\": \"r{i}\", \"match\": {{ {RandomMatch(rng, true)} }}, \"actions\": [ {Actions[rng.Next(Actions.Length)]} ]{mode} }}");
        }
        var defaultAction = seed % 2 == 0 ? "deny" : "allow";
        var policy = Compile($"\"defaultAction\": \"{defaultAction}\", \"policies\": [ {rules} ]");
        string[] hosts = ["a.example.com", "x.b.example.com", "b.example.com", "example.com", "other.test", "A.EXAMPLE.com:81"];
        string[] paths = ["/", "/a", "/a/", "/a/b", "/a/q", "/a/q/c", "/a/b/c/d", "/b", "/b/x", "/q/b", "/zz", "//a//b"];
        string[] ips = ["10.1.1.1", "203.0.113.1", "2001:db8::9", "::1"];
        var deciders = new HashSet<int>();
        for (int i = 0; i < 3000; i++)
        {
            var headers = new List<string>();
            if (rng.Next(2) == 0) headers.Add("X-T: 1");
            var query = rng.Next(3) == 0 ? "?k=v" : "";
            var head = Request(Methods[rng.Next(Methods.Length)], paths[rng.Next(paths.Length)] + query, hosts[rng.Next(hosts.Length)], headers.ToArray());
            var facts = new RequestFacts(head, Ip(ips[rng.Next(ips.Length)]), rng.Next(-1, 2));
            var indexed = new PolicyResult();
            var linear = new PolicyResult();
            policy.Evaluate(facts, indexed);
            policy.EvaluateLinear(facts, linear);
            Assert.Equal(linear.Verdict, indexed.Verdict);
            Assert.Equal(linear.DecidingRule, indexed.DecidingRule);
            Assert.Equal(linear.Matched.ToArray(), indexed.Matched.ToArray());
            Assert.Equal(linear.ReportMatches, indexed.ReportMatches);
            Assert.Equal(linear.RewriteRule, indexed.RewriteRule);
            deciders.Add(indexed.DecidingRule);
        }
        Assert.True(deciders.Count >= 5, $"only {deciders.Count} distinct deciding rules: the random data is too uniform");
    }
}
