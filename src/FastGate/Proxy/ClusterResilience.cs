using FastGate.Configuration;
using Prometheus;

namespace FastGate.Proxy;

public enum RetryReason : byte { Connect, Reset, Timeout, Status }

/// <summary>
/// A cluster's retry policy, retry budget and circuit breaker: counters taken and given back with Interlocked
/// operations (no locks, no allocation), metric children bound once. Counts start at zero with each compiled
/// snapshot; requests in flight give theirs back to the cluster object they took them from.
/// </summary>
public sealed class ClusterResilience
{
    private readonly int _maxConcurrent, _maxPending;
    private readonly ulong[] _retryStatuses = new ulong[10]; // bit per status 0..639
    private int _active, _pending, _retries;
    private readonly Counter.Child[] _retried;
    private readonly Counter.Child _budgetExhausted, _openConcurrent, _openPending;

    public ClusterResilience(string cluster, RetryConfig retry, CircuitBreakerConfig breaker, Observability.GatewayMetrics metrics)
    {
        MaxRetries = retry.MaxRetries;
        RetryOnReset = retry.RetryOnReset;
        RetryNonIdempotent = retry.RetryNonIdempotent;
        BudgetPercent = retry.BudgetPercent;
        MinRetryConcurrency = retry.MinRetryConcurrency;
        MaxRetryAfterSeconds = (long)retry.MaxRetryAfter.TotalSeconds;
        PerTryTimeoutTicks = retry.PerTryTimeout is { } t ? GatewaySnapshot.ToTicks(t) : 0;
        foreach (var s in retry.RetryOn) _retryStatuses[s >> 6] |= 1UL << (s & 63);
        _maxConcurrent = breaker.MaxConcurrentRequests;
        _maxPending = breaker.MaxPendingRequests;
        _retried = [metrics.UpstreamRetries.WithLabels(cluster, "connect"), metrics.UpstreamRetries.WithLabels(cluster, "reset"),
            metrics.UpstreamRetries.WithLabels(cluster, "timeout"), metrics.UpstreamRetries.WithLabels(cluster, "status")];
        _budgetExhausted = metrics.RetryBudgetExhausted.WithLabels(cluster);
        _openConcurrent = metrics.CircuitBreakerRejections.WithLabels(cluster, "concurrent");
        _openPending = metrics.CircuitBreakerRejections.WithLabels(cluster, "pending");
    }

    public int MaxRetries { get; }
    public bool RetryOnReset { get; }
    public bool RetryNonIdempotent { get; }
    public int BudgetPercent { get; }
    public int MinRetryConcurrency { get; }
    public long MaxRetryAfterSeconds { get; }
    /// <summary>The response-head timeout of one try in Stopwatch ticks (0: the listener's).</summary>
    public long PerTryTimeoutTicks { get; }
    public int Active => Volatile.Read(ref _active);
    public int Pending => Volatile.Read(ref _pending);
    public int RetriesInFlight => Volatile.Read(ref _retries);

    public bool RetriesStatus(int status) => (uint)status < 640 && (_retryStatuses[status >> 6] & (1UL << (status & 63))) != 0;

    /// <summary>A request starts using the cluster; false: the concurrency bound is reached (503 circuit_open).</summary>
    public bool TryEnter()
    {
        int n = Interlocked.Increment(ref _active);
        if (_maxConcurrent == 0 || n <= _maxConcurrent) return true;
        Interlocked.Decrement(ref _active);
        _openConcurrent.Inc();
        return false;
    }

    public void Exit() => Interlocked.Decrement(ref _active);

    /// <summary>A request waits for a new upstream connection; false: too many wait already.</summary>
    public bool TryEnterPending()
    {
        int n = Interlocked.Increment(ref _pending);
        if (_maxPending == 0 || n <= _maxPending) return true;
        Interlocked.Decrement(ref _pending);
        _openPending.Inc();
        return false;
    }

    public void ExitPending() => Interlocked.Decrement(ref _pending);

    /// <summary>
    /// Takes a retry slot from the budget: retries in flight stay within BudgetPercent of the requests in flight, or
    /// MinRetryConcurrency, whichever is larger (Envoy's retry budget). The slot is held until the request ends.
    /// </summary>
    public bool TryStartRetry(RetryReason reason)
    {
        int allowed = Math.Max(MinRetryConcurrency, (int)((long)Volatile.Read(ref _active) * BudgetPercent / 100));
        int n = Interlocked.Increment(ref _retries);
        if (n > allowed)
        {
            Interlocked.Decrement(ref _retries);
            _budgetExhausted.Inc();
            return false;
        }
        _retried[(int)reason].Inc();
        return true;
    }

    public void EndRetries(int count)
    {
        if (count > 0) Interlocked.Add(ref _retries, -count);
    }
}
