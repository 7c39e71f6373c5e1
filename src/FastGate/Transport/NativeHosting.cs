using FastGate.Configuration;
using FastGate.Proxy;
using Microsoft.Extensions.Logging;

namespace FastGate.Transport;

/// <summary>GatewayHost's one call into the native transport: which listeners it serves, and the fallback warning.</summary>
internal static class NativeHosting
{
    /// <summary>
    /// With <c>"transport": "native"</c> or <c>"auto"</c> (the default): the transport and, per listener, its index there
    /// (-1: Kestrel serves it: TLS and HTTP/2 listeners, or every listener when the native transport cannot run here,
    /// with the reason to log: a warning when native was asked for, information under auto).
    /// </summary>
    public static (NativeTransport? Native, int[] Listeners, string? Fallback) Plan(GatewayConfig config, GatewayRuntime runtime)
    {
        var listeners = new int[config.Listeners.Count];
        Array.Fill(listeners, -1);
        var kind = NativeTransport.Override switch
        {
            "native" => TransportKind.Native,
            "kestrel" => TransportKind.Kestrel,
            _ => config.Transport,
        };
        if (kind == TransportKind.Kestrel) return (null, listeners, null);
        var native = NativeTransport.TryCreate(runtime, config.NativeLoops > 0 ? config.NativeLoops : NativeTransport.DefaultLoopsOverride, config.NativeIo, out var whyNot);
        if (native is null) return (null, listeners, kind == TransportKind.Auto ? AutoPrefix + whyNot : whyNot);
        for (int i = 0; i < listeners.Length; i++)
        {
            var l = config.Listeners[i];
            if (l.Tls is null && !l.Http2 && ConfigValidator.TryParseEndPoint(l.Address, out var ep)) listeners[i] = native.AddListener(ep);
        }
        return (native, listeners, null);
    }

    private const string AutoPrefix = "auto:";

    public static void UseLogger(NativeTransport? native, string? fallback, ILogger logger)
    {
        if (native is not null) native.Logger = logger;
        if (fallback is null) return;
        if (fallback.StartsWith(AutoPrefix, StringComparison.Ordinal))
            logger.LogInformation("transport auto: the native transport is not available here ({Reason}): the listeners run on Kestrel", fallback[AutoPrefix.Length..]);
        else logger.LogWarning("transport native is not available ({Reason}): the listeners run on Kestrel", fallback);
    }
}

/// <summary>The web host's server when the native transport serves every listener and there is no admin listener.</summary>
internal sealed class NoServer : Microsoft.AspNetCore.Hosting.Server.IServer
{
    public Microsoft.AspNetCore.Http.Features.IFeatureCollection Features { get; } = new Microsoft.AspNetCore.Http.Features.FeatureCollection();
    public Task StartAsync<TContext>(Microsoft.AspNetCore.Hosting.Server.IHttpApplication<TContext> application, CancellationToken cancellationToken) where TContext : notnull => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public void Dispose() { }
}
