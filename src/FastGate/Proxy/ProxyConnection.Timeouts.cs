using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Routing;
using Microsoft.AspNetCore.Connections;

namespace FastGate.Proxy;

/// <summary>
/// Slow clients after the head: the body idle timeout, the minimum request-body and response rates, and the route's
/// total request timeout. The request path only stamps times and counts bytes in fields of the connection; the
/// runtime's 250 ms heartbeat (<see cref="CheckTimeout"/>) compares them and stops the request. No timer and no
/// cancellation source per request.
/// </summary>
internal sealed partial class ProxyConnection
{
    // The snapshot whose limits the running request is timed by (a reference, set per request).
    private GatewaySnapshot? _timing;
    // Total request deadline (Stopwatch ticks; MaxValue: none), set from the head and cleared at the response head.
    private long _requestDeadline = long.MaxValue;
    // Why the heartbeat stopped the request (a RejectReason; 0 while it runs). Set once per request.
    private int _stopReason;

    // Request body: while _timingBody, _bodyWaitSince is when the pending client read began (0: not waiting on the
    // client, e.g. the upstream is slow to take bytes), _bodyWaitTicks the time spent in earlier reads, _bodyBytes the
    // bytes taken from the client so far.
    private volatile bool _timingBody;
    private long _bodyWaitSince;
    private long _bodyWaitTicks;
    private long _bodyBytes;

    // Response: a Kestrel-style write deadline. Each flush of N bytes must complete by
    // max(now + max(grace, N/rate), previous deadline + N/rate); it is enforced only while a flush is pending
    // (the client's output pipe is past its pause threshold: the client is not taking bytes).
    private long _writeDeadline;
    private volatile bool _clientFlushPending;

    private RejectReason StopReason => (RejectReason)Volatile.Read(ref _stopReason);

    /// <summary>At the start of the forward step: the request deadline counts from the head (<paramref name="headAt"/>).</summary>
    private void BeginRequestTiming(GatewaySnapshot snapshot, RouteModel route, long headAt)
    {
        _timing = snapshot;
        _spanStart = headAt;
        Volatile.Write(ref _stopReason, 0);
        _writeDeadline = 0;
        Volatile.Write(ref _requestDeadline, route.RequestTimeoutTicks > 0 ? headAt + route.RequestTimeoutTicks : long.MaxValue);
    }

    /// <summary>The response head arrived: the total request timeout no longer applies.</summary>
    private void EndRequestDeadline() => Volatile.Write(ref _requestDeadline, long.MaxValue);

    private void EndRequestTiming()
    {
        EndRequestDeadline();
        StopBodyTiming();
        _clientFlushPending = false;
        _timing = null; // no reference to an old snapshot while the connection idles
    }

    private void StartBodyTiming()
    {
        Volatile.Write(ref _bodyWaitSince, 0);
        Volatile.Write(ref _bodyWaitTicks, 0);
        Volatile.Write(ref _bodyBytes, 0);
        _timingBody = true;
    }

    private void StopBodyTiming()
    {
        _timingBody = false;
        Volatile.Write(ref _bodyWaitSince, 0);
    }

    /// <summary>Before a read of request-body bytes from the client.</summary>
    private void BeginBodyRead() => Volatile.Write(ref _bodyWaitSince, Stopwatch.GetTimestamp());

    /// <summary>After it: the wait is added to the body's read time (cleared first, so the heartbeat never counts it twice).</summary>
    private void EndBodyRead()
    {
        long since = Interlocked.Exchange(ref _bodyWaitSince, 0);
        if (since != 0) Volatile.Write(ref _bodyWaitTicks, _bodyWaitTicks + (Stopwatch.GetTimestamp() - since));
    }

    private void CountBodyBytes(long n) => Volatile.Write(ref _bodyBytes, _bodyBytes + n);

    /// <summary>
    /// Flushes response bytes to the client, extending the write deadline by what they need at minResponseRate.
    /// The caller clears <see cref="_clientFlushPending"/> once the flush completed.
    /// </summary>
    private ValueTask<FlushResult> FlushClient(long bytes)
    {
        var s = _timing;
        if (s is not null && s.MinResponseRate > 0)
        {
            long now = Stopwatch.GetTimestamp();
            long need = (long)((double)bytes / s.MinResponseRate * Stopwatch.Frequency);
            long single = now + Math.Max(s.MinRateGraceTicks, need);
            long accumulated = _writeDeadline + need;
            Volatile.Write(ref _writeDeadline, Math.Max(single, accumulated));
        }
        var flush = _output.FlushAsync();
        if (!flush.IsCompleted) _clientFlushPending = true;
        return flush;
    }

    /// <summary>The heartbeat stops the request: a pending client read returns (cancelled) and sees the reason.</summary>
    private void Stop(RejectReason reason, bool abortUpstream)
    {
        if (Interlocked.CompareExchange(ref _stopReason, (int)reason, 0) != 0) return;
        _input.CancelPendingRead();
        if (abortUpstream) Volatile.Read(ref _activeUpstream)?.Abort();
    }

    /// <summary>The heartbeat's checks of the request after its head (called from <see cref="CheckTimeout"/>).</summary>
    private void CheckRequestTimeouts(long now)
    {
        if (now >= Volatile.Read(ref _requestDeadline))
        {
            Volatile.Write(ref _requestDeadline, long.MaxValue);
            Stop(RejectReason.RequestTimeout, abortUpstream: true);
        }
        var s = _timing;
        if (s is null) return;
        if (_timingBody)
        {
            long since = Volatile.Read(ref _bodyWaitSince);
            if (since != 0)
            {
                long waiting = now - since;
                if (waiting >= s.BodyIdleTimeoutTicks)
                {
                    Stop(RejectReason.RequestBodyTimeout, abortUpstream: false);
                }
                else if (s.MinRequestBodyRate > 0)
                {
                    long read = Volatile.Read(ref _bodyWaitTicks) + waiting;
                    if (read > s.MinRateGraceTicks && Volatile.Read(ref _bodyBytes) < s.MinRequestBodyRate * ((double)read / Stopwatch.Frequency))
                        Stop(RejectReason.RequestBodyTooSlow, abortUpstream: false);
                }
            }
        }
        if (_clientFlushPending && s.MinResponseRate > 0 && now >= Volatile.Read(ref _writeDeadline))
        {
            // the client stopped taking the response: close it; the relay fails and discards the upstream connection
            _clientFlushPending = false;
            if (Interlocked.CompareExchange(ref _stopReason, (int)RejectReason.ResponseTooSlow, 0) == 0)
                _runtime.Metrics.CountRejection(RejectReason.ResponseTooSlow);
            _context.Abort(new ConnectionAbortedException("the client read the response too slowly"));
        }
    }

    // ---- request buffering (limits.requestBufferBytes) ----

    // A per-connection buffer from ArrayPool<byte>.Shared: kept across requests up to KeptBufferBytes, returned after
    // the request when larger. _bufferedLength bytes of the request body (verbatim, chunked framing included) are in it;
    // _bodyComplete says whether they are the whole body; _bodyReader the chunked state where buffering stopped.
    private const int KeptBufferBytes = 16384;
    private byte[]? _bodyBuffer;
    private int _bufferedLength;
    private bool _bodyComplete;
    private bool _bodyBufferedPartly;
    private ChunkedReader _bodyReader;

    /// <summary>Whether this request's body is read before the lease: it fits (Content-Length) or may fit (chunked).</summary>
    private bool ShouldBufferBody(GatewaySnapshot snapshot) =>
        _request.HasBody && snapshot.RequestBufferBytes > 0
        && (_request.Framing == BodyFraming.Chunked || _request.ContentLength <= snapshot.RequestBufferBytes);

    private void ResetBodyBuffer()
    {
        _bufferedLength = 0;
        _bodyComplete = false;
        _bodyBufferedPartly = false;
    }

    private void EnsureBodyBuffer(int size)
    {
        if (_bodyBuffer is not null && _bodyBuffer.Length >= size) return;
        if (_bodyBuffer is not null) ArrayPool<byte>.Shared.Return(_bodyBuffer);
        _bodyBuffer = ArrayPool<byte>.Shared.Rent(Math.Max(size, 1024));
    }

    /// <summary>After the request: a large buffer goes back to the pool, a small one stays for the next request.</summary>
    private void TrimBodyBuffer(bool all)
    {
        if (_bodyBuffer is null || (!all && _bodyBuffer.Length <= KeptBufferBytes)) return;
        ArrayPool<byte>.Shared.Return(_bodyBuffer);
        _bodyBuffer = null;
    }

    /// <summary>
    /// Reads the request body from the client into the connection's buffer, before any upstream connection is leased.
    /// A Content-Length body is read whole; a chunked one until it ends or fills the buffer (then the rest streams).
    /// </summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> BufferBodyAsync(GatewaySnapshot snapshot)
    {
        var request = _request;
        bool chunked = request.Framing == BodyFraming.Chunked;
        int capacity = chunked ? snapshot.RequestBufferBytes : (int)request.ContentLength;
        EnsureBodyBuffer(capacity);
        var target = _bodyBuffer!;
        _bodyReader = new ChunkedReader(snapshot.Limits.MaxBodyBytes, snapshot.Limits.MaxHeaderBytes);
        _trailerLength = 0;
        long remaining = chunked ? long.MaxValue : request.ContentLength;
        while (true)
        {
            ReadResult result;
            BeginBodyRead();
            try
            {
                result = await _input.ReadAsync().ConfigureAwait(false);
            }
            catch (Exception)
            {
                return CopyResult.SourceFailed;
            }
            finally
            {
                EndBodyRead();
            }
            var buffer = result.Buffer;
            if (StopReason != RejectReason.None)
            {
                _input.AdvanceTo(buffer.Start);
                return CopyResult.Stopped;
            }
            if (!chunked)
            {
                long take = Math.Min(buffer.Length, remaining);
                buffer.Slice(0, take).CopyTo(target.AsSpan(_bufferedLength));
                _bufferedLength += (int)take;
                remaining -= take;
                CountBodyBytes(take);
                _input.AdvanceTo(buffer.GetPosition(take));
                if (remaining == 0)
                {
                    _bodyComplete = true;
                    return CopyResult.Done;
                }
            }
            else
            {
                long consumedTotal = 0;
                bool full = false;
                foreach (var segment in buffer)
                {
                    var span = segment.Span;
                    int room = capacity - _bufferedLength;
                    if (span.Length > room) span = span[..room];
                    // chunks are buffered verbatim; the trailer section is held back and sent filtered (SendBodyAsync)
                    bool wasInTrailers = _bodyReader.InTrailers;
                    bool ok = _bodyReader.Feed(span, out int consumed, out var reason);
                    int bodyEnd = wasInTrailers ? 0 : _bodyReader.TrailerStart >= 0 ? _bodyReader.TrailerStart : consumed;
                    span[..bodyEnd].CopyTo(target.AsSpan(_bufferedLength));
                    _bufferedLength += bodyEnd;
                    if (bodyEnd < consumed) HoldTrailers(span[bodyEnd..consumed]);
                    consumedTotal += consumed;
                    if (!ok)
                    {
                        _input.AdvanceTo(buffer.GetPosition(consumedTotal));
                        CountBodyBytes(consumedTotal);
                        _copyError = reason;
                        return CopyResult.Malformed;
                    }
                    if (_bodyReader.IsDone) break;
                    if (_bufferedLength == capacity)
                    {
                        full = true;
                        break;
                    }
                }
                _input.AdvanceTo(buffer.GetPosition(consumedTotal));
                CountBodyBytes(consumedTotal);
                if (_bodyReader.IsDone)
                {
                    _bodyComplete = true;
                    return CopyResult.Done;
                }
                if (full)
                {
                    _bodyBufferedPartly = true; // the rest streams from where the reader stopped
                    return CopyResult.Done;
                }
            }
            if (result.IsCompleted) return CopyResult.SourceEnded;
        }
    }

    /// <summary>
    /// Sends the request body upstream after its head: the buffered body (or buffered part, then the rest streamed),
    /// or the whole body streamed; a request without a body just flushes its head.
    /// </summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> SendBodyAsync(PipeWriter upstream, GatewaySnapshot snapshot)
    {
        var request = _request;
        if (_bufferedLength > 0) upstream.Write(_bodyBuffer.AsSpan(0, _bufferedLength));
        if (_bodyComplete && request.Framing == BodyFraming.Chunked) WriteAllowedTrailers(upstream, _trailerBuffer.AsSpan(0, _trailerLength), snapshot.Limits.ProtectedHeaderNames);
        if (!request.HasBody || _bodyComplete)
        {
            try
            {
                var flush = await upstream.FlushAsync().ConfigureAwait(false);
                return flush.IsCompleted ? CopyResult.DestinationFailed : CopyResult.Done;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return CopyResult.DestinationFailed;
            }
        }
        if (request.Framing == BodyFraming.Chunked)
        {
            return await CopyChunkedAsync(_input, upstream, snapshot.Limits.MaxBodyBytes, snapshot.Limits.MaxHeaderBytes, RejectReason.None,
                resume: _bodyBufferedPartly ? _bodyReader : null).ConfigureAwait(false);
        }
        return await CopyRequestLengthAsync(upstream, request.ContentLength - _bufferedLength).ConfigureAwait(false);
    }

    /// <summary>
    /// Whether a request that failed on a reused upstream connection may be sent again: only one that can be replayed
    /// (no body, or a body held whole in the buffer) and that is safe to repeat (GET, HEAD, OPTIONS, TRACE; any other
    /// method only with an Idempotency-Key header). A POST whose connection reset after it was written is not resent.
    /// </summary>
    private bool CanRetry(UpstreamConnection upstream, int attempt)
    {
        if (attempt != 0 || !upstream.Reused || StopReason != RejectReason.None) return false;
        var request = _request;
        if (request.HasBody && !_bodyComplete) return false;
        return request.Method is Http.HttpMethod.Get or Http.HttpMethod.Head or Http.HttpMethod.Options or Http.HttpMethod.Trace
               || request.TryGetHeader("idempotency-key"u8, out _);
    }

    /// <summary>The reply to a request whose body could not be read or sent (408, 4xx framing, 504); false: close.</summary>
    private ValueTask<bool> RejectBodyAsync(CopyResult result)
    {
        var stop = StopReason;
        if (stop != RejectReason.None) return RejectAsync(stop, close: true);
        return result switch
        {
            CopyResult.Malformed => RejectAsync(_copyError, close: true),
            CopyResult.DestinationFailed => RejectAsync(RejectReason.UpstreamReset, close: true),
            _ => ValueTask.FromResult(false), // the client went away or stopped in the middle of its body
        };
    }
}
