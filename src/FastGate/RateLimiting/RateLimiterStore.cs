using System.Collections.Concurrent;

namespace FastGate.RateLimiting;

/// <summary>
/// Registry of live limiters keyed by definition equality: compiling a new configuration asks the store for each
/// definition, and an unchanged definition gets the very same limiter (and so keeps its buckets across the reload).
/// Used at compile time only; the request path holds the <see cref="RateLimiter"/> references directly.
/// </summary>
public sealed class RateLimiterStore : IDisposable
{
    private readonly ConcurrentDictionary<RateLimiterDefinition, RateLimiter> _limiters = new();
    private readonly Lock _gate = new();
    private readonly TimeProvider _time;
    private readonly RedisRateLimitBackend? _redis;

    /// <param name="time">Clock for every limiter (tests inject a fake one).</param>
    /// <param name="redis">The cluster backend; required for definitions with scope cluster.</param>
    /// <param name="metrics">The metrics of the gateway the limiters belong to (unexported ones of their own when omitted).</param>
    public RateLimiterStore(TimeProvider? time = null, RedisRateLimitBackend? redis = null, Observability.GatewayMetrics? metrics = null)
    {
        _time = time ?? TimeProvider.System;
        _redis = redis;
        Metrics = metrics ?? new Observability.GatewayMetrics();
    }

    public Observability.GatewayMetrics Metrics { get; }

    public TimeProvider Time => _time;
    public RedisRateLimitBackend? Redis => _redis;
    public ICollection<RateLimiter> Limiters => _limiters.Values;

    /// <summary>Returns the limiter for <paramref name="definition"/>, creating it on first use; null plus a message on error.</summary>
    public RateLimiter? GetOrCreate(RateLimiterDefinition definition, ICollection<string> errors)
    {
        if (_limiters.TryGetValue(definition, out var existing)) return existing;
        if (definition.Scope == RateLimitScope.Cluster && _redis is null)
        {
            errors.Add($"rateLimits['{definition.Id}']: scope 'cluster' needs a redis connection");
            return null;
        }
        lock (_gate)
        {
            if (_limiters.TryGetValue(definition, out existing)) return existing;
            RateLimiter created = Create(definition);
            _limiters[definition] = created;
            return created;
        }
    }

    /// <summary>Like <see cref="GetOrCreate(RateLimiterDefinition, ICollection{string})"/> but throws on error.</summary>
    public RateLimiter GetOrCreate(RateLimiterDefinition definition)
    {
        var errors = new List<string>();
        return GetOrCreate(definition, errors) ?? throw new InvalidOperationException(string.Join("; ", errors));
    }

    private RateLimiter Create(RateLimiterDefinition d) => d.Scope == RateLimitScope.Cluster
        ? d.Algorithm == RateLimitAlgorithm.Concurrency
            ? new ClusterConcurrencyRateLimiter(d, _time, _redis!, Metrics)
            : new ClusterGcraRateLimiter(d, _time, _redis!, Metrics)
        : d.Algorithm switch
        {
            RateLimitAlgorithm.Gcra => new GcraRateLimiter(d, _time),
            RateLimitAlgorithm.SlidingWindow => new SlidingWindowRateLimiter(d, _time),
            _ => new ConcurrencyRateLimiter(d, _time),
        };

    /// <summary>
    /// After a reload has been swapped in: drops (and disposes) limiters whose definitions are not in
    /// <paramref name="live"/>. Returns how many were dropped.
    /// </summary>
    public int Retain(IEnumerable<RateLimiterDefinition> live)
    {
        var keep = new HashSet<RateLimiterDefinition>(live);
        int dropped = 0;
        lock (_gate)
        {
            foreach (var d in _limiters.Keys)
            {
                if (keep.Contains(d) || !_limiters.TryRemove(d, out var limiter)) continue;
                limiter.Dispose();
                dropped++;
            }
        }
        return dropped;
    }

    public void Dispose()
    {
        foreach (var l in _limiters.Values) l.Dispose();
        _limiters.Clear();
    }
}
