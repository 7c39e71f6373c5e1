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
        if (_fw.UpstreamTimedOut)
        {
            input.AdvanceTo(result.Buffer.Start);
            error = RejectReason.UpstreamResponseTimeout;
            return ResponseStep.Failed;
        }
        var buffer = result.Buffer;
        if (!any) _fw.InterimResponses = 0; // the first read of this response
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
        if (_response.StatusCode == 101 || ++_fw.InterimResponses > MaxInterimResponses)
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


    /// <summary>
    /// The forward of an admitted request: the small body read first, then tries — choose a destination, lease a
    /// connection, send, read the response head — until one gives a response to relay, or the retry budget and the
    /// request's safety say stop (then the gateway's own 5xx). Returns whether the client connection stays open.
    /// </summary>
    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private async ValueTask<bool> ForwardAsync(GatewaySnapshot snapshot, RouteModel route, long started)
    {
        var request = _request;
        var cluster = _exchange.Cluster!;
        var resilience = cluster.Resilience;
        if (request.ExpectContinue && request.HasBody)
        {
            // The gateway answers the expectation itself (and drops Expect upstream), so the body comes at once.
            _output.Write(Continue100);
            await _output.FlushAsync().ConfigureAwait(false);
        }
        // slow clients: the route's total timeout, body timing; a small body is read before the lease
        BeginRequestTiming(snapshot, route, started);
        ResetBodyBuffer();
        if (request.HasBody) StartBodyTiming();
        if (!EnterCluster(resilience)) return await RejectAsync(RejectReason.CircuitOpen, close: CloseAfterReply).ConfigureAwait(false);
        if (ShouldBufferBody(snapshot))
        {
            var buffered = await BufferBodyAsync(snapshot).ConfigureAwait(false);
            if (buffered != CopyResult.Done) return await RejectBodyAsync(buffered).ConfigureAwait(false);
            if (_fw.BodyComplete) StopBodyTiming();
        }
        if (_exchange.WafBodyPending && InspectBody()) return await RejectAsync(RejectReason.WafBlocked, close: CloseAfterReply).ConfigureAwait(false);

        DestinationModel? previous = null; // the destination the last try failed on: the next goes elsewhere
        for (int attempt = 0; ; attempt++)
        {
            // a. a destination and a connection to it: an idle pooled one, or a new one
            var destination = PickDestination(cluster, avoid: previous);
            NoteUpstream(cluster, destination);
            var upstream = destination.Pool.TryRentIdle();
            var error = RejectReason.None;
            if (upstream is null)
            {
                _boxes.Prime();
                (upstream, error) = await ConnectAsync(destination, resilience, snapshot).ConfigureAwait(false);
            }
            if (upstream is null)
            {
                // never sent: any method may go to another destination. A certificate the gateway refuses is refused
                // again by the same destination, so it is retried only where another one exists.
                if (error != RejectReason.CircuitOpen && (error != RejectReason.UpstreamTlsFailed || cluster.Destinations.Length > 1)
                    && TryRetry(resilience, attempt, RetryReason.Connect))
                {
                    previous = destination;
                    continue;
                }
                return await RejectAsync(error, close: CloseAfterReply).ConfigureAwait(false);
            }
            _fw.UpstreamTimedOut = false;
            Volatile.Write(ref _fw.ActiveUpstream, upstream);
            if (StopReason != RejectReason.None)
            {
                // the request timed out while it waited for the connection: nothing was sent on it
                EndTry(UpstreamOutcome.Abandoned);
                ReleaseUpstream(upstream, reuse: upstream.Reused);
                return await RejectAsync(StopReason, close: true).ConfigureAwait(false);
            }

            // b. the request: the head rewritten from the exchange, then the body (buffered, or streamed by its framing)
            WriteUpstreamHead(upstream.Output, destination);
            var sent = await SendBodyAsync(upstream.Output, snapshot).ConfigureAwait(false);
            StopBodyTiming();
            if (sent != CopyResult.Done)
            {
                EndTry(sent == CopyResult.DestinationFailed && !upstream.Reused ? UpstreamOutcome.Reset : UpstreamOutcome.Abandoned);
                ReleaseUpstream(upstream, reuse: false);
                if (sent == CopyResult.DestinationFailed && CanRetry(upstream, attempt)) continue; // stale keep-alive
                return await RejectBodyAsync(sent).ConfigureAwait(false);
            }

            // c. the response head (interim 1xx heads relayed)
            _boxes.Prime();
            error = await ReadResponseHeadAsync(upstream, snapshot, resilience).ConfigureAwait(false);
            if (error != RejectReason.None)
            {
                ReleaseUpstream(upstream, reuse: false);
                EndTry(ResponseFailureOutcome(StopReason == RejectReason.RequestTimeout ? StopReason : error, upstream.Reused));
                if (StopReason == RejectReason.RequestTimeout) error = RejectReason.RequestTimeout;
                else if (error == RejectReason.UpstreamReset && CanRetry(upstream, attempt)) continue; // a stale keep-alive connection
                else if (RetryAfterFailure(resilience, attempt, error))
                {
                    previous = destination;
                    continue;
                }
                EndRequestDeadline();
                return await RejectAsync(error, close: request.WantsClose).ConfigureAwait(false);
            }

            // d. the try ends with the response head (a client abort mid-body is not the destination's); relay it
            EndTry(_response.StatusCode >= 500 ? UpstreamOutcome.ServerError : UpstreamOutcome.Success);
            if (RetryAfterStatus(resilience, attempt, _response))
            {
                ReleaseUpstream(upstream, reuse: false); // its unread body goes with the connection
                previous = destination;
                continue;
            }
            EndRequestDeadline(); // the response head is in: the total request timeout no longer applies
            _exchange.Status = _response.StatusCode;
            if (InspectsResponse(route))
            {
                var refused = await InspectResponseAsync(upstream, route, snapshot).ConfigureAwait(false);
                if (refused != RejectReason.None)
                {
                    ReleaseUpstream(upstream, reuse: false); // its body (the rest of it) goes with the connection
                    return await RejectAsync(refused, close: request.WantsClose).ConfigureAwait(false);
                }
            }
            _boxes.Prime();
            return await RelayResponseAsync(upstream, route, snapshot).ConfigureAwait(false);
        }
    }

    /// <summary>A new upstream connection within the cluster's pending-connect bound; null and why when there is none.</summary>
    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private async ValueTask<(UpstreamConnection? Connection, RejectReason Error)> ConnectAsync(DestinationModel destination, ClusterResilience resilience,
        GatewaySnapshot snapshot)
    {
        if (!resilience.TryEnterPending()) return (null, RejectReason.CircuitOpen);
        var (connection, error) = await destination.Pool.ConnectAsync(snapshot.UpstreamConnectTimeout).ConfigureAwait(false);
        resilience.ExitPending();
        if (connection is null) EndTry(ConnectOutcome(error));
        return (connection, error);
    }

    /// <summary>Reads the response head within the response (or per-try) timeout, relaying interim heads; None: the head is in.</summary>
    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private async ValueTask<RejectReason> ReadResponseHeadAsync(UpstreamConnection upstream, GatewaySnapshot snapshot, ClusterResilience resilience)
    {
        SetDeadline(resilience.PerTryTimeoutTicks > 0 ? Math.Min(resilience.PerTryTimeoutTicks, snapshot.UpstreamResponseTimeoutTicks) : snapshot.UpstreamResponseTimeoutTicks,
            TimeoutKind.UpstreamResponse);
        ResponseStep step;
        RejectReason error;
        bool any = false;
        do
        {
            ReadResult result;
            try
            {
                result = await upstream.Input.ReadAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                error = _fw.UpstreamTimedOut ? RejectReason.UpstreamResponseTimeout : any ? RejectReason.UpstreamMalformedResponse : RejectReason.UpstreamReset;
                step = ResponseStep.Failed;
                break;
            }
            step = OnResponseBytes(result, upstream, snapshot.Limits, ref any, out error);
            if (step == ResponseStep.Interim)
            {
                WriteResponseHead(close: false, interim: true);
                await _output.FlushAsync().ConfigureAwait(false);
            }
        }
        while (step is ResponseStep.NeedMore or ResponseStep.Interim);
        ClearDeadline();
        NoteUpstreamResponse();
        return step == ResponseStep.Failed ? error : RejectReason.None;
    }

    /// <summary>
    /// Relays the response whose head is in: its head rewritten, its body by its framing (token usage read on the way
    /// when a quota charges it), or the tunnel of a 101. Returns whether the client connection stays open.
    /// </summary>
    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private async ValueTask<bool> RelayResponseAsync(UpstreamConnection upstream, RouteModel route, GatewaySnapshot snapshot)
    {
        var request = _request;
        var response = _response;
        if (response.StatusCode == 101)
        {
            WriteResponseHead(close: false, interim: false);
            await TunnelAsync(upstream).ConfigureAwait(false);
            return false;
        }
        bool close = request.WantsClose || response.Framing == BodyFraming.ReadToClose || _closeRequested || _runtime.IsDraining;
        WriteResponseHead(close, interim: false);
        bool scanUsage = _exchange.TokenChargeCount > 0;
        if (scanUsage) _fw.Usage.Reset();
        CopyResult copied;
        if (response.Framing is BodyFraming.ContentLength or BodyFraming.None)
        {
            // the common response, in this method's own box: no nested state machine per request
            long remaining = response.Framing == BodyFraming.None ? 0 : response.ContentLength;
            copied = CopyResult.Done;
            if (_wafResponseBody is not null)
            {
                // what the WAF's phase 4 read of the body goes first
                int inspected = WriteInspectedBody();
                remaining -= inspected;
                _fw.ResponseBytes = inspected;
            }
            else _fw.ResponseBytes = 0;
            // a large body on the native transport: read (and so send) it in 64 KB pieces
            var bulk = remaining > 2 * Transport.NativeSocket.BulkSize ? upstream.Native : null;
            if (bulk is not null) bulk.Bulk = true;
            do
            {
                if (remaining > 0)
                {
                    ReadResult result;
                    try
                    {
                        result = await upstream.Input.ReadAsync().ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        copied = CopyResult.SourceFailed;
                        break;
                    }
                    long before = remaining;
                    if (!MoveBody(result, upstream.Input, _output, ref remaining, ref _fw.Usage, scanUsage))
                    {
                        copied = CopyResult.SourceEnded;
                        break;
                    }
                    _fw.ResponseBytes += before - remaining;
                }
                var flush = await FlushClient(_fw.ResponseBytes).ConfigureAwait(false);
                _fw.ClientFlushPending = false;
                _fw.ResponseBytes = 0;
                if (flush.IsCompleted)
                {
                    copied = CopyResult.DestinationFailed;
                    break;
                }
            }
            while (remaining > 0);
            if (bulk is not null) bulk.Bulk = false;
        }
        else
        {
            copied = response.Framing == BodyFraming.Chunked
                ? await CopyChunkedAsync(ResponseSource(upstream), _output, long.MaxValue, snapshot.Limits.MaxHeaderBytes, RejectReason.UpstreamMalformedResponse, scanUsage).ConfigureAwait(false)
                : await CopyToEndAsync(upstream.Input, _output, timeClient: true).ConfigureAwait(false);
        }
        bool reusable = EndResponsePrefix() && copied == CopyResult.Done && response.Framing != BodyFraming.ReadToClose && !response.ConnectionClose && !response.AnnouncedBodyIgnored
                        && (response.IsHttp11 || response.ConnectionKeepAlive) && request.IsHttp11;
        ReleaseUpstream(upstream, reusable);
        if (scanUsage) ChargeTokens(route);
        // After a failure with the head already out, the only honest signal left is to close.
        return !close && (copied == CopyResult.Done || response.Framing == BodyFraming.ReadToClose);
    }

    private void ReleaseUpstream(UpstreamConnection upstream, bool reuse)
    {
        if (Interlocked.CompareExchange(ref _fw.ActiveUpstream, null, upstream) != upstream) return; // already dropped
        if (reuse) upstream.Pool.Return(upstream);
        else upstream.Pool.Discard(upstream);
    }

    private void WriteUpstreamHead(PipeWriter output, DestinationModel destination)
    {
        if (!_fw.HasTrace) ResolveTrace(forward: true, _fw.SpanStart);
        HeadRewriter.WriteUpstreamRequest(output, _exchange, destination, CurrentRequestId(), _isTls, _traceParent, dropTraceState: !_fw.IncomingTraceValid);
    }

    private void WriteResponseHead(bool close, bool interim) =>
        HeadRewriter.WriteClientResponse(_output, _response, _exchange,
            _request.RequestId.IsEmpty ? _requestId.AsSpan(0, _fw.RequestIdLength) : _request[_request.RequestId], close, interim,
            _exchange.ResponseLines.AsSpan(0, _exchange.ResponseLinesLength));


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
        if (resume is null) _fw.TrailerLength = 0;
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
                bool ok = chunked.Feed(segment.Span, out int consumed, out var reason, ref _fw.Usage, scanUsage);
                int bodyEnd = wasInTrailers ? 0 : chunked.TrailerStart >= 0 ? chunked.TrailerStart : consumed;
                destination.Write(segment.Span[..bodyEnd]);
                if (bodyEnd < consumed) HoldTrailers(segment.Span[bodyEnd..consumed]);
                consumedTotal += consumed;
                if (!ok)
                {
                    source.AdvanceTo(buffer.GetPosition(consumedTotal));
                    _fw.CopyError = malformedOverride != RejectReason.None ? malformedOverride : reason;
                    return CopyResult.Malformed;
                }
                if (chunked.IsDone)
                {
                    WriteAllowedTrailers(destination, _trailerBuffer.AsSpan(0, _fw.TrailerLength), _runtime.Current.Limits.ProtectedHeaderNames);
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

    private void HoldTrailers(ReadOnlySpan<byte> bytes)
    {
        if (_fw.TrailerLength + bytes.Length > _trailerBuffer.Length)
            Array.Resize(ref _trailerBuffer, Math.Max(Math.Max(256, _trailerBuffer.Length * 2), _fw.TrailerLength + bytes.Length));
        bytes.CopyTo(_trailerBuffer.AsSpan(_fw.TrailerLength));
        _fw.TrailerLength += bytes.Length;
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
            _fw.ClientFlushPending = false;
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
