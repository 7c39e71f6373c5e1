using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// A real HTTP upstream (Kestrel on an ephemeral loopback port) that holds requests on a gate, so a test knows a
/// request is in flight instead of sleeping and hoping: a request to /held... is counted on arrival (the test awaits
/// <see cref="WaitForHeldAsync"/>) and answered 200 "released" only after <see cref="Release"/>. Any other path is
/// answered at once with 200 "Hello, World!".
/// </summary>
public sealed class GatedUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _lock = new();
    private readonly List<(int Count, TaskCompletionSource Signal)> _waiters = [];
    private int _held;

    private GatedUpstream(WebApplication app) => _app = app;

    public string Address { get; private set; } = "";
    /// <summary>Requests that have reached the gate so far.</summary>
    public int Held => Volatile.Read(ref _held);

    public static async Task<GatedUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var upstream = new GatedUpstream(app);
        app.Run(async context =>
        {
            if (!context.Request.Path.StartsWithSegments("/held"))
            {
                await context.Response.WriteAsync("Hello, World!");
                return;
            }
            upstream.Arrived();
            await upstream._gate.Task.WaitAsync(context.RequestAborted);
            await context.Response.WriteAsync("released");
        });
        await app.StartAsync();
        upstream.Address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return upstream;
    }

    private void Arrived()
    {
        lock (_lock)
        {
            _held++;
            foreach (var (count, signal) in _waiters)
                if (_held >= count) signal.TrySetResult();
        }
    }

    /// <summary>Completes when <paramref name="count"/> requests are held at the gate; fails after the timeout.</summary>
    public Task WaitForHeldAsync(int count = 1, TimeSpan? timeout = null)
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_held >= count) return Task.CompletedTask;
            _waiters.Add((count, signal));
        }
        return Eventually.SignalledAsync(signal.Task, $"{count} request(s) reached the upstream (held: {Held})", timeout);
    }

    /// <summary>Opens the gate: every held request, and every later one, is answered.</summary>
    public void Release() => _gate.TrySetResult();

    public async ValueTask DisposeAsync()
    {
        Release();
        await _app.DisposeAsync();
    }
}
