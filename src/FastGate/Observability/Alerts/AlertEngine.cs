using System.Globalization;
using FastGate.Observability.Anomaly;
using Microsoft.Extensions.Logging;

namespace FastGate.Observability.Alerts;

public enum AlertState : byte { Inactive, Firing }

/// <summary>One alert instance (a rule's firing period) as listed by /admin/alerts and sent to notifiers.</summary>
public sealed record AlertInstance
{
    public required string Rule { get; init; }
    public required string Type { get; init; }
    public required string Severity { get; init; }
    public string? Route { get; init; }
    public string? Cluster { get; init; }
    public required double Value { get; init; }
    public required double Threshold { get; init; }
    public required TimeSpan Window { get; init; }
    public required DateTimeOffset StartedAt { get; init; }
    public DateTimeOffset? ResolvedAt { get; init; }
    public required string Summary { get; init; }
    public IReadOnlyList<string> SampleRequestIds { get; init; } = [];
    public IReadOnlyList<string> SampleTraceIds { get; init; } = [];
    public IReadOnlyList<string> Identities { get; init; } = [];
    public bool IsFiring => ResolvedAt is null;
}

/// <summary>
/// Evaluates the alert rules every few seconds on a timer (never on the request path) over sliding windows: it
/// snapshots the lock-free cumulative <see cref="TrafficCounters"/> at each evaluation, and a window's value is the
/// difference between now and the snapshot one window ago. Transitions (inactive → firing → resolved) are handed
/// to the notifiers, which deliver from their own queues with retries; cooldown and de-duplication are per rule and
/// notifier.
/// </summary>
public sealed class AlertEngine : IDisposable
{
    private const int RecentLimit = 100;
    private readonly GatewayObservability _hub;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly Dictionary<TrafficCounters, List<(DateTimeOffset At, TrafficSnapshot Value)>> _history = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, RuleState> _states = new(StringComparer.Ordinal);
    private readonly GatewayMetrics _metrics;
    private readonly Dictionary<string, Notifier> _notifiers = new(StringComparer.Ordinal);
    private readonly LinkedList<AlertInstance> _recent = new();
    private AlertsConfig _config;
    private ITimer? _timer;
    private volatile string? _reloadError;
    private DateTimeOffset _reloadFailedAt;

    internal AlertEngine(AlertsConfig config, GatewayObservability hub, TimeProvider time, ILogger logger)
    {
        _hub = hub;
        _metrics = hub.Metrics;
        _time = time;
        _logger = logger;
        _config = config;
        ApplyNotifiers(config);
        hub.Anomaly.TrackingRequired = NeedsClientTracking(config);
    }

    private static bool NeedsClientTracking(AlertsConfig config) =>
        config.Rules.Any(r => r.Type == AlertRuleTypes.AuthFailures && r.By == "clientIp");

    public AlertsConfig Config => Volatile.Read(ref _config);

    /// <summary>Delay before retry n (1-based) of a failed webhook delivery: 1s, 2s, 4s, ... capped at 60s.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(1);

    public void Start()
    {
        var every = Config.EvaluationInterval;
        _timer = _time.CreateTimer(_ => { try { Evaluate(); } catch (Exception e) { _logger.LogError(e, "alert evaluation failed"); } },
            null, every, every);
    }

    public void Apply(AlertsConfig config)
    {
        lock (_gate)
        {
            var previous = _config;
            Volatile.Write(ref _config, config);
            ApplyNotifiers(config);
            _hub.Anomaly.TrackingRequired = NeedsClientTracking(config);
            var ids = config.Rules.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
            foreach (var id in _states.Keys.Where(k => !ids.Contains(k)).ToList()) _states.Remove(id);
            if (previous.EvaluationInterval != config.EvaluationInterval) _timer?.Change(config.EvaluationInterval, config.EvaluationInterval);
        }
    }

    private void ApplyNotifiers(AlertsConfig config)
    {
        foreach (var n in config.Notifiers)
        {
            if (_notifiers.TryGetValue(n.Id, out var existing))
            {
                if (existing.Config == n) continue;
                existing.Dispose();
            }
            _notifiers[n.Id] = new Notifier(n, this, _time, _logger, _metrics);
        }
        foreach (var id in _notifiers.Keys.Where(k => config.Notifiers.All(n => n.Id != k)).ToList())
        {
            _notifiers[id].Dispose();
            _notifiers.Remove(id);
        }
    }

    internal void ReportConfigReload(bool succeeded, string? error)
    {
        _reloadError = succeeded ? null : error ?? "config reload failed";
        if (!succeeded) _reloadFailedAt = _time.GetUtcNow();
    }

    /// <summary>Evaluates every rule once (the timer calls this; tests call it after moving the fake clock).</summary>
    public void Evaluate()
    {
        var now = _time.GetUtcNow();
        var config = Config;
        List<(AlertInstance Alert, RuleState State, AlertRuleConfig Rule, bool Firing)> transitions = [];
        lock (_gate)
        {
            TimeSpan longest = TimeSpan.Zero;
            foreach (var rule in config.Rules) if (rule.Window > longest) longest = rule.Window;
            var recentAnomalies = _hub.Anomaly.Recent(now - longest);
            foreach (var rule in config.Rules)
            {
                if (!_states.TryGetValue(rule.Id, out var state)) _states[rule.Id] = state = new RuleState();
                var (firing, value, summary, counters, identities) = Check(rule, now, recentAnomalies);
                if (firing && state.Active is null)
                {
                    var (ids, traces) = counters?.RecentFailures() ?? ([], []);
                    state.Active = new AlertInstance
                    {
                        Rule = rule.Id, Type = rule.Type, Severity = rule.Severity, Route = rule.Route, Cluster = rule.Cluster,
                        Value = value, Threshold = rule.Threshold, Window = rule.Window, StartedAt = now, Summary = summary,
                        SampleRequestIds = ids, SampleTraceIds = traces, Identities = identities,
                    };
                    _metrics.AlertsFired.WithLabels(rule.Id, rule.Severity).Inc();
                    transitions.Add((state.Active, state, rule, true));
                }
                else if (firing && state.Active is not null)
                {
                    state.Active = state.Active with { Value = value, Summary = summary };
                }
                else if (!firing && state.Active is not null)
                {
                    var resolved = state.Active with { ResolvedAt = now, Value = value };
                    state.Active = null;
                    transitions.Add((resolved, state, rule, false));
                }
            }
            foreach (var t in transitions)
            {
                if (!t.Firing) continue;
                _recent.AddFirst(t.Alert);
                if (_recent.Count > RecentLimit) _recent.RemoveLast();
            }
            foreach (var t in transitions)
            {
                if (t.Firing) continue;
                var node = _recent.First;
                while (node is not null && !(node.Value.Rule == t.Alert.Rule && node.Value.StartedAt == t.Alert.StartedAt)) node = node.Next;
                if (node is not null) node.Value = t.Alert;
            }
            _metrics.AlertsActive.Set(_states.Values.Count(s => s.Active is not null));
            PruneHistory(now, longest);
        }
        lock (_gate) // Apply may replace notifiers; enqueueing never blocks
        foreach (var (alert, state, rule, firing) in transitions)
        {
            if (firing) _logger.LogWarning("alert firing: {Rule} ({Severity}): {Summary}", alert.Rule, alert.Severity, alert.Summary);
            else _logger.LogInformation("alert resolved: {Rule}: {Summary}", alert.Rule, alert.Summary);
            foreach (var id in rule.Notify)
            {
                if (!_notifiers.TryGetValue(id, out var notifier)) continue;
                var cooldown = rule.Cooldown ?? notifier.Config.Cooldown;
                if (firing)
                {
                    if (state.LastFiringSent.TryGetValue(id, out var last) && now - last < cooldown)
                    {
                        state.SentFiring.Remove(id);
                        notifier.CountSuppressed();
                        continue;
                    }
                    state.LastFiringSent[id] = now;
                    state.SentFiring.Add(id);
                    notifier.Enqueue(alert);
                }
                else if (state.SentFiring.Remove(id) && notifier.Config.SendResolved)
                {
                    notifier.Enqueue(alert);
                }
            }
        }
    }

    private (bool Firing, double Value, string Summary, TrafficCounters? Counters, IReadOnlyList<string> Identities) Check(
        AlertRuleConfig rule, DateTimeOffset now, IReadOnlyList<AnomalyEvent> anomalies)
    {
        string scope = rule.Route is not null ? $"route {rule.Route}" : rule.Cluster is not null ? $"cluster {rule.Cluster}" : "all routes";
        string window = Format(rule.Window);
        switch (rule.Type)
        {
            case AlertRuleTypes.ConfigReloadFailed:
            {
                var error = _reloadError;
                return (error is not null, error is null ? 0 : 1, error is null ? "config reloads succeed" : $"config reload failed: {error}", null, []);
            }
            case AlertRuleTypes.AuthFailures when rule.By == "clientIp":
            {
                long need = (long)Math.Max(1, rule.Threshold);
                var offenders = _hub.Anomaly.AuthFailuresSince(now - rule.Window, need);
                long top = offenders.Count == 0 ? 0 : offenders[0].AuthFailures;
                var identities = offenders.Take(20).Select(o => o.Identity).ToList();
                string detail = offenders.Count == 0 ? "" : ": " + string.Join(", ", offenders.Take(5).Select(o => $"{o.Identity} ({o.AuthFailures})"));
                return (offenders.Count > 0, top, $"{offenders.Count} client(s) with at least {need} auth failures (401/403) over {window}{detail}", null, identities);
            }
            case AlertRuleTypes.ClusterConfigMismatch:
            {
                var node = _hub.ClusterNode;
                var since = node?.ConfigMismatchSince;
                bool firing = since is { } s && now - s >= rule.Window;
                var members = node?.Members ?? [];
                int versions = members.Select(m => m.Version).Distinct(StringComparer.Ordinal).Count();
                string detail = string.Join(", ", members.Select(m => $"{m.Id}={m.Version}"));
                return (firing, versions, since is null
                    ? $"all {members.Count} cluster member(s) run the same config version"
                    : $"cluster members run {versions} config versions since {since.Value:O} (grace {window}): {detail}", null, []);
            }
            case AlertRuleTypes.ClusterStoreDown:
            {
                var down = _hub.ClusterNode?.Store.DownSince;
                bool firing = down is { } d && now - d >= rule.Window;
                return (firing, down is null ? 0 : 1, down is null ? "the cluster store (redis) is available"
                    : $"the cluster store (redis) is unavailable since {down.Value:O}; cluster features follow onStoreFailure", null, []);
            }
            case AlertRuleTypes.Anomaly:
            {
                var inWindow = anomalies.Where(a => a.At > now - rule.Window).ToList();
                double need = Math.Max(1, rule.Threshold);
                var identities = inWindow.Select(a => a.Identity).Distinct().Take(20).ToList();
                string detail = inWindow.Count == 0 ? "" : $": {string.Join(", ", inWindow.Take(5).Select(a => $"{a.Identity} {a.Feature}={a.Value:0.#} (baseline {a.Baseline:0.##})"))}";
                return (inWindow.Count >= need, inWindow.Count, $"{inWindow.Count} anomalous client interval(s) in {window}{detail}", null, identities);
            }
        }
        var counters = rule.Type == AlertRuleTypes.UpstreamDown || (rule.Cluster is not null && rule.Route is null)
            ? _hub.ClusterCounters(rule.Cluster!)
            : rule.Route is not null ? _hub.RouteCounters(rule.Route) : _hub.Global;
        var w = Window(counters, now, rule.Window);
        switch (rule.Type)
        {
            case AlertRuleTypes.ErrorRate:
            {
                double share = w.Requests == 0 ? 0 : (double)w.ServerErrors / w.Requests;
                bool firing = w.Requests >= Math.Max(1, rule.MinRequests) && share > rule.Threshold;
                return (firing, share, $"5xx share {share.ToString("0.###", CultureInfo.InvariantCulture)} ({w.ServerErrors}/{w.Requests}) on {scope} over {window}, threshold {rule.Threshold.ToString(CultureInfo.InvariantCulture)}", counters, []);
            }
            case AlertRuleTypes.Latency:
            {
                double p = w.Percentile(rule.Percentile);
                bool firing = w.Requests >= Math.Max(1, rule.MinRequests) && p > rule.Threshold;
                return (firing, p, $"p{rule.Percentile * 100:0} latency {p * 1000:0.#} ms on {scope} over {window}, threshold {rule.Threshold * 1000:0.#} ms", counters, []);
            }
            case AlertRuleTypes.AuthFailures:
                return (w.AuthFailures >= Math.Max(1, rule.Threshold), w.AuthFailures, $"{w.AuthFailures} auth failures (401/403) on {scope} over {window}, threshold {rule.Threshold}", counters, []);
            case AlertRuleTypes.WafBlocked:
                return (w.WafBlocked >= Math.Max(1, rule.Threshold), w.WafBlocked, $"{w.WafBlocked} requests blocked by the WAF (403, waf_blocked) on {scope} over {window}, threshold {rule.Threshold}", counters, []);
            case AlertRuleTypes.RateLimited:
                return (w.RateLimited >= Math.Max(1, rule.Threshold), w.RateLimited, $"{w.RateLimited} rate-limited requests (429) on {scope} over {window}, threshold {rule.Threshold}", counters, []);
            case AlertRuleTypes.UpstreamDown:
            {
                bool firing = w.UpstreamFailed >= Math.Max(1, rule.MinRequests) && w.UpstreamOk == 0;
                // also fed by destination health: every destination failing its checks or ejected, traffic or not
                if (!firing && _hub.ClusterHealth?.Invoke(rule.Cluster!) is { Usable: 0, Total: > 0 } health)
                    return (true, health.Total, $"no destination of cluster {rule.Cluster} is healthy ({health.Total} unhealthy or ejected; serving in panic mode)", counters, []);
                return (firing, w.UpstreamFailed, firing
                    ? $"every upstream exchange of cluster {rule.Cluster} failed over {window} ({w.UpstreamFailed} failures, 0 successes)"
                    : $"cluster {rule.Cluster}: {w.UpstreamOk} successful, {w.UpstreamFailed} failed upstream exchanges over {window}", counters, []);
            }
            default:
                return (false, 0, "", null, []);
        }
    }

    /// <summary>The counts of the last <paramref name="window"/>: now minus the newest snapshot at least a window old.</summary>
    private TrafficSnapshot Window(TrafficCounters counters, DateTimeOffset now, TimeSpan window)
    {
        if (!_history.TryGetValue(counters, out var list)) _history[counters] = list = [];
        var current = counters.Snapshot();
        var baseline = TrafficSnapshot.Zero;
        for (int i = list.Count - 1; i >= 0; i--)
        {
            if (list[i].At <= now - window) { baseline = list[i].Value; break; }
        }
        if (list.Count > 0 && list[^1].At >= now) list[^1] = (now, current); // same instant: keep the later reading
        else list.Add((now, current));
        return current.Minus(baseline);
    }

    private void PruneHistory(DateTimeOffset now, TimeSpan longest)
    {
        foreach (var list in _history.Values)
        {
            // keep the newest snapshot older than the longest window (it is the baseline), drop the ones before it
            int keepFrom = 0;
            for (int i = 0; i < list.Count; i++) if (list[i].At <= now - longest) keepFrom = i;
            if (keepFrom > 0) list.RemoveRange(0, keepFrom);
        }
    }

    public IReadOnlyList<AlertInstance> Active()
    {
        lock (_gate) return _states.Values.Where(s => s.Active is not null).Select(s => s.Active!).ToList();
    }

    public IReadOnlyList<AlertInstance> Recent()
    {
        lock (_gate) return _recent.ToList();
    }

    internal IReadOnlyCollection<Notifier> Notifiers => _notifiers.Values;

    internal static string Format(TimeSpan t) =>
        t.TotalHours >= 1 && t.TotalHours == Math.Floor(t.TotalHours) ? $"{t.TotalHours}h"
        : t.TotalMinutes >= 1 && t.TotalMinutes == Math.Floor(t.TotalMinutes) ? $"{t.TotalMinutes}m"
        : t.TotalSeconds >= 1 ? $"{t.TotalSeconds.ToString(CultureInfo.InvariantCulture)}s"
        : $"{t.TotalMilliseconds.ToString(CultureInfo.InvariantCulture)}ms";

    /// <summary>Waits (bounded) for the notifiers to deliver what is queued; used at shutdown and by tests.</summary>
    public async Task DrainAsync(TimeSpan? timeout = null)
    {
        foreach (var n in _notifiers.Values) await n.StopAsync(timeout ?? TimeSpan.FromSeconds(2)).ConfigureAwait(false);
    }

    public void Dispose() => _timer?.Dispose();

    private sealed class RuleState
    {
        public AlertInstance? Active;
        public readonly Dictionary<string, DateTimeOffset> LastFiringSent = new(StringComparer.Ordinal);
        public readonly HashSet<string> SentFiring = new(StringComparer.Ordinal);
    }
}
