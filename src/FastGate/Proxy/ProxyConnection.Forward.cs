using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Routing;

namespace FastGate.Proxy;

internal sealed partial class ProxyConnection
{
    /// <summary>How a body copy ended; Stopped: the heartbeat stopped the request (see <see cref="StopReason"/>).</summary>
    private enum CopyResult : byte { Done, SourceEnded, SourceFailed, DestinationFailed, Malformed, Stopped }

    private enum ResponseStep : byte { NeedMore, Interim, Final, Failed }

    /// <summary>Parses what has arrived of a response head; interim (1xx) heads are returned for relaying.</summary>
    private ResponseStep OnResponseBytes(in ReadResult result, UpstreamConnection upstream, HttpLimits limits, ref bool any, out RejectReason error)
    {
        error = RejectReason.None;
        var input = upstream.Input;
        if (_upstreamTimedOut)
        {
            input.AdvanceTo(result.Buffer.Start);
            error = RejectReason.UpstreamResponseTimeout;
            return ResponseStep.Failed;
        }
        var buffer = result.Buffer;
        if (!any) _interimResponses = 0; // the first read of this response
        any |= !buffer.IsEmpty;
        var status = HttpResponseParser.TryParse(buffer, limits, _response, _request.Method, out int consumed, out _);
        if (status == ParseStatus.Error)
        {
            input.AdvanceTo(buffer.End);
            error = RejectReason.UpstreamMalformedResponse;
            return ResponseStep.Failed;
        }
        if (status == ParseStatus.Incomplete)
        {
            input.AdvanceTo(buffer.Start, buffer.End);
            if (!result.IsCompleted && !result.IsCanceled) return ResponseStep.NeedMore;
            error = any ? RejectReason.UpstreamMalformedResponse : RejectReason.UpstreamReset;
            return ResponseStep.Failed;
        }
        input.AdvanceTo(buffer.GetPosition(consumed));
        if (!_response.IsInformational || (_response.StatusCode == 101 && _request.IsUpgrade)) return ResponseStep.Final;
        // a 101 the client did not ask for, or more interim heads than any real exchange needs: the upstream is not
        // speaking HTTP to this request (502, and its connection is dropped)
        if (_response.StatusCode == 101 || ++_interimResponses > MaxInterimResponses)
        {
            error = RejectReason.UpstreamProtocolViolation;
            return ResponseStep.Failed;
        }
        // 103 Early Hints and other interim responses are relayed (never to an HTTP/1.0 client, RFC 9110 15.2);
        // 100 was already answered by the gateway.
        return _response.StatusCode == 100 || !_request.IsHttp11 ? ResponseStep.NeedMore : ResponseStep.Interim;
    }

    /// <summary>Interim (1xx) heads accepted before one final response; more is a protocol violation.</summary>
    internal const int MaxInterimResponses = 8;

    private int _interimResponses;

    /// <summary>Moves up to <paramref name="remaining"/> body bytes from a read result. False: the source ended early.</summary>
    private static bool MoveBody(in ReadResult result, PipeReader source, PipeWriter destination, ref long remaining, ref UsageScanner usage, bool scan)
    {
        var buffer = result.Buffer;
        if (buffer.IsEmpty)
        {
            source.AdvanceTo(buffer.Start);
            return !result.IsCompleted;
        }
        var take = buffer.Length > remaining ? buffer.Slice(0, remaining) : buffer;
        foreach (var segment in take)
        {
            destination.Write(segment.Span);
            if (scan) usage.Feed(segment.Span);
        }
        remaining -= take.Length;
        source.AdvanceTo(take.End);
        return true;
    }


    private void ReleaseUpstream(UpstreamConnection upstream, bool reuse)
    {
        if (Interlocked.CompareExchange(ref _activeUpstream, null, upstream) != upstream) return; // already dropped
        if (reuse) upstream.Pool.Return(upstream);
        else upstream.Pool.Discard(upstream);
    }

    private void WriteUpstreamHead(PipeWriter output, DestinationModel destination)
    {
        if (!_hasTrace) ResolveTrace(forward: true, _spanStart);
        HeadRewriter.WriteUpstreamRequest(output, _exchange, destination, CurrentRequestId(), _isTls, _traceParent, dropTraceState: !_incomingTraceValid);
    }

    private void WriteResponseHead(bool close, bool interim) =>
        HeadRewriter.WriteClientResponse(_output, _response, _exchange,
            _request.RequestId.IsEmpty ? _requestId.AsSpan(0, _requestIdLength) : _request[_request.RequestId], close, interim,
            _exchange.ResponseLines.AsSpan(0, _exchange.ResponseLinesLength));

    private RejectReason _copyError;

    /// <summary>
    /// Streams the rest of a Content-Length request body upstream, flushing after each read so it stays live. Reads
    /// are timed for the body idle timeout and minimum rate (the heartbeat stops a slow client).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> CopyRequestLengthAsync(PipeWriter destination, long length)
    {
        var source = _input;
        long remaining = length;
        while (remaining > 0)
        {
            ReadResult result;
            BeginBodyRead();
            try
            {
                result = await source.ReadAsync().ConfigureAwait(false);
            }
            catch (Exception)
            {
                return CopyResult.SourceFailed;
            }
            finally
            {
                EndBodyRead();
            }
            if (StopReason != RejectReason.None)
            {
                source.AdvanceTo(result.Buffer.Start);
                return CopyResult.Stopped;
            }
            // an empty, cancelled read (a shutdown notice) mid-body just goes round again
            UsageScanner none = default;
            long before = remaining;
            if (!MoveBody(result, source, destination, ref remaining, ref none, scan: false)) return CopyResult.SourceEnded;
            CountBodyBytes(before - remaining);
            if (!await TryFlushAsync(destination).ConfigureAwait(false))
                return StopReason != RejectReason.None ? CopyResult.Stopped : CopyResult.DestinationFailed;
        }
        return CopyResult.Done;
    }

    /// <summary>Copies a chunked body verbatim while validating its framing and size.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> CopyChunkedAsync(PipeReader source, PipeWriter destination, long maxBody, int maxTrailerBytes,
        RejectReason malformedOverride, bool scanUsage = false, ChunkedReader? resume = null)
    {
        // the request body (from the client: reads timed) or a response (to the client: flushes timed)
        bool fromClient = ReferenceEquals(source, _input);
        bool toClient = ReferenceEquals(destination, _output);
        var chunked = resume ?? new ChunkedReader(maxBody, maxTrailerBytes);
        if (resume is null) _trailerLength = 0;
        while (!chunked.IsDone)
        {
            ReadResult result;
            if (fromClient) BeginBodyRead();
            try
            {
                result = await source.ReadAsync().ConfigureAwait(false);
            }
            catch (Exception)
            {
                return CopyResult.SourceFailed;
            }
            finally
            {
                if (fromClient) EndBodyRead();
            }
            if (fromClient && StopReason != RejectReason.None)
            {
                source.AdvanceTo(result.Buffer.Start);
                return CopyResult.Stopped;
            }
            var buffer = result.Buffer;
            long consumedTotal = 0;
            foreach (var segment in buffer)
            {
                // chunks go on verbatim; the trailer section is held back, and written filtered once complete
                bool wasInTrailers = chunked.InTrailers;
                bool ok = chunked.Feed(segment.Span, out int consumed, out var reason, ref _usage, scanUsage);
                int bodyEnd = wasInTrailers ? 0 : chunked.TrailerStart >= 0 ? chunked.TrailerStart : consumed;
                destination.Write(segment.Span[..bodyEnd]);
                if (bodyEnd < consumed) HoldTrailers(segment.Span[bodyEnd..consumed]);
                consumedTotal += consumed;
                if (!ok)
                {
                    source.AdvanceTo(buffer.GetPosition(consumedTotal));
                    _copyError = malformedOverride != RejectReason.None ? malformedOverride : reason;
                    return CopyResult.Malformed;
                }
                if (chunked.IsDone)
                {
                    WriteAllowedTrailers(destination, _trailerBuffer.AsSpan(0, _trailerLength), _runtime.Current.Limits.ProtectedHeaderNames);
                    break;
                }
            }
            source.AdvanceTo(buffer.GetPosition(consumedTotal));
            if (fromClient) CountBodyBytes(consumedTotal);
            bool flushed = toClient ? await TryFlushClientAsync(consumedTotal).ConfigureAwait(false) : await TryFlushAsync(destination).ConfigureAwait(false);
            if (!flushed) return fromClient && StopReason != RejectReason.None ? CopyResult.Stopped : CopyResult.DestinationFailed;
            if (!chunked.IsDone && result.IsCompleted) return CopyResult.SourceEnded;
        }
        return CopyResult.Done;
    }

    // The trailer section of the chunked body being copied (bounded by the reader's trailer limit); grown on demand,
    // so only connections that see trailers ever allocate it.
    private byte[] _trailerBuffer = [];
    private int _trailerLength;

    private void HoldTrailers(ReadOnlySpan<byte> bytes)
    {
        if (_trailerLength + bytes.Length > _trailerBuffer.Length)
            Array.Resize(ref _trailerBuffer, Math.Max(Math.Max(256, _trailerBuffer.Length * 2), _trailerLength + bytes.Length));
        bytes.CopyTo(_trailerBuffer.AsSpan(_trailerLength));
        _trailerLength += bytes.Length;
    }

    /// <summary>
    /// Writes a validated trailer section (field lines, then the empty line) without the fields a trailer must not
    /// carry (RFC 9110 6.5.1: framing, routing, authentication, controls and content metadata, plus hop-by-hop and
    /// forwarding fields), so no recipient can merge them into the head it already acted on.
    /// </summary>
    internal static void WriteAllowedTrailers(PipeWriter destination, ReadOnlySpan<byte> section, byte[][] protectedNames)
    {
        while (true)
        {
            int end = section.IndexOf("\r\n"u8);
            if (end <= 0) break; // the empty line that ends the section
            var line = section[..(end + 2)];
            section = section[(end + 2)..];
            int colon = line.IndexOf((byte)':');
            var name = line[..Math.Max(colon, 0)];
            // also the gateway's identity and forwarding headers, in any spelling ("X_Consumer_Id")
            if (colon <= 0 || !HttpChars.IsTokenSpan(name) || TrailerFields.IsForbidden(name) || RequestCanonicalizer.IsProtected(name, protectedNames)) continue;
            destination.Write(line);
        }
        destination.Write("\r\n"u8);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> CopyToEndAsync(PipeReader source, PipeWriter destination, bool timeClient = false)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await source.ReadAsync().ConfigureAwait(false);
            }
            catch (Exception)
            {
                return CopyResult.SourceFailed;
            }
            var buffer = result.Buffer;
            long length = buffer.Length;
            foreach (var segment in buffer) destination.Write(segment.Span);
            source.AdvanceTo(buffer.End);
            bool flushed = timeClient ? await TryFlushClientAsync(length).ConfigureAwait(false) : await TryFlushAsync(destination).ConfigureAwait(false);
            if (!flushed) return CopyResult.DestinationFailed;
            if (result.IsCompleted || result.IsCanceled) return CopyResult.Done;
        }
    }

    private static async ValueTask<bool> TryFlushAsync(PipeWriter destination)
    {
        try
        {
            var flush = await destination.FlushAsync().ConfigureAwait(false);
            return !flush.IsCompleted;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>A response flush to the client, timed against minResponseRate (see <see cref="FlushClient"/>).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> TryFlushClientAsync(long bytes)
    {
        try
        {
            var flush = await FlushClient(bytes).ConfigureAwait(false);
            return !flush.IsCompleted;
        }
        catch (Exception)
        {
            return false;
        }
        finally
        {
            _clientFlushPending = false;
        }
    }

    /// <summary>After a 101, bytes flow both ways untouched until either side closes.</summary>
    private async Task TunnelAsync(UpstreamConnection upstream)
    {
        await _output.FlushAsync().ConfigureAwait(false);
        var up = CopyToEndAsync(_input, upstream.Output).AsTask();
        var down = CopyToEndAsync(upstream.Input, _output).AsTask();
        var first = await Task.WhenAny(up, down).ConfigureAwait(false);
        if (first == down) _input.CancelPendingRead(); // the upstream closed: stop reading from the client
        ReleaseUpstream(upstream, reuse: false);       // the client closed (or we stop): close the upstream side
        await Task.WhenAll(up, down).ConfigureAwait(false);
    }
}
