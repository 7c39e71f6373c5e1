using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.LoadTest.Tests.EndToEnd;

/// <summary>A tiny Kestrel app on 127.0.0.1 with an ephemeral port, counting the requests it answers.</summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private long _requests;
    private long _badKeys;
    private long _limited;

    private TestServer(WebApplication app) => _app = app;

    public string Url { get; private set; } = "";
    public long Requests => Interlocked.Read(ref _requests);
    public long UnknownKeys => Interlocked.Read(ref _badKeys);
    /// <summary>Every distinct path and query the server was asked for.</summary>
    public IReadOnlyCollection<string> Targets => _targets.Keys.ToList();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _targets = new();

    public static async Task<TestServer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var server = new TestServer(app);
        app.Run(server.HandleAsync);
        await app.StartAsync();
        server.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/";
        return server;
    }

    private async Task HandleAsync(HttpContext ctx)
    {
        Interlocked.Increment(ref _requests);
        _targets.TryAdd(ctx.Request.Path.Value + ctx.Request.QueryString.Value, 0);
        if (ctx.Request.Headers.TryGetValue("X-API-Key", out var key) && key.ToString().StartsWith("unknown-", StringComparison.Ordinal))
        {
            Interlocked.Increment(ref _badKeys);
            ctx.Response.StatusCode = 401;
            return;
        }
        switch (ctx.Request.Path.Value)
        {
            case "/chunked":
                await ctx.Response.WriteAsync("first;");
                await ctx.Response.Body.FlushAsync();
                await ctx.Response.WriteAsync("second");
                return;
            case "/limited" or "/limited-bare":
                // Every second request is over the limit.
                if (Interlocked.Increment(ref _limited) % 2 == 0)
                {
                    ctx.Response.StatusCode = 429;
                    if (ctx.Request.Path.Value == "/limited") ctx.Response.Headers["Retry-After"] = "1";
                    return;
                }
                ctx.Response.ContentLength = 2;
                await ctx.Response.Body.WriteAsync("ok"u8.ToArray());
                return;
            case "/teapot":
                ctx.Response.StatusCode = 418;
                return;
            case "/hang":
                try { await Task.Delay(TimeSpan.FromSeconds(30), ctx.RequestAborted); } catch (OperationCanceledException) { }
                return;
            default:
                ctx.Response.ContentLength = 5;
                await ctx.Response.Body.WriteAsync("hello"u8.ToArray());
                return;
        }
    }

    public async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
    }
}
