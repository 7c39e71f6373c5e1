using System.Net;
using System.Net.Http;
using System.Text.Json;
using FastGate.Tests.Infrastructure;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Hosting;

public class ReloadTests
{
    private static string Config(string upstream, bool toggled) => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [
            { "id": "toggle", "match": { "pathPrefix": "/toggle" }, "cluster": "backend", "stripPrefix": true },
            { "id": "ok", "match": { "path": "/hello" }, "cluster": "backend" }
          ],
          "policies": [
            {{(toggled ? "{ \"id\": \"toggle-deny\", \"match\": { \"paths\": [\"/toggle\"] }, \"actions\": [ { \"type\": \"deny\", \"status\": 403 } ] }" : "")}}
          ]
        }
        """;

    private static string TempFile(string text)
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-reload-");
        var path = Path.Combine(dir.FullName, "fastgate.json");
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public async Task FileRewritten50Times_UntouchedPathNeverFails_ToggledDenyRuleFollowsEachChange()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        var path = TempFile(Config(address, toggled: false));
        await using var gateway = await TestGateway.StartFromFileAsync(path);

        int ok = 0, failed = 0;
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            using var http = gateway.CreateClient();
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var r = await http.GetAsync("/hello");
                    if (r.StatusCode == HttpStatusCode.OK && await r.Content.ReadAsStringAsync() == "Hello, World!") Interlocked.Increment(ref ok);
                    else Interlocked.Increment(ref failed);
                }
                catch (HttpRequestException) { Interlocked.Increment(ref failed); }
            }
        })).ToArray();

        using var probe = gateway.CreateClient();
        for (int i = 1; i <= 50; i++)
        {
            bool toggled = i % 2 == 1;
            if (i == 25)
            {
                // A broken file mid-way: the previous policy stays and the error is reported.
                File.WriteAllText(path, "{ \"listeners\": [ ], \"routes\": \"oops\" ");
                await Eventually.WaitUntilAsync(() => Task.FromResult(gateway.Host.Reloader!.LastReload is { Success: false }),
                    "the broken file is reported as a failed reload", describe: () => $"last reload: {gateway.Host.Reloader!.LastReload}");
                using var admin = gateway.CreateAdminClient();
                var config = JsonDocument.Parse(await admin.GetStringAsync("/admin/config")).RootElement;
                Assert.Equal("failure", config.GetProperty("lastReload").GetProperty("result").GetString());
                Assert.NotEmpty(config.GetProperty("lastReload").GetProperty("errors").EnumerateArray());
                Assert.Equal(HttpStatusCode.OK, (await probe.GetAsync("/toggle")).StatusCode); // i == 24 left the deny rule off
            }
            File.WriteAllText(path, Config(address, toggled));
            var expected = toggled ? HttpStatusCode.Forbidden : HttpStatusCode.OK;
            await Eventually.WaitUntilAsync(async () => (await probe.GetAsync("/toggle")).StatusCode == expected, $"reload {i} answers {expected}");
        }
        stop.Cancel();
        await Task.WhenAll(load);
        Assert.Equal(0, failed);
        Assert.True(ok > 50, $"only {ok} requests completed during the reloads");
        var metrics = await gateway.ScrapeMetricsAsync();
        Assert.True(Proxy.ProxyForwardingTests.Counter(metrics, "fastgate_config_reloads_total{result=\"failure\"}") >= 1);
        Assert.True(Proxy.ProxyForwardingTests.Counter(metrics, "fastgate_config_reloads_total{result=\"success\"}") >= 50);
    }

    [Fact]
    public async Task UpstreamPools_SurviveAReloadThatKeepsTheDestination()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        var path = TempFile(Config(address, toggled: false));
        await using var gateway = await TestGateway.StartFromFileAsync(path);
        using var http = gateway.CreateClient();
        (await http.GetAsync("/hello")).Dispose();
        var before = gateway.Host.Runtime.Current.Clusters[0].Destinations[0].Pool;
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/toggle")).StatusCode);
        File.WriteAllText(path, Config(address, toggled: true));
        var result = await gateway.Host.Reloader!.ReloadAsync("test");
        Assert.True(result.Success);
        Assert.Same(before, gateway.Host.Runtime.Current.Clusters[0].Destinations[0].Pool);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.GetAsync("/toggle")).StatusCode);
    }

    [Fact]
    public async Task Reload_WithTlsListener_WarnsAboutListenerChangesOnlyWhenTheyChange()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        using var ca = new TestCertificateAuthority("FastGate Reload Test CA");
        var dir = Directory.CreateTempSubdirectory("fastgate-reload-tls-");
        using var server = ca.IssueServerCertificate("localhost");
        var (cert, key) = TestCertificateAuthority.WritePemPair(server, dir.FullName);
        string Text(string routeId, string plainName) => $$"""
            {
              "listeners": [
                { "name": "https", "address": "127.0.0.1:0", "tls": { "certificate": "{{cert}}", "key": "{{key}}", "sni": [ { "hosts": ["localhost"], "certificate": "{{cert}}", "key": "{{key}}" } ] } },
                { "name": "{{plainName}}", "address": "127.0.0.1:0" }
              ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream.Address.ToString().TrimEnd('/')}}" } ] } ],
              "routes": [ { "id": "{{routeId}}", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
            }
            """;
        var path = Path.Combine(dir.FullName, "fastgate.json");
        File.WriteAllText(path, Text("all", "plain"));
        var logs = new CapturedLogs();
        await using var gateway = await TestGateway.StartFromFileAsync(path, logs);
        const string warning = "listener or admin addresses changed";

        File.WriteAllText(path, Text("everything", "plain")); // a route changes, the listeners do not
        var same = await gateway.Host.Reloader!.ReloadAsync("test");
        Assert.True(same.Success, string.Join("; ", same.Errors));
        Assert.Equal("everything", gateway.Host.Runtime.Current.Routes[0].Id);
        Assert.True(logs.Count(LogLevel.Warning, warning) == 0, logs.Dump());

        File.WriteAllText(path, Text("everything", "renamed")); // a listener changes: applies at the next restart
        var changed = await gateway.Host.Reloader!.ReloadAsync("test");
        Assert.True(changed.Success, string.Join("; ", changed.Errors));
        Assert.True(logs.Count(LogLevel.Warning, warning) == 1, logs.Dump());
    }
}
