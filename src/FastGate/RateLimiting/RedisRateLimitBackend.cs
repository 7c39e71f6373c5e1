using System.Text;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace FastGate.RateLimiting;

/// <summary>
/// The shared store for cluster-scope limiters: one StackExchange.Redis connection, the GCRA script loaded once and
/// run with EVALSHA (reloaded on NOSCRIPT, e.g. after a Redis restart). The connection reconnects by itself; commands
/// issued while it is down fail at once (no backlog), so no request waits for a dead server.
/// </summary>
public sealed class RedisRateLimitBackend : IDisposable
{
    /// <summary>
    /// GCRA with batch grants. KEYS[1] = bucket (value: TAT in µs since the Unix epoch, TTL = time to full refill).
    /// ARGV: now µs, T µs, τ µs, tokens wanted, tokens needed. Grants min(wanted, available) when that is ≥ needed.
    /// Returns {granted, TAT−now after, tokens left, retry µs (0 when granted)}.
    /// </summary>
    internal const string GcraScript = """
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local avail = math.floor((tau - (tat - now)) / t)
local grant = want
if avail < grant then grant = avail end
if grant < need then
  return {0, tat - now, avail, tat + need * t - tau - now}
end
tat = tat + grant * t
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {grant, tat - now, avail - grant, 0}
""";

    private readonly ConnectionMultiplexer _mux;
    private ILogger? _logger;
    private byte[]? _sha;
    private int _healthy = 1;

    private RedisRateLimitBackend(ConnectionMultiplexer mux, RedisClusterOptions options, ILogger? logger)
    {
        _mux = mux;
        _logger = logger;
        Options = options;
        KeyPrefix = Encoding.UTF8.GetBytes(options.KeyPrefix);
    }

    public RedisClusterOptions Options { get; }
    internal byte[] KeyPrefix { get; }
    public bool IsConnected => _mux.IsConnected;
    public IConnectionMultiplexer Multiplexer => _mux;

    /// <summary>
    /// Connects (without failing when Redis is down: the connection keeps retrying in the background).
    /// <paramref name="configuration"/> is a StackExchange.Redis configuration string such as "127.0.0.1:6379".
    /// </summary>
    public static RedisRateLimitBackend Connect(string configuration, RedisClusterOptions? options = null, ILogger? logger = null,
        Observability.GatewayMetrics? metrics = null)
    {
        var cfg = ConfigurationOptions.Parse(configuration);
        cfg.AbortOnConnectFail = false;
        cfg.BacklogPolicy = BacklogPolicy.FailFast;
        cfg.ConnectTimeout = Math.Min(cfg.ConnectTimeout, 2000);
        cfg.ReconnectRetryPolicy = new LinearRetry(250);
        cfg.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        cfg.ClientName ??= "fastgate-ratelimit";
        var mux = ConnectionMultiplexer.Connect(cfg);
        var backend = new RedisRateLimitBackend(mux, options ?? new RedisClusterOptions(), logger);
        if (metrics is not null) backend.UseMetrics(metrics);
        mux.ConnectionFailed += (_, e) => backend.ReportFailure(e.Exception);
        mux.ConnectionRestored += (_, _) => backend.ReportRecovered();
        return backend;
    }

    /// <summary>
    /// Where outages are reported: one warning when the store becomes unavailable and one line when it is back, never
    /// one per request. Set by the host once its logger exists; an outage already under way is reported then.
    /// </summary>
    public void UseLogger(ILogger logger)
    {
        _logger = logger;
        if (_mux.IsConnected && Volatile.Read(ref _healthy) == 1) return;
        if (Interlocked.Exchange(ref _healthy, 0) == 1) OnTransition(false);
        logger.LogWarning("rate-limit store (redis) at {Endpoints} unavailable; cluster limiters follow onStoreFailure", Endpoints);
    }

    private Prometheus.Gauge? _upGauge;
    private Prometheus.Counter? _transitions;

    /// <summary>
    /// Exports the store's state: <c>fastgate_cluster_store_up</c> (1/0) and
    /// <c>fastgate_cluster_store_transitions_total{state="down|up"}</c> (one per change, like the log lines).
    /// </summary>
    public void UseMetrics(Observability.GatewayMetrics metrics)
    {
        _upGauge = metrics.ClusterStoreUp;
        _transitions = metrics.ClusterStoreTransitions;
        _upGauge.Set(Volatile.Read(ref _healthy));
    }

    /// <summary>Raised once per change of the store's state (true: available again). The cluster node reconciles on it.</summary>
    public event Action<bool>? StateChanged;

    /// <summary>Whether the store is believed available (it changes once per outage, with one log line each way).</summary>
    public bool IsHealthy => Volatile.Read(ref _healthy) == 1;

    /// <summary>When the current outage began (null while the store is available).</summary>
    public DateTimeOffset? DownSince { get; private set; }

    private void OnTransition(bool up)
    {
        DownSince = up ? null : DateTimeOffset.UtcNow;
        _upGauge?.Set(up ? 1 : 0);
        _transitions?.WithLabels(up ? "up" : "down").Inc();
        try { StateChanged?.Invoke(up); }
        catch (Exception e) { _logger?.LogError(e, "cluster store state handler failed"); }
    }

    private string Endpoints => string.Join(",", _mux.GetEndPoints().Select(e => e.ToString()));

    /// <summary>The store failed (or is known down): logs on the transition from available only.</summary>
    internal void ReportFailure(Exception? e)
    {
        if (Volatile.Read(ref _healthy) == 1 && Interlocked.Exchange(ref _healthy, 0) == 1)
        {
            _logger?.LogWarning("rate-limit store (redis) at {Endpoints} unavailable ({Error}); cluster limiters follow onStoreFailure until it is back",
                Endpoints, e?.Message ?? "disconnected");
            OnTransition(false);
        }
    }

    internal void ReportRecovered()
    {
        // back only when every connection is (interactive and subscription): when Redis dies, one of them notices
        // first, and a call that still succeeds on the other must not count as a recovery (one line each way)
        if (Volatile.Read(ref _healthy) == 0 && _mux.IsConnected && _mux.GetSubscriber().IsConnected()
            && Interlocked.Exchange(ref _healthy, 1) == 0)
        {
            _logger?.LogInformation("rate-limit store (redis) at {Endpoints} available again", Endpoints);
            OnTransition(true);
        }
    }

    /// <summary>Runs the GCRA script; throws on connection errors (the caller applies onStoreFailure).</summary>
    internal async Task<GcraReply> EvalGcraAsync(RedisKey key, long nowUs, long intervalUs, long toleranceUs, long want, long need)
    {
        IDatabase db = _mux.GetDatabase();
        RedisKey[] keys = [key];
        RedisValue[] args = [nowUs, intervalUs, toleranceUs, want, need];
        byte[] sha = _sha ?? await LoadScriptAsync().ConfigureAwait(false);
        RedisResult result;
        try
        {
            result = await db.ScriptEvaluateAsync(sha, keys, args).ConfigureAwait(false);
        }
        catch (RedisServerException e) when (e.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            sha = await LoadScriptAsync().ConfigureAwait(false);
            result = await db.ScriptEvaluateAsync(sha, keys, args).ConfigureAwait(false);
        }
        var r = (RedisResult[])result!;
        ReportRecovered();
        return new GcraReply((long)r[0], (long)r[1], (long)r[2], (long)r[3]);
    }

    private async Task<byte[]> LoadScriptAsync()
    {
        byte[] sha = await LoadAsync(GcraScript).ConfigureAwait(false);
        _sha = sha;
        return sha;
    }

    private async Task<byte[]> LoadAsync(string script)
    {
        IServer server = _mux.GetServers().FirstOrDefault(s => s.IsConnected && !s.IsReplica)
            ?? throw new RedisException("no connected redis primary");
        return await server.ScriptLoadAsync(script).ConfigureAwait(false);
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte[]> _shas = new(StringComparer.Ordinal);

    /// <summary>
    /// Runs <paramref name="script"/> with EVALSHA (loaded on first use and again on NOSCRIPT, e.g. after a restart or
    /// a failover to a replica that never saw it). Throws on connection errors; reports recovery on success.
    /// </summary>
    internal async Task<RedisResult> EvalAsync(string script, RedisKey[] keys, RedisValue[] args)
    {
        IDatabase db = _mux.GetDatabase();
        if (!_shas.TryGetValue(script, out byte[]? sha)) _shas[script] = sha = await LoadAsync(script).ConfigureAwait(false);
        RedisResult result;
        try
        {
            result = await db.ScriptEvaluateAsync(sha, keys, args).ConfigureAwait(false);
        }
        catch (RedisServerException e) when (e.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            _shas[script] = sha = await LoadAsync(script).ConfigureAwait(false);
            result = await db.ScriptEvaluateAsync(sha, keys, args).ConfigureAwait(false);
        }
        ReportRecovered();
        return result;
    }

    private Timer? _leaseTimer;

    /// <summary>
    /// Keeps this member's liveness key (<c>{prefix}alive:{instance}</c>, TTL <see cref="RedisClusterOptions.LeaseTtl"/>)
    /// alive: renewed every third of the TTL. Concurrency slots held in this member's name count while it exists.
    /// </summary>
    internal void StartLeaseRenewal()
    {
        if (_leaseTimer is not null) return;
        var every = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond * 50, Options.LeaseTtl.Ticks / 3));
        var timer = new Timer(_ => _ = RenewLeaseAsync(), null, TimeSpan.Zero, every);
        if (Interlocked.CompareExchange(ref _leaseTimer, timer, null) is not null) timer.Dispose();
    }

    private async Task RenewLeaseAsync()
    {
        if (!_mux.IsConnected) return;
        try
        {
            await _mux.GetDatabase().StringSetAsync(Options.KeyPrefix + "alive:" + Options.InstanceId, "1", Options.LeaseTtl).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            ReportFailure(e);
        }
    }

    public void Dispose()
    {
        _leaseTimer?.Dispose();
        _mux.Dispose();
    }
}

internal readonly record struct GcraReply(long Granted, long TatMinusNowUs, long Available, long RetryUs);

/// <summary>Settings of the cluster mode shared by all cluster limiters of one gateway.</summary>
public sealed class RedisClusterOptions
{
    /// <summary>Prefix of every Redis key ("fastgate:rl:" by default).</summary>
    public string KeyPrefix { get; init; } = "fastgate:rl:";

    /// <summary>
    /// This gateway's member id in the cluster (leases of concurrency limiters are held in its name). Unique per
    /// process by default: host name, process id and a random suffix.
    /// </summary>
    public string InstanceId { get; init; } = $"{Environment.MachineName}-{Environment.ProcessId}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3))}";

    /// <summary>
    /// Cluster concurrency limiters: a slot held by a member is void once the member has not renewed its liveness for
    /// this long (a dead gateway's slots come back after it). Renewed every third of it.
    /// </summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Local allowance: the share of the burst one gateway takes from Redis per store call (at least 1 token). Larger
    /// batches mean fewer store calls and more possible overshoot (at most instances × 2 × batch tokens). Default 1%.
    /// </summary>
    public double AllowanceFraction { get; init; } = 0.01;

    /// <summary>How long a local allowance stays usable before it is dropped (unused tokens are lost, never reused late).</summary>
    public TimeSpan AllowanceLifetime { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>After a store timeout, requests go straight to onStoreFailure for this long (real time).</summary>
    public TimeSpan FailureBackoff { get; init; } = TimeSpan.FromSeconds(1);
}
