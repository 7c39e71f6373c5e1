using System.Net;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;

namespace FastGate.Tests.Policy;

internal static class PolicyTestKit
{
    public const string Base = """
        "listeners": [ { "address": "127.0.0.1:0" } ],
        "clusters": [
          { "id": "backend", "destinations": [ { "address": "http://127.0.0.1:9001" } ] },
          { "id": "canary", "destinations": [ { "address": "http://127.0.0.1:9002" } ] }
        ],
        "routes": [
          { "id": "api", "match": { "pathPrefix": "/api" }, "cluster": "backend" },
          { "id": "web", "match": { "pathPrefix": "/" }, "cluster": "backend" }
        ]
        """;

    public static readonly string[] RouteIds = ["api", "web"];

    /// <summary>Loads a config made of the base sections plus <paramref name="policySections"/> (JSON members).</summary>
    public static ConfigLoadResult Load(string policySections) =>
        ConfigLoader.Load("{" + Base + (policySections.Length > 0 ? "," + policySections : "") + "}");

    public static CompiledPolicy Compile(string policySections, string? baseDirectory = null)
    {
        var loaded = ConfigLoader.Load("{" + Base + "," + policySections + "}");
        Assert.True(loaded.Errors.Count == 0, string.Join("\n", loaded.Errors));
        var config = loaded.Config!;
        if (baseDirectory is not null) config = config with { BaseDirectory = baseDirectory };
        return PolicyCompiler.Compile(config, RouteIds, ["backend", "canary"]);
    }

    public static RequestHead Parse(string text, HttpLimits? limits = null)
    {
        var head = new RequestHead();
        var bytes = Encoding.Latin1.GetBytes(text.Replace("\n", "\r\n"));
        var status = HttpRequestParser.TryParse(bytes, limits ?? HttpLimits.Default, head, out _, out var reason);
        Assert.True(status == ParseStatus.Complete, $"{status} {reason}");
        return head;
    }

    public static RequestHead Request(string method, string target, string host = "api.example.com", params string[] headers) =>
        Parse($"{method} {target} HTTP/1.1\nHost: {host}\n" + string.Concat(headers.Select(h => h + "\n")) + "\n");

    public static ClientAddress Ip(string ip) => ClientAddress.From(IPAddress.Parse(ip));

    public static PolicyResult Evaluate(CompiledPolicy policy, RequestHead head, string ip = "203.0.113.7", int routeIndex = 0)
    {
        var result = new PolicyResult();
        policy.Evaluate(new RequestFacts(head, Ip(ip), routeIndex), result);
        return result;
    }

    public static string[] MatchedIds(CompiledPolicy policy, PolicyResult result) =>
        result.Matched.ToArray().Select(i => policy.Rules[i].Id).ToArray();

    public static string? DecidingId(CompiledPolicy policy, PolicyResult result) =>
        result.DecidingRule < 0 ? null : policy.Rules[result.DecidingRule].Id;
}
