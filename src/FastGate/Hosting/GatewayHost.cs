using System.Net;
using FastGate.Configuration;
using FastGate.Proxy;
using FastGate.Security;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FastGate.Hosting;

/// <summary>
/// Wires FastGate into Kestrel: every public listener runs <see cref="GatewayRuntime.OnConnectionAsync"/> as
/// connection middleware (no ASP.NET request pipeline); the admin listener serves health and metrics.
/// </summary>
public sealed class GatewayHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly List<(string Name, ListenOptions Options)> _listeners = [];
    // the native transport (null: every listener on Kestrel); per listener, its index there or -1 (see Transport/)
    private readonly Transport.NativeTransport? _native;
    private readonly int[] _nativeListener;
    private readonly string? _nativeFallback;
    private ListenOptions? _adminListen;
    private readonly List<ListenerTls> _tls = [];

    private GatewayHost(GatewaySnapshot snapshot, UpstreamPoolStore pools, RateLimiting.RateLimiterStore? limiters, string? sourcePath, LogLevel logLevel, TimeProvider? time,
        Security.JwtKeyStore? jwtKeys, ILoggerProvider? logs)
    {
        Runtime = new GatewayRuntime(snapshot, pools, time, limiters, jwtKeys);
        SourcePath = sourcePath;
        // No appsettings.json reload watch: FastGate reads no appsettings, and the watch on the working directory
        // (where the access log is written by default) raised an event and allocated for every write the log made.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = ["--hostBuilder:reloadConfigOnChange=false"] });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ "; o.UseUtcTimestamp = true; });
        if (logs is not null) builder.Logging.AddProvider(logs); // tests read what the gateway logs
        builder.Logging.SetMinimumLevel(logLevel);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Services.Configure<HostOptions>(o => { o.ShutdownTimeout = snapshot.DrainTimeout; o.ServicesStopConcurrently = true; });
        // Under systemd: READY=1 once the listeners are bound, STOPPING=1 when the drain starts (Type=notify units);
        // as a Windows service: the service control manager's start/stop. Each is a no-op anywhere else.
        builder.Host.UseSystemd();
        builder.Host.UseWindowsService();
        (_native, _nativeListener, _nativeFallback) = Transport.NativeHosting.Plan(snapshot.Config, Runtime);
        if (_native is not null) builder.Services.AddSingleton<IHostedService>(_native); // binds at start, drains beside Kestrel
        // every listener native and no admin: Kestrel would bind its default address, so no HTTP server runs at all
        if (_native is not null && snapshot.Config.Admin is null && Array.TrueForAll(_nativeListener, i => i >= 0))
            builder.Services.AddSingleton<Microsoft.AspNetCore.Hosting.Server.IServer, Transport.NoServer>();
        // Public-listener continuations run inline on the I/O thread (see UpstreamPoolStore): nothing on the request
        // path blocks, so the thread-pool hop per read is pure overhead.
        builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxConcurrentConnections = null;
            // HTTP/2 streams (listeners with "http2"): Kestrel's framing limits, bounded like the HTTP/1.1 path
            var limits = snapshot.Config.Limits;
            k.Limits.MaxRequestHeadersTotalSize = limits.MaxHeaderBytes;
            k.Limits.MaxRequestHeaderCount = limits.MaxHeaderCount;
            k.Limits.RequestHeadersTimeout = limits.HeaderTimeout;
            k.Limits.KeepAliveTimeout = limits.KeepAliveTimeout;
            k.Limits.MaxRequestBodySize = limits.MaxBodyBytes;
            k.Limits.Http2.MaxStreamsPerConnection = 100;
            k.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30); // a dead peer of a long stream is found
            k.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(20);
            int index = -1;
            foreach (var l in snapshot.Config.Listeners)
            {
                if (_nativeListener[++index] >= 0) continue; // served by the native transport
                ConfigValidator.TryParseEndPoint(l.Address, out var ep);
                // TLS: validated with the config; loaded here once, then reloaded by the listener when its files change
                string listenerName = string.IsNullOrEmpty(l.Name) ? l.Address : l.Name;
                var tls = l.Tls is null ? null : ListenerTls.Create(listenerName, l.Tls, snapshot.Config.BaseDirectory, Runtime.Metrics, l.Http2);
                if (tls is not null) _tls.Add(tls);
                bool http2 = l.Http2;
                k.Listen(ep, lo =>
                {
                    // "http2": Kestrel's HTTP/2 serves what Http2Dispatch passes on (TLS is FastGate's, so Kestrel sees h2c)
                    lo.Protocols = http2 ? HttpProtocols.Http2 : HttpProtocols.Http1;
                    if (tls is not null)
                        lo.Use(next => new TlsTermination(next, tls, snapshot.Config.Limits.HeaderTimeout, listenerName, Runtime.Metrics).OnConnectionAsync);
                    if (http2) lo.Use(next => new Http2Dispatch(next, Runtime).OnConnectionAsync);
                    else lo.Use(_ => Runtime.OnConnectionAsync);
                    _listeners.Add((l.Name, lo));
                });
            }
            if (snapshot.Config.Admin is { } admin)
            {
                ConfigValidator.TryParseEndPoint(admin.Address, out var ep);
                k.Listen(ep, lo =>
                {
                    lo.Protocols = HttpProtocols.Http1;
                    _adminListen = lo;
                });
            }
        });
        _app = builder.Build();
        if (sourcePath is not null) Reloader = new ConfigReloader(sourcePath, Runtime, _app.Logger);
        var admin = new AdminApi(Runtime, Reloader, snapshot.Config.Admin?.ResolveToken());
        var http2Gateway = new Http2Gateway(Runtime);
        _app.Run(ctx => ctx.Features.Get<Http2ConnectionInfo>() is { } h2 ? http2Gateway.HandleAsync(ctx, h2) : admin.HandleAsync(ctx));
        Runtime.Observability.UseLogger(_app.Logger);
        Transport.NativeHosting.UseLogger(_native, _nativeFallback, _app.Logger);
        Runtime.JwtKeys.Logger = _app.Logger;
        Runtime.Limiters.Redis?.UseLogger(_app.Logger); // outages: one warning each, and a metric (docs/observability.md)
        if (Runtime.Limiters.Redis is { } store && snapshot.Config.Redis is { } cluster) StartCluster(store, cluster);
        foreach (var issuer in snapshot.Jwt.Issuers) issuer.Keys.Logger ??= _app.Logger;
        _app.Lifetime.ApplicationStarted.Register(Runtime.Observability.Start);
        foreach (var tls in _tls)
        {
            tls.Logger = _app.Logger;
            _app.Lifetime.ApplicationStarted.Register(() => tls.StartWatching());
        }
        if (Reloader is not null) Reloader.Reloaded += r => Runtime.Observability.ReportConfigReload(r.Success, r.Errors.Count == 0 ? null : string.Join("; ", r.Errors));
        _app.Lifetime.ApplicationStopping.Register(Runtime.BeginDrain);
    }

    /// <summary>Cluster mode (docs/cluster.md): membership heartbeats and the shared block list.</summary>
    private void StartCluster(RateLimiting.RedisRateLimitBackend store, RedisConfig config)
    {
        store.UseMetrics(Runtime.Metrics);
        var node = new Cluster.ClusterNode(store, Runtime.Observability.Blocks, () => Runtime.Current.Version,
            () => Runtime.IsDraining ? "draining" : "ok", config.Heartbeat, config.MemberTimeout, Runtime.Metrics);
        node.UseLogger(_app.Logger);
        Runtime.Observability.ClusterNode = node;
        _app.Lifetime.ApplicationStarted.Register(node.Start);
        _app.Lifetime.ApplicationStopped.Register(node.Dispose);
    }

    public GatewayRuntime Runtime { get; }
    /// <summary>Live reloads of the source file; null when the gateway was started from text.</summary>
    public ConfigReloader? Reloader { get; }
    public string? SourcePath { get; }
    public ILogger Logger => _app.Logger;

    /// <summary>The bound address of each public listener (the real port when the config said :0).</summary>
    public IReadOnlyList<IPEndPoint> ListenerEndPoints
    {
        get
        {
            // in listener order: the native transport's (when it serves the listener), else Kestrel's
            var endPoints = new IPEndPoint[_nativeListener.Length];
            int kestrel = 0;
            for (int i = 0; i < endPoints.Length; i++)
                endPoints[i] = _nativeListener[i] >= 0 ? _native!.ListenerEndPoint(_nativeListener[i])! : _listeners[kestrel++].Options.IPEndPoint!;
            return endPoints;
        }
    }
    /// <summary>The native transport serving the plain listeners, or null (Kestrel serves them).</summary>
    internal Transport.NativeTransport? Native => _native;
    public IPEndPoint? AdminEndPoint => _adminListen?.IPEndPoint;
    /// <summary>The TLS termination of each listener that has tls (in listener order).</summary>
    public IReadOnlyList<ListenerTls> TlsListeners => _tls;

    public static GatewayHost Create(GatewaySnapshot snapshot, UpstreamPoolStore pools, string? sourcePath = null, LogLevel logLevel = LogLevel.Information,
        TimeProvider? time = null, RateLimiting.RateLimiterStore? limiters = null, Security.JwtKeyStore? jwtKeys = null, ILoggerProvider? logs = null)
        => new(snapshot, pools, limiters, sourcePath, logLevel, time, jwtKeys, logs);

    /// <summary>Validates and compiles a config, or returns the errors.</summary>
    /// <param name="logs">An extra log sink (tests capture what the gateway logs).</param>
    public static (GatewayHost? Host, IReadOnlyList<ConfigError> Errors) FromConfig(ConfigLoadResult loaded, string? sourcePath = null, LogLevel logLevel = LogLevel.Information,
        TimeProvider? time = null, ILoggerProvider? logs = null)
    {
        if (!loaded.IsValid) return (null, loaded.Errors);
        var config = loaded.Config!;
        var metrics = new Observability.GatewayMetrics(); // this gateway's registry (its admin /metrics)
        var pools = new UpstreamPoolStore(metrics);
        // The Redis connection is made once at start (it reconnects on its own); changing it needs a restart.
        var redis = config.Redis is { } r
            ? RateLimiting.RedisRateLimitBackend.Connect(r.Connection, new RateLimiting.RedisClusterOptions
            {
                KeyPrefix = r.KeyPrefix, LeaseTtl = r.LeaseTtl, InstanceId = r.Instance ?? new RateLimiting.RedisClusterOptions().InstanceId,
            })
            : null;
        var limiters = new RateLimiting.RateLimiterStore(time ?? TimeProvider.System, redis, metrics);
        var jwtKeys = new Security.JwtKeyStore(time, metrics: metrics);
        var snapshot = SnapshotCompiler.Compile(config, loaded.Text, pools, time, limiters, jwtKeys);
        return (Create(snapshot, pools, sourcePath, logLevel, time, limiters, jwtKeys, logs), []);
    }

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _app.StartAsync(cancellationToken);
        Reloader?.Start();
    }

    /// <summary>Stops accepting, lets requests in flight finish (up to the drain timeout), closes idle connections.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _app.StopAsync(cancellationToken);

    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        Reloader?.Dispose();
        await _app.DisposeAsync();
        // Kestrel's server ended its connections on dispose; the native transport's client connections end here, before
        // the runtime (and its access log) goes
        if (_native is not null) await _native.AbortClientsAsync(TimeSpan.FromSeconds(5));
        foreach (var tls in _tls) tls.Dispose();
        Runtime.Dispose();
        _native?.Dispose(); // after the pools closed their connections on the loops
    }
}
