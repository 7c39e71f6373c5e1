using System.Collections.Concurrent;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using FastGate.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Proxy;

/// <summary>Retries to another destination, the retry budget and the circuit breaker (docs/retries.md), over real sockets.</summary>
public class RetryTests
{
    /// <summary>An upstream that answers every request with one status and counts what it received, by method.</summary>
    private sealed class CountingUpstream : IAsyncDisposable
    {
        private readonly WebApplication _app;
        public readonly ConcurrentDictionary<string, int> ByMethod = new();
        private int _total;
        private CountingUpstream(WebApplication app) => _app = app;
        public string Address => _app.Urls.First().TrimEnd('/');
        public int Total => Volatile.Read(ref _total);
        public int Count(string method) => ByMethod.TryGetValue(method, out var n) ? n : 0;

        public static async Task<CountingUpstream> StartAsync(int status = 200)
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            var upstream = new CountingUpstream(app);
            app.Run(async context =>
            {
                using (var drain = new MemoryStream()) await context.Request.Body.CopyToAsync(drain);
                upstream.ByMethod.AddOrUpdate(context.Request.Method, 1, (_, n) => n + 1);
                Interlocked.Increment(ref upstream._total);
                context.Response.StatusCode = status;
                await context.Response.WriteAsync(status == 200 ? "ok" : "unavailable");
            });
            await app.StartAsync();
            return upstream;
        }

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }

    private static string Config(string[] destinations, string cluster = "", string extra = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "clusters": [ { "id": "backend", "destinations": [ {{string.Join(", ", destinations.Select(d => $"{{ \"address\": \"{d}\" }}"))}} ] {{cluster}} } {{extra}} ],
          "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
        }
        """;

    private static double Retries(TestGateway g, string reason) => g.Metrics.UpstreamRetries.WithLabels("backend", reason).Value;

    [Fact]
    public async Task ConnectFailure_EveryMethodGoesToTheOtherDestination_ByDefault()
    {
        using var dead = Ports.Refusing();
        await using var live = await CountingUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config([dead.Address, live.Address]));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        for (int i = 0; i < 10; i++)
        {
            using (var get = await http.GetAsync("/r/" + i)) Assert.Equal(HttpStatusCode.OK, get.StatusCode);
            using (var post = await http.PostAsync("/r/" + i, new StringContent("order " + i))) Assert.Equal(HttpStatusCode.OK, post.StatusCode);
        }
        Assert.Equal(10, live.Count("GET"));
        Assert.Equal(10, live.Count("POST"));
        Assert.True(Retries(gateway, "connect") >= 1, "the dead destination was never tried");
        Assert.Equal(0, gateway.Metrics.UpstreamErrors.WithLabels("backend", "connect").Value);
    }

    [Fact]
    public async Task ResetAfterTheBodyArrived_APostIsNeverSentTwice_AGetIsRetriedElsewhere()
    {
        int resets = 0;
        var seen = new ConcurrentQueue<string>();
        // reads the whole request, then resets the connection before any response
        await using var breaking = new RawUpstream(async (stream, cancel) =>
        {
            var head = await RawUpstream.ReadHeadAsync(stream, cancel);
            seen.Enqueue(head.Split(' ')[0]);
            var length = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
            if (length is not null)
            {
                var body = new byte[int.Parse(length.Split(':')[1].Trim())];
                await stream.ReadExactlyAsync(body, cancel);
            }
            Interlocked.Increment(ref resets);
            stream.Socket.LingerState = new LingerOption(true, 0);
            stream.Socket.Close();
        });
        await using var live = await CountingUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config([breaking.Address, live.Address]));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };

        // round-robin: the first try of the first request goes to the breaking destination
        using (var post = await http.PostAsync("/orders", new StringContent("{\"qty\":1}"))) Assert.Equal(HttpStatusCode.BadGateway, post.StatusCode);
        using (var get = await http.GetAsync("/a")) Assert.Equal(HttpStatusCode.OK, get.StatusCode); // the live one
        using (var get = await http.GetAsync("/b")) Assert.Equal(HttpStatusCode.OK, get.StatusCode); // breaking, then live
        Assert.Equal(["POST", "GET"], seen.ToArray());
        Assert.Equal(0, live.Count("POST"));
        Assert.Equal(2, live.Count("GET"));
        Assert.Equal(1, Retries(gateway, "reset"));
    }

    [Fact]
    public async Task ResetAfterTheBody_RetryNonIdempotent_SendsThePostAgain()
    {
        await using var breaking = new RawUpstream(async (stream, cancel) =>
        {
            await RawUpstream.ReadHeadAsync(stream, cancel);
            stream.Socket.LingerState = new LingerOption(true, 0);
            stream.Socket.Close();
        });
        await using var live = await CountingUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config([breaking.Address, live.Address],
            """, "retry": { "retryNonIdempotent": true }"""));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        using (var post = await http.PostAsync("/orders", new StringContent("x"))) Assert.Equal(HttpStatusCode.OK, post.StatusCode);
        Assert.Equal(1, live.Count("POST"));
    }

    [Fact]
    public async Task RetryOnStatus_TriesUpToMaxRetries_AndAnEmptyBudgetStopsEveryRetry()
    {
        await using var a = await CountingUpstream.StartAsync(503);
        await using var b = await CountingUpstream.StartAsync(503);
        await using (var gateway = await TestGateway.StartAsync(Config([a.Address, b.Address], """, "retry": { "retryOn": [503], "maxRetries": 2 }""")))
        {
            using var http = new HttpClient { BaseAddress = gateway.BaseUri };
            for (int i = 0; i < 10; i++)
                using (var r = await http.GetAsync("/x")) Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Equal(30, a.Total + b.Total); // three tries each, alternating destinations
            Assert.Equal(20, Retries(gateway, "status"));
            // POST is not idempotent: one try
            using (var post = await http.PostAsync("/x", new StringContent("x"))) Assert.Equal(HttpStatusCode.ServiceUnavailable, post.StatusCode);
            Assert.Equal(31, a.Total + b.Total);
        }
        await using (var gateway = await TestGateway.StartAsync(Config([a.Address, b.Address],
            """, "retry": { "retryOn": [503], "budgetPercent": 0, "minRetryConcurrency": 0 }""")))
        {
            using var http = new HttpClient { BaseAddress = gateway.BaseUri };
            for (int i = 0; i < 10; i++)
                using (var r = await http.GetAsync("/x")) Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Equal(41, a.Total + b.Total); // no retry: exactly one try per request
            Assert.Equal(10, gateway.Metrics.RetryBudgetExhausted.WithLabels("backend").Value);
        }
    }

    [Fact]
    public async Task RetryAfterLongerThanTheBound_IsNotRetried()
    {
        var tries = 0;
        await using var slow = new RawUpstream(async (stream, cancel) =>
        {
            while (!cancel.IsCancellationRequested)
            {
                var head = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (head.Length == 0) return;
                Interlocked.Increment(ref tries);
                await stream.WriteAsync("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n"u8.ToArray(), cancel);
            }
        });
        await using var gateway = await TestGateway.StartAsync(Config([slow.Address], """, "retry": { "retryOn": [503] }"""));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri };
        using (var r = await http.GetAsync("/x")) Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
        Assert.Equal(1, tries);
    }

    [Fact]
    public async Task PerTryTimeout_MovesAnIdempotentRequestToTheOtherDestination()
    {
        // /held never answers until released; the balancer may pick either destination first
        await using var first = await GatedUpstream.StartAsync();
        await using var second = await GatedUpstream.StartAsync();
        await using var gateway = await TestGateway.StartAsync(Config([first.Address, second.Address], """, "retry": { "perTryTimeout": "1500ms" }"""));
        using var http = new HttpClient { BaseAddress = gateway.BaseUri, Timeout = TimeSpan.FromSeconds(20) };
        var response = http.GetAsync("/held");
        await first.WaitForHeldAsync();
        await second.WaitForHeldAsync(); // one try timed out and the retry reached the other destination
        // released at once, before the retry's own per-try timeout can run out on a busy machine; the timed-out try's
        // connection is closed: only the retry can carry an answer back
        second.Release();
        first.Release();
        Assert.Equal(1, Retries(gateway, "timeout"));
        using var r = await response;
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal("released", await r.Content.ReadAsStringAsync());
        Assert.Equal(1, first.Held);
        Assert.Equal(1, second.Held);
    }

    [Fact]
    public async Task CircuitBreaker_OverMaxConcurrentRequests_Is503AtOnce_AndAnotherClusterIsUnaffected()
    {
        await using var gated = await GatedUpstream.StartAsync();
        await using var other = await CountingUpstream.StartAsync();
        var config = $$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [
                { "id": "backend", "destinations": [ { "address": "{{gated.Address}}" } ], "circuitBreaker": { "maxConcurrentRequests": 2 } },
                { "id": "healthy", "destinations": [ { "address": "{{other.Address}}" } ] }
              ],
              "routes": [
                { "id": "healthy", "match": { "pathPrefix": "/healthy" }, "cluster": "healthy" },
                { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" }
              ]
            }
            """;
        await using var gateway = await TestGateway.StartAsync(config);
        using var http = new HttpClient { BaseAddress = gateway.BaseUri, Timeout = TimeSpan.FromSeconds(20) };
        var held = new[] { http.GetAsync("/held/1"), http.GetAsync("/held/2") };
        await gated.WaitForHeldAsync(2);
        using (var third = await http.GetAsync("/held/3"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, third.StatusCode);
            Assert.Contains("circuit_open", await third.Content.ReadAsStringAsync());
        }
        using (var healthy = await http.GetAsync("/healthy")) Assert.Equal(HttpStatusCode.OK, healthy.StatusCode);
        gated.Release();
        foreach (var t in held) using (var r = await t) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal(1, gateway.Metrics.CircuitBreakerRejections.WithLabels("backend", "concurrent").Value);
        Assert.Equal(2, gated.Held);
        // the slots came back: a new request goes through
        using (var after = await http.GetAsync("/after")) Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    [Theory]
    [InlineData("""{ "retryOn": [404] }""", "$.clusters[0].retry.retryOn[0]")]
    [InlineData("""{ "maxRetries": 11 }""", "$.clusters[0].retry.maxRetries")]
    [InlineData("""{ "perTryTimeout": "0s" }""", "$.clusters[0].retry.perTryTimeout")]
    [InlineData("""{ "retries": 1 }""", "$.clusters[0].retry.retries")]
    public void BadRetrySettings_AreErrorsWithTheirJsonPath(string retry, string path)
    {
        var loaded = FastGate.Configuration.ConfigLoader.Load(Config(["http://127.0.0.1:9"], $", \"retry\": {retry}"));
        Assert.Contains(loaded.Errors, e => e.ToString().Contains(path));
    }
}
