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
        bool read = response.Framing == BodyFraming.ContentLength && response.ContentLength > 0 && profile.ReadsResponseBody(contentType);
        if (!read) return tx.EvaluateResponseBody(default, hasBody: false) && block ? RejectReason.WafBlocked : RejectReason.None;

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
