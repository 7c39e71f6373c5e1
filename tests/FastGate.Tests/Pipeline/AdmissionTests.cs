using System.Text.Json;
using FastGate.Security;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Pipeline;

/// <summary>
/// /admin/explain and the request path call the same Admission.Decide: for a table of requests, what explain says
/// (decision and status) is what the real request over a socket gets (issue 12).
/// </summary>
public class AdmissionTests
{
    private const string Key = "admission-test-key-1";

    private static string Config(string upstream) => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "consumers": [ { "id": "ops", "apiKeys": [ "{{ApiKeys.Hash(Key)}}" ] } ],
          "cors": [ { "id": "web", "origins": ["https://app.example.com"], "methods": ["GET", "POST"], "credentials": true } ],
          "policies": [
            { "id": "no-admin", "match": { "paths": ["/admin/*"] }, "actions": [ { "type": "deny", "status": 403 } ] },
            { "id": "teapot", "match": { "paths": ["/teapot"] }, "actions": [ { "type": "respond", "status": 418, "body": "tea" } ] },
            { "id": "ops-only", "match": { "paths": ["/ops/*"], "not": { "consumers": ["ops"] } }, "actions": [ { "type": "deny", "status": 403 } ] }
          ],
          "routes": [
            { "id": "private", "match": { "hosts": ["a.test"], "pathPrefix": "/private" }, "cluster": "backend", "auth": ["apiKey"], "stripPrefix": true },
            { "id": "ops", "match": { "hosts": ["a.test"], "pathPrefix": "/ops" }, "cluster": "backend", "stripPrefix": true },
            { "id": "web", "match": { "hosts": ["a.test"], "pathPrefix": "/web" }, "cluster": "backend", "cors": "web", "stripPrefix": true },
            { "id": "open", "match": { "hosts": ["a.test"], "pathPrefix": "/" }, "cluster": "backend" }
          ]
        }
        """;

    public static TheoryData<string, string, string, string[], string, int> Requests => new()
    {
        // method, host, path, headers, explain decision, status
        { "GET", "a.test", "/hello", [], "forward", 200 },
        { "GET", "b.test", "/hello", [], "reject", 404 },
        { "GET", "a.test", "/private/x", [], "reject", 401 },
        { "GET", "a.test", "/private/x", ["X-API-Key: wrong-key-wrong-key"], "reject", 401 },
        { "GET", "a.test", "/private/hello", [$"X-API-Key: {Key}"], "forward", 200 },
        { "GET", "a.test", "//private/x", [], "reject", 401 },
        { "GET", "a.test", "/admin/x", [], "deny", 403 },
        { "GET", "a.test", "/%61dmin/x", [], "deny", 403 },
        { "GET", "b.test", "/teapot", [], "respond", 418 },
        { "GET", "a.test", "/ops/x", [], "deny", 403 },
        { "GET", "a.test", "/ops/hello", [$"X-API-Key: {Key}"], "forward", 200 },
        { "OPTIONS", "a.test", "/web/x", ["Origin: https://app.example.com", "Access-Control-Request-Method: POST"], "preflight", 204 },
        { "OPTIONS", "a.test", "/web/x", ["Origin: https://evil.example", "Access-Control-Request-Method: POST"], "preflight", 403 },
        { "GET", "a.test", "/web/hello", ["Origin: https://evil.example"], "forward", 200 },
        { "GET", "a.test", "/a%2Fb", [], "reject", 400 },
    };

    [Theory]
    [MemberData(nameof(Requests))]
    public async Task Explain_SaysWhatTheRequestPathDoes(string method, string host, string path, string[] headers, string decision, int status)
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config(upstream.Address.ToString().TrimEnd('/')));

        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync($"{method} {path} HTTP/1.1\r\nHost: {host}\r\n" + string.Concat(headers.Select(h => h + "\r\n")) + "Connection: close\r\n\r\n");
        var response = await client.ReadResponseAsync();

        using var admin = gateway.CreateAdminClient();
        var query = $"/admin/explain?method={method}&host={Uri.EscapeDataString(host)}&path={Uri.EscapeDataString(path)}&ip=127.0.0.1"
                    + string.Concat(headers.Select(h => "&header=" + Uri.EscapeDataString(h)));
        var explain = JsonDocument.Parse(await admin.GetStringAsync(query)).RootElement;

        Assert.Equal(decision, explain.GetProperty("decision").GetString());
        Assert.Equal(status, response.Status);
        if (decision != "forward") Assert.Equal(status, explain.GetProperty("status").GetInt32());
    }
}
