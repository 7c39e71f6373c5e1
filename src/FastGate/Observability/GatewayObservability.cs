using System.Collections.Concurrent;
using System.Diagnostics;
using FastGate.Http;
using FastGate.Observability.Alerts;
using FastGate.Observability.Anomaly;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FastGate.Observability;

/// <summary>
/// What the request loop reports about one finished request (or one refused before routing). A ref struct of spans
/// into the connection's own buffers: building it allocates nothing, and it must not outlive the call.
/// </summary>
public ref struct RequestRecord
{
    /// <summary>The matched route's metrics (null: no route matched, or the request was refused before routing).</summary>
    public RouteMetrics? Route;
    public string? Cluster;
    /// <summary>The destination address the request went to (null: none was used).</summary>
    public string? Upstream;
    /// <summary>The authenticated consumer (null until the policy engine authenticates).</summary>
    public string? Consumer;
    /// <summary>A bearer token's identity, "&lt;issuer id&gt;:&lt;subject&gt;" (whether or not a consumer owns it), or null.</summary>
    public string? Subject;
    /// <summary>The allowlisted device of the connection's client certificate (mTLS), or null.</summary>
    public string? Device;
    public ReadOnlySpan<byte> ClientIp;
    public ReadOnlySpan<byte> Method;
    public ReadOnlySpan<byte> Host;
    public ReadOnlySpan<byte> Path;
    /// <summary>The query with its leading '?', or empty. Redacted in the log unless includeQuery.</summary>
    public ReadOnlySpan<byte> Query;
    public ReadOnlySpan<byte> RequestId;
    /// <summary>32 lower-case hex digits (see <see cref="TraceContext"/>), or empty.</summary>
    public ReadOnlySpan<byte> TraceId;
    public int Status;
    /// <summary>Why the gateway refused or failed the request; None when the upstream answered.</summary>
    public RejectReason Reason;
    /// <summary>A decision beyond <see cref="Reason"/> (e.g. "policy_respond"), or null: the reason's name, or "forwarded".</summary>
    public string? Decision;
    /// <summary>The id of the policy rule that decided the request (deny, respond), or null.</summary>
    public string? Rule;
    /// <summary>On WAF routes: the matched rule ids and the anomaly score ("942100,949110 score=5"), else null.</summary>
    public string? Waf;
    /// <summary>On AI routes: the model alias called and the provider that answered (config strings, never copied), else null.</summary>
    public string? AiModel;
    public string? AiProvider;
    /// <summary>The prompt guard's findings of an AI call by kind ("mask email:1,ssn:2"), never a value; null when none.</summary>
    public string? AiGuard;
    /// <summary>On AI routes: the prompt and completion tokens the provider reported (0 when none).</summary>
    public long PromptTokens;
    public long CompletionTokens;
    public long BytesIn;
    public long BytesOut;
    /// <summary><see cref="Stopwatch.GetTimestamp"/> values; 0 when the phase did not happen.</summary>
    public long StartTimestamp;
    public long UpstreamStartTimestamp;
    public long UpstreamEndTimestamp;
    public long EndTimestamp;
}

/// <summary>
/// The observability hub of one gateway: access log, alert engine, anomaly detector and block list. Lives as long
/// as the runtime (state survives reloads; <see cref="Apply"/> takes a new config). The request path calls
/// <see cref="OnRequest"/> once per request and <see cref="IsBlocked"/> once per request; both are lock-free and
/// allocation-free in steady state. Everything else runs on timers and background tasks.
/// </summary>
public sealed class GatewayObservability : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, TrafficCounters> _routes = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ClusterObservation> _clusters = new(StringComparer.Ordinal);
    private readonly ForwardingLogger _logger;
    private AccessLog? _accessLog;
    private AccessLogConfig _accessLogConfig;

    /// <param name="metrics">The metrics of the runtime the hub belongs to (unexported metrics of its own when omitted).</param>
    public GatewayObservability(ObservabilityConfig config, TimeProvider? time = null, ILogger? logger = null, Stream? accessLogStream = null,
        GatewayMetrics? metrics = null)
    {
        Time = time ?? TimeProvider.System;
        Metrics = metrics ?? new GatewayMetrics();
        _logger = new ForwardingLogger(logger ?? NullLogger.Instance);
        Global = new TrafficCounters("*");
        Blocks = new BlockList(Time, Metrics);
        Anomaly = new AnomalyDetector(config.Anomaly, Time, Blocks, _logger, Metrics);
        Alerts = new AlertEngine(config.Alerts, this, Time, _logger);
        _accessLogConfig = config.AccessLog;
        if (config.AccessLog.Enabled) _accessLog = new AccessLog(config.AccessLog, Time, accessLogStream, Metrics);
    }

    public TimeProvider Time { get; }
    public GatewayMetrics Metrics { get; }
    public TrafficCounters Global { get; }
    public AccessLog? AccessLog => Volatile.Read(ref _accessLog);
    public AlertEngine Alerts { get; }
    public AnomalyDetector Anomaly { get; }
    public BlockList Blocks { get; }
    /// <summary>Cluster mode: this gateway's membership (set by the host when a redis connection is configured).</summary>
    public FastGate.Cluster.ClusterNode? ClusterNode { get; set; }
    /// <summary>Usable and total destinations of a cluster by id (set by the runtime; the upstreamDown alert reads it).</summary>
    public Func<string, (int Usable, int Total)?>? ClusterHealth { get; set; }

    /// <summary>Sends alert, anomaly and notifier log entries to <paramref name="logger"/> from now on.</summary>
    public void UseLogger(ILogger logger) => _logger.Inner = logger;

    /// <summary>Starts the timers (alert evaluation, anomaly intervals). Tests drive them by hand instead.</summary>
    public void Start()
    {
        Alerts.Start();
        Anomaly.Start(); // also closes intervals for the per-client authFailures rule when scoring is off
    }

    /// <summary>One call per request, after its response (or rejection) was written.</summary>
    public void OnRequest(in RequestRecord r)
    {
        long end = r.EndTimestamp != 0 ? r.EndTimestamp : Stopwatch.GetTimestamp();
        double seconds = r.StartTimestamp == 0 ? 0 : Stopwatch.GetElapsedTime(r.StartTimestamp, end).TotalSeconds;
        bool upstreamAttempted = r.UpstreamStartTimestamp != 0 || GatewayMetrics.UpstreamErrorKind(r.Reason) is not null;
        bool upstreamFailed = GatewayMetrics.UpstreamErrorKind(r.Reason) is not null;
        Global.Record(r, upstreamAttempted, upstreamFailed, seconds);
        var route = r.Route;
        if (route is not null)
        {
            if (!ReferenceEquals(route.TrafficOwner, this)) BindRoute(route);
            route.Traffic!.Record(r, upstreamAttempted, upstreamFailed, seconds);
            route.RecordBytes(r.BytesIn, r.BytesOut);
            if (r.Cluster is not null)
            {
                if (!ReferenceEquals(route.ClusterId, r.Cluster)) BindCluster(route, r.Cluster);
                var cluster = route.Cluster!;
                cluster.Traffic.Record(r, upstreamAttempted, upstreamFailed, seconds);
                if (upstreamFailed) cluster.CountUpstreamError(r.Reason);
                else if (upstreamAttempted) cluster.CountUpstreamResponse();
            }
        }
        if (!r.ClientIp.IsEmpty) Anomaly.Observe(r.ClientIp, r.Status, r.Path);
        Volatile.Read(ref _accessLog)?.TryWrite(r);
    }

    /// <summary>Lock-free: whether the anomaly detector (or an operator) blocked this client IP (ASCII text).</summary>
    public bool IsBlocked(ReadOnlySpan<byte> clientIp) => Blocks.IsBlocked(clientIp);

    /// <summary>Reports the outcome of a config reload (the configReloadFailed rule watches it).</summary>
    public void ReportConfigReload(bool succeeded, string? error = null)
    {
        Alerts.ReportConfigReload(succeeded, error);
        Metrics.ConfigLastReloadSuccess.Set(succeeded ? 1 : 0);
        if (!succeeded) _logger.LogWarning("config reload failed: {Error}", error);
    }

    /// <summary>Applies a reloaded configuration; counters, baselines, active alerts and blocks are kept.</summary>
    public async Task ApplyAsync(ObservabilityConfig config)
    {
        Alerts.Apply(config.Alerts);
        Anomaly.Apply(config.Anomaly);
        if (config.AccessLog != _accessLogConfig)
        {
            _accessLogConfig = config.AccessLog;
            var next = config.AccessLog.Enabled ? new AccessLog(config.AccessLog, Time, metrics: Metrics) : null;
            var previous = Interlocked.Exchange(ref _accessLog, next);
            if (previous is not null) await previous.DisposeAsync().ConfigureAwait(false);
        }
    }

    public void Apply(ObservabilityConfig config) => ApplyAsync(config).GetAwaiter().GetResult();

    internal TrafficCounters RouteCounters(string route) => _routes.GetOrAdd(route, static id => new TrafficCounters(id));
    internal TrafficCounters ClusterCounters(string cluster) => Cluster(cluster).Traffic;
    private ClusterObservation Cluster(string cluster) =>
        _clusters.GetOrAdd(cluster, static (id, metrics) => new ClusterObservation(id, new TrafficCounters(id), metrics), Metrics);

    private void BindRoute(RouteMetrics route)
    {
        route.Traffic = RouteCounters(route.Route);
        route.ClusterId = null;
        route.Cluster = null;
        Volatile.Write(ref route.TrafficOwner, this);
    }

    private void BindCluster(RouteMetrics route, string cluster)
    {
        route.Cluster = Cluster(cluster);
        Volatile.Write(ref route.ClusterId, cluster);
    }

    public async ValueTask DisposeAsync()
    {
        Alerts.Dispose();
        Anomaly.Dispose();
        await Alerts.DrainAsync().ConfigureAwait(false);
        var log = Interlocked.Exchange(ref _accessLog, null);
        if (log is not null) await log.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>A logger whose target can be set after the components holding it were built.</summary>
internal sealed class ForwardingLogger(ILogger inner) : ILogger
{
    public volatile ILogger Inner = inner;
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => Inner.BeginScope(state);
    public bool IsEnabled(LogLevel logLevel) => Inner.IsEnabled(logLevel);
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        => Inner.Log(logLevel, eventId, state, exception, formatter);
}
