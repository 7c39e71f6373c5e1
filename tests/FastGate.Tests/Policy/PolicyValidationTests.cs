using FastGate.Configuration;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Policy;

public class PolicyValidationTests
{
    private static void AssertError(string sections, string path, string messagePart)
    {
        var result = Load(sections);
        Assert.False(result.IsValid);
        Assert.True(result.Errors.Any(e => e.Path == path && e.Message.Contains(messagePart, StringComparison.Ordinal)),
            $"expected {path}: ...{messagePart}... in\n" + string.Join("\n", result.Errors));
    }

    private static string Rule(string match, string actions = """[ { "type": "deny" } ]""", string extra = "") =>
        $$"""{ "id": "r", "match": {{match}}, "actions": {{actions}} {{extra}} }""";

    [Fact]
    public void Bind_IssueExample_LoadsIntoRecords()
    {
        var result = Load("""
            "policies": [
              { "id": "block-admin", "match": { "paths": ["/admin/*"], "not": { "clientIps": ["10.0.0.0/8"] } },
                "actions": [ { "type": "deny", "status": 403, "message": "forbidden" } ] },
              { "id": "tag", "match": { "methods": ["POST"], "headers": [ { "name": "X-A", "present": true } ],
                  "query": [ { "name": "q", "oneOf": ["a", "b"] } ] }, "mode": "report", "description": "tag writes",
                "actions": [ { "type": "setRequestHeaders", "headers": { "X-Write": "1" } } ] }
            ],
            "defaultAction": "deny",
            "ipLists": [ { "id": "office", "cidrs": ["192.0.2.0/24"] } ]
            """);
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        var c = result.Config!;
        Assert.Equal(DefaultAction.Deny, c.DefaultAction);
        Assert.Equal(2, c.Policies.Count);
        Assert.Equal(["/admin/*"], c.Policies[0].Match.Paths);
        Assert.Equal(["10.0.0.0/8"], c.Policies[0].Match.Not!.ClientIps);
        Assert.Equal(403, c.Policies[0].Actions[0].Status);
        Assert.Equal("forbidden", c.Policies[0].Actions[0].Message);
        Assert.Equal(PolicyMode.Report, c.Policies[1].Mode);
        Assert.True(c.Policies[1].Match.Headers[0].Present);
        Assert.Equal(["a", "b"], c.Policies[1].Match.Query[0].OneOf!);
        Assert.Equal(KeyValuePair.Create("X-Write", "1"), c.Policies[1].Actions[0].Headers[0]);
        Assert.Equal("office", c.IpLists[0].Id);
    }

    [Fact] public void UnknownRuleProperty_DidYouMean() =>
        AssertError($"\"policies\": [ {Rule("{}", extra: ", \"mathc\": {}")} ]", "$.policies[0].mathc", "did you mean 'match'?");

    [Fact] public void UnknownMatchProperty_DidYouMean() =>
        AssertError($"\"policies\": [ {Rule("{ \"path\": [\"/a\"] }")} ]", "$.policies[0].match.path", "did you mean 'paths'?");

    [Fact] public void PropertyOfAnotherActionType_IsUnknown() =>
        AssertError($"\"policies\": [ {Rule("{}", """[ { "type": "deny", "headers": { "X-A": "1" } } ]""")} ]", "$.policies[0].actions[0].headers", "unknown property 'headers'");

    [Fact] public void BadDefaultAction() => AssertError("\"defaultAction\": \"block\"", "$.defaultAction", "use \"allow\" or \"deny\"");

    [Fact] public void BadMode() => AssertError($"\"policies\": [ {Rule("{}", extra: ", \"mode\": \"reprot\"")} ]", "$.policies[0].mode", "did you mean 'report'?");

    [Fact] public void UnknownRoute() => AssertError($"\"policies\": [ {Rule("{ \"routes\": [\"apj\"] }")} ]", "$.policies[0].match.routes[0]", "unknown route 'apj'; did you mean 'api'?");

    [Fact] public void UnknownCluster() =>
        AssertError($"\"policies\": [ {Rule("{}", """[ { "type": "route", "cluster": "canery" } ]""")} ]", "$.policies[0].actions[0].cluster", "unknown cluster 'canery'; did you mean 'canary'?");

    [Fact] public void UnknownIpList() =>
        AssertError($"\"ipLists\": [ {{ \"id\": \"blocklist\", \"cidrs\": [\"192.0.2.0/24\"] }} ], \"policies\": [ {Rule("{ \"clientIps\": [\"blocklst\"] }")} ]",
            "$.policies[0].match.clientIps[0]", "unknown ipList 'blocklst'; did you mean 'blocklist'?");

    [Fact] public void DuplicateRuleId() =>
        AssertError($"\"policies\": [ {Rule("{}")}, {Rule("{}")} ]", "$.policies[1].id", "duplicate rule id 'r' (first used at $.policies[0])");

    [Fact] public void DuplicateIpListId() =>
        AssertError("\"ipLists\": [ { \"id\": \"a\", \"cidrs\": [\"192.0.2.0/24\"] }, { \"id\": \"a\", \"cidrs\": [\"192.0.2.0/24\"] } ]", "$.ipLists[1].id", "duplicate ipList id 'a'");

    [Theory]
    [InlineData("10.0.0.0/33", "invalid prefix length")]
    [InlineData("10.0.0.1/8", "host bits set; did you mean '10.0.0.0/8'?")]
    [InlineData("10.0.0/8", "is not a CIDR")]
    [InlineData("2001:db8::1/32", "host bits set; did you mean '2001:db8::/32'?")]
    [InlineData("2001:db8::/129", "invalid prefix length")]
    public void MalformedCidr(string cidr, string message) =>
        AssertError($"\"policies\": [ {Rule($"{{ \"clientIps\": [\"{cidr}\"] }}")} ]", "$.policies[0].match.clientIps[0]", message);

    [Fact] public void MalformedCidrInIpList() =>
        AssertError("\"ipLists\": [ { \"id\": \"l\", \"cidrs\": [\"300.0.0.0/8\"] } ]", "$.ipLists[0].cidrs[0]", "is not a CIDR");

    [Fact] public void InvalidRegex() =>
        AssertError($"\"policies\": [ {Rule("{ \"headers\": [ { \"name\": \"X-A\", \"regex\": \"a(b\" } ] }")} ]", "$.policies[0].match.headers[0].regex", "is not a valid regex");

    [Fact] public void BacktrackingOnlyRegex_IsRefused() =>
        AssertError($"\"policies\": [ {Rule("{ \"query\": [ { \"name\": \"q\", \"regex\": \"(a)\\\\1\" } ] }")} ]", "$.policies[0].match.query[0].regex", "linear-time regex engine does not support");

    [Fact] public void FieldConditionNeedsExactlyOneTest() =>
        AssertError($"\"policies\": [ {Rule("{ \"headers\": [ { \"name\": \"X-A\", \"present\": true, \"equals\": \"1\" } ] }")} ]", "$.policies[0].match.headers[0]", "give exactly one of present, equals, oneOf or regex (found 2)");

    [Fact] public void ConflictingPathTemplates() =>
        AssertError($"\"policies\": [ {Rule("{ \"paths\": [\"/users/{id}/orders\"] }")}, {Rule("{ \"paths\": [\"/users/{name}/orders\"] }").Replace("\"r\"", "\"r2\"")} ]",
            "$.policies[1].match.paths[0]", "conflicts with '/users/{id}/orders' at $.policies[0].match.paths[0]");

    [Theory]
    [InlineData("admin/*", "must start with '/'")]
    [InlineData("/api*", "'*' is only allowed as the whole last segment")]
    [InlineData("/a/*/b", "'*' is only allowed as the whole last segment")]
    [InlineData("/users/{id", "must be a whole-segment variable")]
    [InlineData("/users/x{id}", "must be a whole-segment variable")]
    [InlineData("/a/{id}/{id}", "variable '{id}' appears twice")]
    [InlineData("/a?b=1", "match the query with 'query' conditions")]
    public void MalformedPath(string path, string message) =>
        AssertError($"\"policies\": [ {Rule($"{{ \"paths\": [\"{path}\"] }}")} ]", "$.policies[0].match.paths[0]", message);

    [Theory]
    [InlineData("""{ "type": "deny", "status": 700 }""", ".status", "between 100 and 599 (found 700)")]
    [InlineData("""{ "type": "deny", "status": 99 }""", ".status", "between 100 and 599 (found 99)")]
    [InlineData("""{ "type": "deny", "status": 200 }""", ".status", "400-599")]
    [InlineData("""{ "type": "respond", "body": "x" }""", ".status", "is required for respond")]
    [InlineData("""{ "type": "respond", "status": 600 }""", ".status", "between 100 and 599")]
    public void BadStatus(string action, string suffix, string message) =>
        AssertError($"\"policies\": [ {Rule("{}", $"[ {action} ]")} ]", "$.policies[0].actions[0]" + suffix, message);

    [Fact] public void UnknownActionType_DidYouMean() =>
        AssertError($"\"policies\": [ {Rule("{}", """[ { "type": "dney" } ]""")} ]", "$.policies[0].actions[0].type", "unknown action type 'dney'; did you mean 'deny'?");

    [Theory]
    [InlineData("""{ "type": "setRequestHeaders" }""", ".headers", "needs at least one header")]
    [InlineData("""{ "type": "removeResponseHeaders" }""", ".names", "needs at least one header name")]
    [InlineData("""{ "type": "rewritePath" }""", ".path", "is required for rewritePath")]
    [InlineData("""{ "type": "route" }""", ".cluster", "is required for route")]
    [InlineData("""{ "type": "requireAuth" }""", ".schemes", "needs at least one scheme")]
    [InlineData("""{ "type": "rateLimit" }""", ".limiters", "needs at least one limiter id")]
    [InlineData("""{ "type": "rewritePath", "path": "v2" }""", ".path", "must start with '/'")]
    [InlineData("""{ "type": "setRequestHeaders", "headers": { "Content-Length": "1" } }""", ".headers.Content-Length", "cannot set or remove it")]
    [InlineData("""{ "type": "setRequestHeaders", "headers": { "X-A": "a\r\nX-B: b" } }""", ".headers.X-A", "control characters")]
    public void ActionMissingOrBadField(string action, string suffix, string message) =>
        AssertError($"\"policies\": [ {Rule("{}", $"[ {action} ]")} ]", "$.policies[0].actions[0]" + suffix, message);

    [Fact] public void TwoDecidingActions() =>
        AssertError($"\"policies\": [ {Rule("{}", """[ { "type": "allow" }, { "type": "deny" } ]""")} ]", "$.policies[0].actions[1]", "at most one allow, deny or respond");

    [Fact] public void NoActions() => AssertError($"\"policies\": [ {Rule("{}", "[]")} ]", "$.policies[0].actions", "at least one action");

    [Fact] public void NestedNot() =>
        AssertError($"\"policies\": [ {Rule("{ \"not\": { \"paths\": [\"/a\"], \"not\": { \"paths\": [\"/b\"] } } }")} ]", "$.policies[0].match.not.not", "cannot be nested");

    [Fact] public void EmptyNot() => AssertError($"\"policies\": [ {Rule("{ \"not\": {} }")} ]", "$.policies[0].match.not", "empty 'not'");

    [Fact] public void LowerCaseMethod() => AssertError($"\"policies\": [ {Rule("{ \"methods\": [\"get\"] }")} ]", "$.policies[0].match.methods[0]", "use 'GET'");

    [Fact] public void HostWithPort() => AssertError($"\"policies\": [ {Rule("{ \"hosts\": [\"api.example.com:8080\"] }")} ]", "$.policies[0].match.hosts[0]", "is not a host name");

    [Fact] public void IpListNeedsCidrsOrFile() => AssertError("\"ipLists\": [ { \"id\": \"l\" } ]", "$.ipLists[0]", "needs cidrs");

    [Fact] public void IpListFileMissing() => AssertError("\"ipLists\": [ { \"id\": \"l\", \"file\": \"does-not-exist.txt\" } ]", "$.ipLists[0].file", "cannot read");

    [Fact]
    public void SeveralErrors_AllReported()
    {
        var result = Load("""
            "defaultAction": "maybe",
            "policies": [
              { "id": "a", "match": { "routes": ["nope"], "clientIps": ["1.2.3.4/40"] }, "actions": [ { "type": "deny", "status": 42 } ] },
              { "id": "a", "match": { "paths": ["no-slash"] }, "actions": [ { "type": "alow" } ] }
            ]
            """);
        var paths = result.Errors.Select(e => e.Path).ToHashSet();
        Assert.Superset(new HashSet<string>
        {
            "$.defaultAction", "$.policies[0].match.routes[0]", "$.policies[0].match.clientIps[0]", "$.policies[0].actions[0].status",
            "$.policies[1].id", "$.policies[1].match.paths[0]", "$.policies[1].actions[0].type",
        }, paths);
    }
}
