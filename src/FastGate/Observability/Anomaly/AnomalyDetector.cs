using Microsoft.Extensions.Logging;

namespace FastGate.Observability.Anomaly;

/// <summary>
/// Online per-identity (client IP; consumer once authentication exists) models of four interval counts: requests,
/// server errors, auth failures (401/403) and distinct paths. Each count is scored against its own EWMA baseline
/// with a quasi-Poisson upper-tail test (docs/anomaly-detection.md): score = -log10 P(X &gt;= x) where
/// X ~ Poisson(mean / phi) evaluated at x / phi, phi = max(1, EWMA variance / EWMA mean) absorbing over-dispersion.
/// An interval whose score reaches the threshold (and whose count reaches minCount) is anomalous: metric, log,
/// the anomaly alert, and optionally a temporary block.
/// </summary>
/// <remarks>
/// The request path only touches <see cref="IdentityTable"/> (lock-free counters). <see cref="CloseInterval"/> runs on
/// a timer (or by hand in tests): it reads and resets every slot, scores, updates the models and evicts idle or
/// low-activity identities so at most maxTracked are modelled.
/// </remarks>
public sealed class AnomalyDetector : IDisposable
{
    public static readonly string[] Features = ["request_rate", "error_count", "auth_failures", "distinct_paths"];
    private const int RecentLimit = 200;

    private readonly TimeProvider _time;
    private readonly BlockList _blocks;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly Dictionary<long, IdentityModel> _models = new();
    private readonly LinkedList<AnomalyEvent> _recent = new();
    private readonly Prometheus.Counter.Child[] _featureCounters;
    private readonly Prometheus.Gauge _tracked;
    private AnomalyConfig _config;
    private IdentityTable _table;
    private ITimer? _timer;
    private long _intervals;
    private volatile bool _tracking;

    /// <summary>
    /// Keeps per-identity interval counts even when scoring is disabled (an authFailures rule by clientIp needs them).
    /// </summary>
    public bool TrackingRequired { get => _tracking; set => _tracking = value; }
    private long _anomalies;

    /// <param name="metrics">Where detections and tracked identities are counted (unexported metrics of its own when omitted).</param>
    public AnomalyDetector(AnomalyConfig config, TimeProvider time, BlockList blocks, ILogger logger, GatewayMetrics? metrics = null)
    {
        metrics ??= new GatewayMetrics();
        _tracked = metrics.AnomalyTrackedIdentities;
        _config = config;
        _time = time;
        _blocks = blocks;
        _logger = logger;
        _table = new IdentityTable(config.MaxTracked);
        _featureCounters = Features.Select(f => metrics.AnomaliesDetected.WithLabels(f)).ToArray();
    }

    public AnomalyConfig Config => Volatile.Read(ref _config);
    public bool Enabled => Config.Enabled;
    public long Intervals => Interlocked.Read(ref _intervals);
    public long AnomalyCount => Interlocked.Read(ref _anomalies);
    public int Tracked { get { lock (_gate) return _models.Count; } }
    public long Untracked => Volatile.Read(ref _table).Untracked;

    /// <summary>Raised (on the interval task) for every anomalous identity-interval.</summary>
    public event Action<AnomalyEvent>? Detected;

    /// <summary>Request path: counts one request of <paramref name="identity"/>. Lock-free, allocation-free.</summary>
    public void Observe(ReadOnlySpan<byte> identity, int status, ReadOnlySpan<byte> path)
    {
        if (!Volatile.Read(ref _config).Enabled && !_tracking) return;
        Volatile.Read(ref _table).Record(identity, status, path);
    }

    public void Start()
    {
        var interval = Config.Interval;
        _timer = _time.CreateTimer(_ => { try { CloseInterval(); } catch (Exception e) { _logger.LogError(e, "anomaly interval failed"); } },
            null, interval, interval);
    }

    public void Apply(AnomalyConfig config)
    {
        var previous = Interlocked.Exchange(ref _config, config);
        if (previous.MaxTracked != config.MaxTracked)
        {
            lock (_gate)
            {
                Volatile.Write(ref _table, new IdentityTable(config.MaxTracked));
                _models.Clear();
            }
        }
        if (previous.Interval != config.Interval) _timer?.Change(config.Interval, config.Interval);
    }

    /// <summary>Closes the current interval: scores every tracked identity, updates baselines, evicts. Returns the anomalies.</summary>
    public IReadOnlyList<AnomalyEvent> CloseInterval()
    {
        var config = Config;
        var found = new List<AnomalyEvent>();
        _blocks.Expire();
        if (!config.Enabled && !_tracking) return found;
        var now = _time.GetUtcNow();
        double alpha = 2.0 / (config.SmoothingIntervals + 1);
        lock (_gate)
        {
            var table = _table;
            Interlocked.Increment(ref _intervals);
            foreach (var slot in table.Slots)
            {
                long key = Volatile.Read(ref slot.Key);
                if (key == 0 || Volatile.Read(ref slot.Ready) == 0) continue;
                var counts = slot.TakeCounts();
                if (!_models.TryGetValue(key, out var model))
                {
                    model = new IdentityModel(slot.IdentityString);
                    _models[key] = model;
                }
                Span<double> x = [counts.Requests, counts.Errors, counts.AuthFailures, counts.DistinctPaths];
                double best = 0;
                int bestFeature = -1;
                for (int f = 0; f < x.Length; f++)
                {
                    double score = model.Score(f, x[f], config);
                    if (score > best) { best = score; bestFeature = f; }
                }
                bool anomalous = config.Enabled && best >= config.ScoreThreshold && model.Seen >= config.WarmupIntervals;
                model.RecordAuthFailures(now, counts.AuthFailures);
                for (int f = 0; f < x.Length; f++) model.Update(f, x[f], alpha, anomalous && model.Score(f, x[f], config) >= config.ScoreThreshold);
                model.Seen++;
                model.IdleIntervals = counts.Requests == 0 ? model.IdleIntervals + 1 : 0;
                if (anomalous)
                {
                    var e = new AnomalyEvent(model.Identity, Features[bestFeature], x[bestFeature], model.Mean[bestFeature], best, now,
                        config.AutoBlock ? now + config.BlockTtl : null);
                    found.Add(e);
                    model.Anomalies++;
                }
                if (model.IdleIntervals > Math.Max(config.SmoothingIntervals, config.WarmupIntervals))
                {
                    table.Evict(slot);
                    _models.Remove(key);
                }
            }
            EvictLowActivity(table, config);
            foreach (var e in found)
            {
                _recent.AddFirst(e);
                if (_recent.Count > RecentLimit) _recent.RemoveLast();
            }
            _tracked.Set(_models.Count);
        }
        foreach (var e in found)
        {
            Interlocked.Increment(ref _anomalies);
            _featureCounters[Array.IndexOf(Features, e.Feature)].Inc();
            _logger.LogWarning("anomaly: {Identity} {Feature}={Value:0.#} (baseline {Baseline:0.##}, score {Score:0.#}){Blocked}",
                e.Identity, e.Feature, e.Value, e.Baseline, e.Score, e.BlockedUntil is null ? "" : " - blocked");
            if (config.AutoBlock) _blocks.Block(e.Identity, config.BlockTtl, $"anomaly: {e.Feature} {e.Value:0.#} vs baseline {e.Baseline:0.##}");
            Detected?.Invoke(e);
        }
        return found;
    }

    /// <summary>Keeps the table below 90% of maxTracked by dropping the identities with the lowest baseline rate.</summary>
    private void EvictLowActivity(IdentityTable table, AnomalyConfig config)
    {
        int limit = (int)(config.MaxTracked * 0.9);
        if (_models.Count <= limit) return;
        int target = (int)(config.MaxTracked * 0.75);
        var ranked = new List<(double Rate, IdentityTable.Slot Slot, long Key)>();
        foreach (var slot in table.Slots)
        {
            long key = Volatile.Read(ref slot.Key);
            if (key != 0 && _models.TryGetValue(key, out var m)) ranked.Add((m.Mean[0], slot, key));
        }
        ranked.Sort((a, b) => a.Rate.CompareTo(b.Rate));
        for (int i = 0; i < ranked.Count && _models.Count > target; i++)
        {
            if (_models.TryGetValue(ranked[i].Key, out var m) && m.Anomalies > 0 && m.IdleIntervals == 0) continue; // keep active offenders
            table.Evict(ranked[i].Slot);
            _models.Remove(ranked[i].Key);
        }
    }

    /// <summary>Identities whose auth failures (401/403) summed over closed intervals since <paramref name="since"/> reach
    /// <paramref name="atLeast"/>, most first.</summary>
    public IReadOnlyList<(string Identity, long AuthFailures)> AuthFailuresSince(DateTimeOffset since, long atLeast)
    {
        var result = new List<(string, long)>();
        lock (_gate)
            foreach (var m in _models.Values)
            {
                long sum = m.AuthFailuresSince(since);
                if (sum >= atLeast && sum > 0) result.Add((m.Identity, sum));
            }
        result.Sort((a, b) => b.Item2.CompareTo(a.Item2));
        return result;
    }

    /// <summary>Recent anomalies, newest first.</summary>
    public IReadOnlyList<AnomalyEvent> Recent(DateTimeOffset? since = null)
    {
        lock (_gate)
        {
            // no LINQ: the alert engine asks every evaluation, and an idle gateway has nothing to list
            List<AnomalyEvent>? list = null;
            foreach (var e in _recent)
                if (since is null || e.At >= since) (list ??= []).Add(e);
            return list is null ? [] : list;
        }
    }

    public void Dispose() => _timer?.Dispose();

    private sealed class IdentityModel(string identity)
    {
        public readonly string Identity = identity;
        public readonly double[] Mean = new double[4];
        public readonly double[] Variance = new double[4];
        public int Seen;
        public int IdleIntervals;
        public int Anomalies;
        private readonly Queue<(DateTimeOffset At, long Count)> _auth = new();

        public void RecordAuthFailures(DateTimeOffset at, long count)
        {
            if (count > 0) _auth.Enqueue((at, count));
            while (_auth.Count > 0 && (_auth.Count > 512 || _auth.Peek().At < at - TimeSpan.FromHours(1))) _auth.Dequeue();
        }

        public long AuthFailuresSince(DateTimeOffset since)
        {
            long sum = 0;
            foreach (var (at, count) in _auth) if (at > since) sum += count;
            return sum;
        }

        /// <summary>-log10 of the quasi-Poisson upper tail of <paramref name="x"/> under this feature's baseline.</summary>
        public double Score(int f, double x, AnomalyConfig config)
        {
            if (Seen == 0 || x < config.MinCount) return 0;
            double mean = Math.Max(Mean[f], 1.0);
            if (x <= mean) return 0;
            double phi = Math.Clamp(Variance[f] / mean, 1.0, 50.0);
            return -PoissonTail.Log10UpperTail(x / phi, mean / phi);
        }

        /// <summary>EWMA mean and variance; an anomalous value is winsorized so an attack does not become the baseline at once.</summary>
        public void Update(int f, double x, double alpha, bool anomalous)
        {
            if (Seen == 0)
            {
                Mean[f] = x;
                Variance[f] = Math.Max(x, 1.0);
                return;
            }
            if (anomalous) x = Math.Min(x, Mean[f] + 3 * Math.Sqrt(Math.Max(Variance[f], Math.Max(Mean[f], 1.0))));
            double d = x - Mean[f];
            Mean[f] += alpha * d;
            Variance[f] = (1 - alpha) * (Variance[f] + alpha * d * d);
        }
    }
}

/// <summary>One anomalous interval of one identity.</summary>
public sealed record AnomalyEvent(string Identity, string Feature, double Value, double Baseline, double Score, DateTimeOffset At, DateTimeOffset? BlockedUntil);

/// <summary>The upper tail of the Poisson distribution, in log space (no overflow for large counts).</summary>
public static class PoissonTail
{
    /// <summary>log10 P(X &gt;= k) for X ~ Poisson(lambda), with k rounded down to an integer (conservative).</summary>
    public static double Log10UpperTail(double x, double lambda)
    {
        double k = Math.Floor(x);
        if (k <= 0) return 0;
        if (k <= lambda) return 0; // not in the upper tail; treat as unremarkable
        double logPmf = k * Math.Log(lambda) - lambda - LogFactorial(k);
        // sum_{j>=k} pmf(j) = pmf(k) * (1 + l/(k+1) + l^2/((k+1)(k+2)) + ...), converges since k > lambda
        double term = 1, sum = 1;
        for (int j = 1; j < 10_000; j++)
        {
            term *= lambda / (k + j);
            sum += term;
            if (term < 1e-12 * sum) break;
        }
        double log10 = (logPmf + Math.Log(sum)) / Math.Log(10);
        return Math.Min(0, log10);
    }

    public static double LogFactorial(double n)
    {
        if (n < 2) return 0;
        if (n < 20)
        {
            double s = 0;
            for (int i = 2; i <= (int)n; i++) s += Math.Log(i);
            return s;
        }
        return n * Math.Log(n) - n + 0.5 * Math.Log(2 * Math.PI * n) + 1 / (12 * n) - 1 / (360 * n * n * n);
    }
}
