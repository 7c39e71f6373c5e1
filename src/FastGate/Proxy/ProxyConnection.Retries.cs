using FastGate.Http;

namespace FastGate.Proxy;

// Retries and the circuit breaker of the forward loop (docs/retries.md): what may be tried again, on which failure,
// within the cluster's retry budget. The loop calls these at its three retry points; the counters live in the
// cluster's ClusterResilience.
internal sealed partial class ProxyConnection
{
    // The cluster the current request counts against and the retry slots it holds: _fw.InCluster, _fw.RetrySlots.

    private bool EnterCluster(ClusterResilience resilience)
    {
        if (!resilience.TryEnter()) return false;
        _fw.InCluster = resilience;
        _fw.RetrySlots = 0;
        return true;
    }

    private void LeaveCluster()
    {
        var r = _fw.InCluster;
        if (r is null) return;
        _fw.InCluster = null;
        r.Exit();
        r.EndRetries(_fw.RetrySlots);
        _fw.RetrySlots = 0;
    }

    /// <summary>RFC 9110 section 9.2.2, or a request that carries an Idempotency-Key.</summary>
    private bool IsIdempotent =>
        _request.Method is HttpMethod.Get or HttpMethod.Head or HttpMethod.Options or HttpMethod.Trace or HttpMethod.Put or HttpMethod.Delete
        || _request.TryGetHeader("idempotency-key"u8, out _);

    /// <summary>
    /// Whether another try may start: within maxRetries, before the request's own deadline, within the retry budget;
    /// and unless nothing was sent (<see cref="RetryReason.Connect"/>), only for an idempotent request (or one the
    /// cluster opts in) whose whole body is still at hand to be sent again.
    /// </summary>
    private bool TryRetry(ClusterResilience r, int attempt, RetryReason reason)
    {
        if (attempt >= r.MaxRetries || StopReason != RejectReason.None || _closeRequested) return false;
        if (reason != RetryReason.Connect)
        {
            if (!IsIdempotent && !r.RetryNonIdempotent) return false;
            if (_request.HasBody && !_fw.BodyComplete) return false; // streamed: what went cannot be sent again
        }
        if (!r.TryStartRetry(reason)) return false;
        _fw.RetrySlots++;
        return true;
    }

    /// <summary>A try broke before its response head: a reset (retryOnReset) or a per-try timeout.</summary>
    private bool RetryAfterFailure(ClusterResilience r, int attempt, RejectReason error) => error switch
    {
        RejectReason.UpstreamReset => r.RetryOnReset && TryRetry(r, attempt, RetryReason.Reset),
        RejectReason.UpstreamResponseTimeout => r.PerTryTimeoutTicks > 0 && TryRetry(r, attempt, RetryReason.Timeout),
        _ => false,
    };

    /// <summary>A response head with a status the cluster retries (retryOn), unless its Retry-After asks for longer
    /// than maxRetryAfter.</summary>
    private bool RetryAfterStatus(ClusterResilience r, int attempt, ResponseHead response)
    {
        if (!r.RetriesStatus(response.StatusCode)) return false;
        if (response.TryGetHeader("retry-after"u8, out var after) && !(ParseSeconds(after) is long s && s <= r.MaxRetryAfterSeconds)) return false;
        return TryRetry(r, attempt, RetryReason.Status);
    }

    /// <summary>delta-seconds (RFC 9110 section 10.2.3); null for an HTTP-date or anything else.</summary>
    private static long? ParseSeconds(ReadOnlySpan<byte> value)
    {
        value = value.Trim((byte)' ');
        if (value.IsEmpty || value.Length > 9) return null;
        long n = 0;
        foreach (var b in value)
        {
            if ((uint)(b - '0') > 9) return null;
            n = n * 10 + (b - '0');
        }
        return n;
    }
}
