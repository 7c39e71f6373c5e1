using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Routing;

namespace FastGate.Proxy;

internal sealed partial class ProxyConnection
{
    private enum CopyResult : byte { Done, SourceEnded, SourceFailed, DestinationFailed, Malformed }

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
        // 103 Early Hints and other interim responses are relayed; 100 was already answered by the gateway.
        return _response.StatusCode == 100 ? ResponseStep.NeedMore : ResponseStep.Interim;
    }

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

    private void WriteUpstreamHead(PipeWriter output, RouteModel route, DestinationModel destination, bool http10)
    {
        if (!_hasTrace) ResolveTrace();
        HeadRewriter.WriteUpstreamRequest(output, _request, route, destination, _peerIp, CurrentRequestId(), http10, _activePolicy, _policy,
            _activeAuthenticator, _consumer, _activeDevices, _device, _isTls,
            _traceParent, dropTraceState: !_incomingTraceValid);
    }

    private void WriteResponseHead(bool close, bool interim) =>
        HeadRewriter.WriteClientResponse(_output, _response, _request,
            _request.RequestId.IsEmpty ? _requestId.AsSpan(0, _requestIdLength) : _request[_request.RequestId], close, interim,
            _activePolicy, _policy, _extraHeaders.AsSpan(0, _extraLength));

    private RejectReason _copyError;

    /// <summary>Copies exactly <paramref name="length"/> bytes, flushing after each read so streams stay live.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<CopyResult> CopyLengthAsync(PipeReader source, PipeWriter destination, long length)
    {
        long remaining = length;
        while (remaining > 0)
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
            // an empty, cancelled read (a shutdown notice) mid-body just goes round again
            UsageScanner none = default;
            if (!MoveBody(result, source, destination, ref remaining, ref none, scan: false)) return CopyResult.SourceEnded;
            if (!await TryFlushAsync(destination).ConfigureAwait(false)) return CopyResult.DestinationFailed;
        }
        return CopyResult.Done;
    }

    /// <summary>Copies a chunked body verbatim while validating its framing and size.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<CopyResult> CopyChunkedAsync(PipeReader source, PipeWriter destination, long maxBody, int maxTrailerBytes,
        RejectReason malformedOverride, bool scanUsage = false)
    {
        var chunked = new ChunkedReader(maxBody, maxTrailerBytes);
        while (!chunked.IsDone)
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
            long consumedTotal = 0;
            foreach (var segment in buffer)
            {
                bool ok = chunked.Feed(segment.Span, out int consumed, out var reason, ref _usage, scanUsage);
                destination.Write(segment.Span[..consumed]);
                consumedTotal += consumed;
                if (!ok)
                {
                    source.AdvanceTo(buffer.GetPosition(consumedTotal));
                    _copyError = malformedOverride != RejectReason.None ? malformedOverride : reason;
                    return CopyResult.Malformed;
                }
                if (chunked.IsDone) break;
            }
            source.AdvanceTo(buffer.GetPosition(consumedTotal));
            if (!await TryFlushAsync(destination).ConfigureAwait(false)) return CopyResult.DestinationFailed;
            if (!chunked.IsDone && result.IsCompleted) return CopyResult.SourceEnded;
        }
        return CopyResult.Done;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<CopyResult> CopyToEndAsync(PipeReader source, PipeWriter destination)
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
            foreach (var segment in buffer) destination.Write(segment.Span);
            source.AdvanceTo(buffer.End);
            if (!await TryFlushAsync(destination).ConfigureAwait(false)) return CopyResult.DestinationFailed;
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
