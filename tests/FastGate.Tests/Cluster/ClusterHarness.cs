using System.Globalization;
using System.Net.Http;
using System.Text.Json;
using System.Text.RegularExpressions;
using FastGate.Tests.Infrastructure;
using FastGate.Tests.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Cluster;

/// <summary>
/// The upstream behind every gateway of the harness: <c>/held...</c> is counted on arrival and answered only when the
/// current gate opens (<see cref="Release"/> opens it and arms a new one); <c>/tokens...</c> answers an LLM-style
/// body reporting <see cref="TokensPerResponse"/> tokens; anything else answers "ok".
/// </summary>
public sealed class ClusterUpstream : IAsyncDisposable
{
    public const int TokensPerResponse = 10;
    private readonly WebApplication _app;
    private TaskCompletionSource _gate = NewGate();
    private int _held;

    private ClusterUpstream(WebApplication app) => _app = app;

    public string Address { get; private set; } = "";
    /// <summary>Requests that have reached the gate so far.</summary>
    public int Held => Volatile.Read(ref _held);

    private static TaskCompletionSource NewGate() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static async Task<ClusterUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var upstream = new ClusterUpstream(app);
        app.Run(async context =>
        {
            var path = context.Request.Path;
            if (path.StartsWithSegments("/held"))
            {
                var gate = Volatile.Read(ref upstream._gate).Task;
                Interlocked.Increment(ref upstream._held);
                try { await gate.WaitAsync(context.RequestAborted); }
                catch (OperationCanceledException) { return; }
                await context.Response.WriteAsync("released");
                return;
            }
            if (path.StartsWithSegments("/tokens"))
            {
                context.Response.ContentType = "application/json";
                await context.Response.WriteAsync($"{{\"choices\":[{{\"message\":{{\"content\":\"hi\"}}}}],\"usage\":{{\"total_tokens\":{TokensPerResponse}}}}}");
                return;
            }
            await context.Response.WriteAsync("ok");
        });
        await app.StartAsync();
        upstream.Address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return upstream;
    }

    /// <summary>Answers every held request and arms a new gate for the next ones.</summary>
    public void Release() => Interlocked.Exchange(ref _gate, NewGate()).TrySetResult();

    public Task WaitForHeldAsync(int count) =>
        Eventually.WaitUntilAsync(() => Held >= count, $"{count} requests reached the upstream's gate (now {Held})");

    public async ValueTask DisposeAsync()
    {
        Release();
        await _app.DisposeAsync();
    }
}

/// <summary>
/// Three `fastgate` OS processes and one real redis-server on loopback ports, started once for a test class (each
/// gateway has its own runtime, its own string-hash seed, its own Redis connection). The config is the same text
/// for all three, so they report the same config version.
/// </summary>
public sealed class ClusterHarness : IAsyncLifetime
{
    public const int GcraRate = 50, GcraBurst = 50, TokenBurst = 3000, Slots = 6, FailureBurst = 5;
    public static readonly TimeSpan LeaseTtl = TimeSpan.FromMilliseconds(1500);

    public RedisServerProcess Redis { get; private set; } = null!;
    public ClusterUpstream Upstream { get; private set; } = null!;
    public FastgateProcess[] Gateways { get; private set; } = [];
    public DirectoryInfo Directory { get; private set; } = null!;
    private readonly List<FastgateProcess> _extra = [];

    public static string Config(string upstream, string redis, string extraRoute = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "redis": { "connection": "{{redis}}", "heartbeat": "200ms", "memberTimeout": "2s", "leaseTtl": "1500ms" },
          "rateLimits": [
            { "id": "gcra", "rate": {{GcraRate}}, "per": "1s", "burst": {{GcraBurst}}, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" },
            { "id": "tokens", "unit": "tokens", "rate": 1, "per": "1h", "burst": {{TokenBurst}}, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" },
            { "id": "slots", "algorithm": "concurrency", "rate": {{Slots}}, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" },
            { "id": "bulk", "rate": 1000, "per": "1s", "burst": 1000, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "2s" },
            { "id": "fail-allow", "rate": 1, "per": "1h", "burst": {{FailureBurst}}, "key": "clientIp", "scope": "cluster", "onStoreFailure": "allow", "storeTimeout": "500ms" },
            { "id": "fail-deny", "rate": 1, "per": "1h", "burst": 1000, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "500ms" },
            { "id": "fail-local", "rate": 1, "per": "1h", "burst": {{FailureBurst}}, "key": "clientIp", "scope": "cluster", "onStoreFailure": "local", "storeTimeout": "500ms" }
          ],
          "alerts": {
            "evaluationInterval": "100ms",
            "rules": [
              { "id": "versions", "type": "clusterConfigMismatch", "window": "1s" },
              { "id": "store", "type": "clusterStoreDown", "window": "1s" }
            ]
          },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [
            { "id": "gcra", "match": { "pathPrefix": "/gcra" }, "cluster": "backend", "rateLimits": ["gcra"] },
            { "id": "tokens", "match": { "pathPrefix": "/tokens" }, "cluster": "backend", "rateLimits": ["tokens"] },
            { "id": "held", "match": { "pathPrefix": "/held" }, "cluster": "backend", "rateLimits": ["slots"] },
            { "id": "slot", "match": { "pathPrefix": "/slot" }, "cluster": "backend", "rateLimits": ["slots"] },
            { "id": "bulk", "match": { "pathPrefix": "/bulk" }, "cluster": "backend", "rateLimits": ["bulk"] },
            { "id": "f-allow", "match": { "pathPrefix": "/f-allow" }, "cluster": "backend", "rateLimits": ["fail-allow"] },
            { "id": "f-deny", "match": { "pathPrefix": "/f-deny" }, "cluster": "backend", "rateLimits": ["fail-deny"] },
            { "id": "f-local", "match": { "pathPrefix": "/f-local" }, "cluster": "backend", "rateLimits": ["fail-local"] },{{extraRoute}}
            { "id": "open", "match": { "pathPrefix": "/" }, "cluster": "backend" }
          ]
        }
        """;

    public string ConfigText => Config(Upstream.Address, Redis.Configuration);

    public async Task InitializeAsync()
    {
        Redis = new RedisServerProcess();
        Upstream = await ClusterUpstream.StartAsync();
        Directory = System.IO.Directory.CreateTempSubdirectory("fastgate-cluster-");
        var config = ConfigText;
        Gateways = await Task.WhenAll(
            FastgateProcess.StartAsync(Directory.FullName, config, "a.json"),
            FastgateProcess.StartAsync(Directory.FullName, config, "b.json"),
            FastgateProcess.StartAsync(Directory.FullName, config, "c.json"));
    }

    /// <summary>Another gateway on the same Redis (disposed with the harness, or killed by the test).</summary>
    public async Task<FastgateProcess> StartExtraAsync(string name, string? config = null)
    {
        var g = await FastgateProcess.StartAsync(Directory.FullName, config ?? ConfigText, name);
        lock (_extra) _extra.Add(g);
        return g;
    }

    public async Task DisposeAsync()
    {
        foreach (var g in Gateways.Concat(_extra))
        {
            try { await g.DisposeAsync(); }
            catch (InvalidOperationException) { } // a test killed it already
        }
        await Upstream.DisposeAsync();
        Redis.Dispose();
        try { Directory.Delete(recursive: true); } catch (IOException) { }
    }

    private static readonly HttpClient s_admin = new(new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromSeconds(15) };

    public static Task<string> MetricsAsync(FastgateProcess g) => s_admin.GetStringAsync($"http://127.0.0.1:{g.AdminPort}/metrics");

    /// <summary>The value of one sample (0 when absent): <paramref name="labels"/> as they appear, e.g. limiter="gcra",decision="allowed".</summary>
    public static double Sample(string metrics, string name, string labels = "")
    {
        var pattern = labels.Length == 0
            ? $@"^{Regex.Escape(name)} (\S+)$"
            : $@"^{Regex.Escape(name)}\{{{Regex.Escape(labels)}\}} (\S+)$";
        var m = Regex.Match(metrics, pattern, RegexOptions.Multiline);
        return m.Success ? double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }

    public static async Task<double> SampleAsync(FastgateProcess g, string name, string labels = "") => Sample(await MetricsAsync(g), name, labels);

    public static async Task<JsonElement> AdminJsonAsync(FastgateProcess g, string path)
    {
        var text = await s_admin.GetStringAsync($"http://127.0.0.1:{g.AdminPort}{path}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    public static Task<HttpResponseMessage> AdminAsync(FastgateProcess g, HttpMethod method, string path, string? json = null)
    {
        var request = new HttpRequestMessage(method, $"http://127.0.0.1:{g.AdminPort}{path}");
        if (json is not null) request.Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json");
        return s_admin.SendAsync(request);
    }

    public static HttpClient Client(FastgateProcess g) => new(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 16 })
    {
        BaseAddress = new Uri($"http://127.0.0.1:{g.Port}"),
        Timeout = TimeSpan.FromSeconds(30),
    };
}
