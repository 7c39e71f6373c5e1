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
    // The request's timing state is in ForwardState (_fw): the snapshot it is timed by, its total deadline, why the
    // heartbeat stopped it; for the body, while TimingBody, when the pending client read began (0: not waiting on the
    // client, e.g. the upstream is slow to take bytes), the time earlier reads waited and the bytes taken so far; for
    // the response, a Kestrel-style write deadline: each flush of N bytes must complete by
    // max(now + max(grace, N/rate), previous deadline + N/rate), enforced only while a flush is pending (the client's
    // output pipe is past its pause threshold: the client is not taking bytes).

    private RejectReason StopReason => (RejectReason)Volatile.Read(ref _fw.StopCode);

    /// <summary>At the start of the forward step: the request deadline counts from the head (<paramref name="headAt"/>).</summary>
    private void BeginRequestTiming(GatewaySnapshot snapshot, RouteModel route, long headAt)
    {
        _fw.Timing = snapshot;
        _fw.SpanStart = headAt;
        Volatile.Write(ref _fw.StopCode, 0);
        _fw.WriteDeadline = 0;
        Volatile.Write(ref _fw.RequestDeadline, route.RequestTimeoutTicks > 0 ? headAt + route.RequestTimeoutTicks : long.MaxValue);
    }

    /// <summary>The response head arrived: the total request timeout no longer applies.</summary>
    private void EndRequestDeadline() => Volatile.Write(ref _fw.RequestDeadline, long.MaxValue);

    private void EndRequestTiming()
    {
        EndRequestDeadline();
        StopBodyTiming();
        _fw.ClientFlushPending = false;
        _fw.Timing = null; // no reference to an old snapshot while the connection idles
    }

    private void StartBodyTiming()
    {
        Volatile.Write(ref _fw.BodyWaitSince, 0);
        Volatile.Write(ref _fw.BodyWaitTicks, 0);
        Volatile.Write(ref _fw.BodyBytes, 0);
        _fw.TimingBody = true;
    }

    private void StopBodyTiming()
    {
        _fw.TimingBody = false;
        Volatile.Write(ref _fw.BodyWaitSince, 0);
    }

    /// <summary>Before a read of request-body bytes from the client.</summary>
    private void BeginBodyRead() => Volatile.Write(ref _fw.BodyWaitSince, Stopwatch.GetTimestamp());

    /// <summary>After it: the wait is added to the body's read time (cleared first, so the heartbeat never counts it twice).</summary>
    private void EndBodyRead()
    {
        long since = Interlocked.Exchange(ref _fw.BodyWaitSince, 0);
        if (since != 0) Volatile.Write(ref _fw.BodyWaitTicks, _fw.BodyWaitTicks + (Stopwatch.GetTimestamp() - since));
    }

    private void CountBodyBytes(long n) => Volatile.Write(ref _fw.BodyBytes, _fw.BodyBytes + n);

    /// <summary>
    /// Flushes response bytes to the client, extending the write deadline by what they need at minResponseRate.
    /// The caller clears <see cref="_fw.ClientFlushPending"/> once the flush completed.
    /// </summary>
    private ValueTask<FlushResult> FlushClient(long bytes)
    {
        var s = _fw.Timing;
        if (s is not null && s.MinResponseRate > 0)
        {
            long now = Stopwatch.GetTimestamp();
            long need = (long)((double)bytes / s.MinResponseRate * Stopwatch.Frequency);
            long single = now + Math.Max(s.MinRateGraceTicks, need);
            long accumulated = _fw.WriteDeadline + need;
            Volatile.Write(ref _fw.WriteDeadline, Math.Max(single, accumulated));
        }
        var flush = _output.FlushAsync();
        if (!flush.IsCompleted) _fw.ClientFlushPending = true;
        return flush;
    }

    /// <summary>The heartbeat stops the request: a pending client read returns (cancelled) and sees the reason.</summary>
    private void Stop(RejectReason reason, bool abortUpstream)
    {
        if (Interlocked.CompareExchange(ref _fw.StopCode, (int)reason, 0) != 0) return;
        _input.CancelPendingRead();
        if (abortUpstream) Volatile.Read(ref _fw.ActiveUpstream)?.Abort();
    }

    /// <summary>The heartbeat's checks of the request after its head (called from <see cref="CheckTimeout"/>).</summary>
    private void CheckRequestTimeouts(long now)
    {
        if (now >= Volatile.Read(ref _fw.RequestDeadline))
        {
            Volatile.Write(ref _fw.RequestDeadline, long.MaxValue);
            Stop(RejectReason.RequestTimeout, abortUpstream: true);
        }
        var s = _fw.Timing;
        if (s is null) return;
        if (_fw.TimingBody)
        {
            long since = Volatile.Read(ref _fw.BodyWaitSince);
            if (since != 0)
            {
                long waiting = now - since;
                if (waiting >= s.BodyIdleTimeoutTicks)
                {
                    Stop(RejectReason.RequestBodyTimeout, abortUpstream: false);
                }
                else if (s.MinRequestBodyRate > 0)
                {
                    long read = Volatile.Read(ref _fw.BodyWaitTicks) + waiting;
                    if (read > s.MinRateGraceTicks && Volatile.Read(ref _fw.BodyBytes) < s.MinRequestBodyRate * ((double)read / Stopwatch.Frequency))
                        Stop(RejectReason.RequestBodyTooSlow, abortUpstream: false);
                }
            }
        }
        if (_fw.ClientFlushPending && s.MinResponseRate > 0 && now >= Volatile.Read(ref _fw.WriteDeadline))
        {
            // the client stopped taking the response: close it; the relay fails and discards the upstream connection
            _fw.ClientFlushPending = false;
            if (Interlocked.CompareExchange(ref _fw.StopCode, (int)RejectReason.ResponseTooSlow, 0) == 0)
                _runtime.Metrics.CountRejection(RejectReason.ResponseTooSlow);
            _context.Abort(new ConnectionAbortedException("the client read the response too slowly"));
        }
    }

    // ---- request buffering (limits.requestBufferBytes) ----

    // A per-connection buffer from ArrayPool<byte>.Shared: kept across requests up to KeptBufferBytes, returned after
    // the request when larger. _fw.BufferedLength bytes of the request body (verbatim, chunked framing included) are in it;
    // _fw.BodyComplete says whether they are the whole body; _fw.BodyReader the chunked state where buffering stopped.
    private const int KeptBufferBytes = 16384;
    private byte[]? _bodyBuffer;

    /// <summary>Whether this request's body is read before the lease: it fits (Content-Length) or may fit (chunked).</summary>
    private bool ShouldBufferBody(GatewaySnapshot snapshot) =>
        _request.HasBody && snapshot.RequestBufferBytes > 0
        && (_request.Framing == BodyFraming.Chunked || _request.ContentLength <= snapshot.RequestBufferBytes);

    private void ResetBodyBuffer()
    {
        _fw.BufferedLength = 0;
        _fw.BodyComplete = false;
        _fw.BodyBufferedPartly = false;
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
        _fw.BodyReader = new ChunkedReader(snapshot.Limits.MaxBodyBytes, snapshot.Limits.MaxHeaderBytes);
        _fw.TrailerLength = 0;
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
                buffer.Slice(0, take).CopyTo(target.AsSpan(_fw.BufferedLength));
                _fw.BufferedLength += (int)take;
                remaining -= take;
                CountBodyBytes(take);
                _input.AdvanceTo(buffer.GetPosition(take));
                if (remaining == 0)
                {
                    _fw.BodyComplete = true;
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
                    int room = capacity - _fw.BufferedLength;
                    if (span.Length > room) span = span[..room];
                    // chunks are buffered verbatim; the trailer section is held back and sent filtered (SendBodyAsync)
                    bool wasInTrailers = _fw.BodyReader.InTrailers;
                    bool ok = _fw.BodyReader.Feed(span, out int consumed, out var reason);
                    int bodyEnd = wasInTrailers ? 0 : _fw.BodyReader.TrailerStart >= 0 ? _fw.BodyReader.TrailerStart : consumed;
                    span[..bodyEnd].CopyTo(target.AsSpan(_fw.BufferedLength));
                    _fw.BufferedLength += bodyEnd;
                    if (bodyEnd < consumed) HoldTrailers(span[bodyEnd..consumed]);
                    consumedTotal += consumed;
                    if (!ok)
                    {
                        _input.AdvanceTo(buffer.GetPosition(consumedTotal));
                        CountBodyBytes(consumedTotal);
                        _fw.CopyError = reason;
                        return CopyResult.Malformed;
                    }
                    if (_fw.BodyReader.IsDone) break;
                    if (_fw.BufferedLength == capacity)
                    {
                        full = true;
                        break;
                    }
                }
                _input.AdvanceTo(buffer.GetPosition(consumedTotal));
                CountBodyBytes(consumedTotal);
                if (_fw.BodyReader.IsDone)
                {
                    _fw.BodyComplete = true;
                    return CopyResult.Done;
                }
                if (full)
                {
                    _fw.BodyBufferedPartly = true; // the rest streams from where the reader stopped
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
        if (_fw.BufferedLength > 0) upstream.Write(_bodyBuffer.AsSpan(0, _fw.BufferedLength));
        if (_fw.BodyComplete && request.Framing == BodyFraming.Chunked) WriteAllowedTrailers(upstream, _trailerBuffer.AsSpan(0, _fw.TrailerLength), snapshot.Limits.ProtectedHeaderNames);
        if (!request.HasBody || _fw.BodyComplete)
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
                resume: _fw.BodyBufferedPartly ? _fw.BodyReader : null).ConfigureAwait(false);
        }
        return await CopyRequestLengthAsync(upstream, request.ContentLength - _fw.BufferedLength).ConfigureAwait(false);
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
        if (request.HasBody && !_fw.BodyComplete) return false;
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
            CopyResult.Malformed => RejectAsync(_fw.CopyError, close: true),
            CopyResult.DestinationFailed => RejectAsync(RejectReason.UpstreamReset, close: true),
            _ => ValueTask.FromResult(false), // the client went away or stopped in the middle of its body
        };
    }
}
