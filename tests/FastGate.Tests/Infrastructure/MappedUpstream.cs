using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>A real Kestrel upstream on 127.0.0.1 whose endpoints a test maps (no Server header, no logging).</summary>
public sealed class MappedUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;

    private MappedUpstream(WebApplication app, string address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>http://127.0.0.1:port, no trailing slash.</summary>
    public string Address { get; }

    public static async Task<MappedUpstream> StartAsync(Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.WebHost.ConfigureKestrel(k => k.AddServerHeader = false);
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return new MappedUpstream(app, address);
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
