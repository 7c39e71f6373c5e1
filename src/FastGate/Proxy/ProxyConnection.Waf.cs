using System.Buffers;
using System.Runtime.CompilerServices;
using System.IO.Pipelines;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Routing;

namespace FastGate.Proxy;

// The connection's side of the WAF (routes with a profile only): phase 2 on the buffered body before the lease,
// phases 3–4 on the upstream's response before any of it goes out (profiles with inspectResponses), and the
// per-request record (metrics by profile, rule and outcome; the access log's "waf" field).
internal sealed partial class ProxyConnection
{
    // the response headers as phase 3 reads them (reused), and the body bytes phase 4 read: they go out first
    private List<(string Name, string Value)>? _wafResponseHeaders;
    private byte[]? _wafResponseBody;
    private int _wafResponseBodyLength;

    /// <summary>Runs the WAF's phase 2 on the body read so far (the whole body when it fit requestBufferBytes). True: refuse.</summary>
    private bool InspectBody()
    {
        var tx = _exchange.Waf!;
        _exchange.WafBodyPending = false;
        var body = _fw.BufferedLength > 0 && _bodyBuffer is not null ? _bodyBuffer.AsSpan(0, _fw.BufferedLength) : default;
        return Waf.WafStep.InspectBody(_exchange.Route!.Waf!, tx, body);
    }

    /// <summary>Whether the response phases run on this response (the route's profile inspects responses, and the request's
    /// transaction is still undecided).</summary>
    private bool InspectsResponse(RouteModel route) =>
        route.Waf is { InspectResponses: true } && _exchange.Waf is { ResponseInspected: false } && _response.StatusCode != 101;

    /// <summary>
    /// Phase 3 on the response head, then phase 4 — on the first responseBodyLimit bytes of a Content-Length body of a
    /// listed type, read here (they are written out first by the relay), or without a body. None: relay the response;
    /// WafBlocked: a rule denied it (block mode); an upstream failure while the inspected body was read otherwise.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<RejectReason> InspectResponseAsync(UpstreamConnection upstream, RouteModel route, GatewaySnapshot snapshot)
    {
        var profile = route.Waf!;
        var tx = _exchange.Waf!;
        var response = _response;
        var headers = _wafResponseHeaders ??= [];
        headers.Clear();
        ReadOnlySpan<byte> contentType = default;
        foreach (var h in response.Headers)
        {
            var name = response[h.Name];
            var value = response[h.Value];
            if (contentType.IsEmpty && System.Text.Ascii.EqualsIgnoreCase(name, "content-type"u8)) contentType = value;
            headers.Add((Encoding.Latin1.GetString(name), Encoding.Latin1.GetString(value)));
        }
        bool block = profile.Mode == Waf.WafMode.Block;
        if (tx.EvaluateResponseHeaders(response.StatusCode, response.IsHttp11 ? "HTTP/1.1" : "HTTP/1.0", headers)) return block ? RejectReason.WafBlocked : RejectReason.None;
        // (a HEAD's, 204's or 304's response has framing None: no body to read)
        bool read = (response.Framing == BodyFraming.Chunked || (response.Framing == BodyFraming.ContentLength && response.ContentLength > 0))
                    && profile.ReadsResponseBody(contentType);
        if (!read) return tx.EvaluateResponseBody(default, hasBody: false) && block ? RejectReason.WafBlocked : RejectReason.None;
        if (response.Framing == BodyFraming.Chunked) return await InspectChunkedResponseAsync(upstream, profile, tx, snapshot).ConfigureAwait(false);

        // ProcessPartial: at most the limit is read and inspected; the rest streams after it
        int length = (int)Math.Min(response.ContentLength, profile.ResponseBodyLimit);
        var body = ArrayPool<byte>.Shared.Rent(length);
        int have = 0;
        SetDeadline(snapshot.UpstreamResponseTimeoutTicks, TimeoutKind.UpstreamResponse);
        try
        {
            while (have < length)
            {
                ReadResult result;
                try
                {
                    result = await upstream.Input.ReadAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    ArrayPool<byte>.Shared.Return(body);
                    return _fw.UpstreamTimedOut ? RejectReason.UpstreamResponseTimeout : RejectReason.UpstreamMalformedResponse;
                }
                var buffer = result.Buffer;
                long take = Math.Min(buffer.Length, length - have);
                buffer.Slice(0, take).CopyTo(body.AsSpan(have));
                have += (int)take;
                upstream.Input.AdvanceTo(buffer.GetPosition(take));
                if (have < length && result.IsCompleted && take == buffer.Length)
                {
                    ArrayPool<byte>.Shared.Return(body);
                    return RejectReason.UpstreamMalformedResponse; // the upstream closed before its Content-Length
                }
            }
        }
        finally
        {
            ClearDeadline();
        }
        if (tx.EvaluateResponseBody(body.AsSpan(0, length), hasBody: true) && block)
        {
            ArrayPool<byte>.Shared.Return(body);
            return RejectReason.WafBlocked;
        }
        _wafResponseBody = body;
        _wafResponseBodyLength = length;
        return RejectReason.None;
    }

    // the chunked body's first part as read for phase 4, still framed: the relay's chunked copy reads it first
    private PrefixedReader? _wafPrefix;
    private bool _wafPrefixActive;

    /// <summary>
    /// Phase 4 on a chunked body: its framing read (and validated) until responseBodyLimit bytes of data or its end,
    /// the data taken out of the chunks for RESPONSE_BODY; the framed bytes then go to the relay through
    /// <see cref="PrefixedReader"/>, so the one chunked copy forwards them and the rest alike.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<RejectReason> InspectChunkedResponseAsync(UpstreamConnection upstream, Waf.WafProfile profile, Waf.WafTransaction tx, GatewaySnapshot snapshot)
    {
        int limit = profile.ResponseBodyLimit;
        // the framing costs a few bytes per chunk: a body of tiny chunks stops at twice the limit of framed bytes
        long rawLimit = 2L * limit + 4096;
        var raw = ArrayPool<byte>.Shared.Rent(Math.Min(limit + 1024, 16384));
        int rawLength = 0;
        var chunked = new ChunkedReader(long.MaxValue, snapshot.Limits.MaxHeaderBytes);
        SetDeadline(snapshot.UpstreamResponseTimeoutTicks, TimeoutKind.UpstreamResponse);
        try
        {
            while (!chunked.IsDone && chunked.DataBytes < limit && rawLength < rawLimit)
            {
                ReadResult result;
                try
                {
                    result = await upstream.Input.ReadAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    ArrayPool<byte>.Shared.Return(raw);
                    return _fw.UpstreamTimedOut ? RejectReason.UpstreamResponseTimeout : RejectReason.UpstreamMalformedResponse;
                }
                var buffer = result.Buffer;
                long taken = 0;
                foreach (var segment in buffer)
                {
                    var span = segment.Span;
                    if (rawLength + span.Length > rawLimit) span = span[..(int)(rawLimit - rawLength)];
                    if (!chunked.Feed(span, out int consumed, out _))
                    {
                        upstream.Input.AdvanceTo(buffer.GetPosition(taken));
                        ArrayPool<byte>.Shared.Return(raw);
                        return RejectReason.UpstreamMalformedResponse;
                    }
                    if (rawLength + consumed > raw.Length)
                    {
                        var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(Math.Max(raw.Length * 2L, rawLength + consumed), rawLimit));
                        raw.AsSpan(0, rawLength).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(raw);
                        raw = larger;
                    }
                    span[..consumed].CopyTo(raw.AsSpan(rawLength));
                    rawLength += consumed;
                    taken += consumed;
                    if (chunked.IsDone || chunked.DataBytes >= limit || rawLength >= rawLimit || consumed < segment.Length) break;
                }
                upstream.Input.AdvanceTo(buffer.GetPosition(taken));
                if (!chunked.IsDone && result.IsCompleted && taken == buffer.Length)
                {
                    ArrayPool<byte>.Shared.Return(raw);
                    return RejectReason.UpstreamMalformedResponse; // the upstream closed before the last chunk
                }
            }
        }
        finally
        {
            ClearDeadline();
        }
        var data = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(chunked.DataBytes, 1, limit));
        int length = ChunkData(raw.AsSpan(0, rawLength), data.AsSpan(0, (int)Math.Min(chunked.DataBytes, limit)));
        bool denied = tx.EvaluateResponseBody(data.AsSpan(0, length), hasBody: true);
        ArrayPool<byte>.Shared.Return(data);
        if (denied && profile.Mode == Waf.WafMode.Block)
        {
            ArrayPool<byte>.Shared.Return(raw);
            return RejectReason.WafBlocked;
        }
        (_wafPrefix ??= new PrefixedReader()).Start(raw, rawLength, upstream.Input);
        _wafPrefixActive = true;
        return RejectReason.None;
    }

    /// <summary>The data of a chunked body's framed bytes (validated already), as much as fits in <paramref name="data"/>.</summary>
    internal static int ChunkData(ReadOnlySpan<byte> raw, Span<byte> data)
    {
        int at = 0, written = 0;
        while (written < data.Length && at < raw.Length)
        {
            int lf = raw[at..].IndexOf((byte)'\n');
            if (lf < 0) break;
            long size = 0;
            foreach (var b in raw.Slice(at, lf))
            {
                int digit = HexDigit(b);
                if (digit < 0) break;
                size = size * 16 + digit;
            }
            at += lf + 1;
            if (size == 0) break;
            int n = (int)Math.Min(Math.Min(size, raw.Length - at), data.Length - written);
            raw.Slice(at, n).CopyTo(data[written..]);
            written += n;
            at += (int)Math.Min(size, raw.Length - at);
            if (at < raw.Length && raw[at] == (byte)'\r') at++;
            if (at < raw.Length && raw[at] == (byte)'\n') at++;
        }
        return written;
    }

    private static int HexDigit(byte b) => b is >= (byte)'0' and <= (byte)'9' ? b - '0' : (b | 0x20) is >= 'a' and <= 'f' ? (b | 0x20) - 'a' + 10 : -1;

    /// <summary>The reader the relay's chunked copy reads: the inspected prefix first when phase 4 read one.</summary>
    private PipeReader ResponseSource(UpstreamConnection upstream) => _wafPrefixActive ? _wafPrefix! : upstream.Input;

    /// <summary>Ends the prefix of an inspected chunked body; false when bytes past the message were in it (the
    /// connection is not reused then).</summary>
    private bool EndResponsePrefix()
    {
        if (!_wafPrefixActive) return true;
        _wafPrefixActive = false;
        bool clean = _wafPrefix!.PrefixLeft == 0;
        _wafPrefix.Release();
        return clean;
    }

    /// <summary>Writes the body bytes phase 4 read (after the head) and gives their buffer back; how many.</summary>
    private int WriteInspectedBody()
    {
        var body = _wafResponseBody;
        if (body is null) return 0;
        int n = _wafResponseBodyLength;
        _output.Write(body.AsSpan(0, n));
        DropInspectedBody();
        return n;
    }

    private void DropInspectedBody()
    {
        if (_wafPrefixActive) EndResponsePrefix();
        if (_wafResponseBody is { } body) ArrayPool<byte>.Shared.Return(body);
        _wafResponseBody = null;
        _wafResponseBodyLength = 0;
    }

    private static string? RecordWaf(RouteModel? route, Waf.WafTransaction tx)
    {
        if (route?.Waf is not { } profile) return null;
        profile.Record(tx);
        return Waf.WafProfile.Summary(tx);
    }
}
