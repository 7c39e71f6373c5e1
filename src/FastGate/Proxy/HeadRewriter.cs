using System.IO.Pipelines;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Routing;

namespace FastGate.Proxy;

/// <summary>
/// The two head rewrites of a proxied exchange, as pure functions of the decided <see cref="Pipeline.Exchange"/> (its
/// request, route, identities, policy result and snapshot) and the parsed response.
/// </summary>
public static class HeadRewriter
{
    /// <summary>
    /// Writes the request head sent upstream: hop-by-hop headers removed, forwarding headers set. A non-empty
    /// <paramref name="traceParent"/> replaces the client's traceparent; <paramref name="dropTraceState"/> drops
    /// tracestate (W3C Trace Context: when the incoming traceparent was invalid).
    /// </summary>
    public static void WriteUpstreamRequest(PipeWriter output, Pipeline.Exchange x, DestinationModel destination, ReadOnlySpan<byte> requestId,
        bool tls, ReadOnlySpan<byte> traceParent = default, bool dropTraceState = false)
    {
        var snapshot = x.Snapshot ?? throw new InvalidOperationException("the exchange was not decided");
        WriteUpstreamRequest(output, x.Request, x.Route ?? throw new InvalidOperationException("the exchange has no route"), destination,
            x.PeerIp, requestId, http10: !x.Request.IsHttp11, snapshot.Policy, x.Policy, snapshot.Authenticator, x.Consumer, snapshot.Devices,
            x.Device, tls, traceParent, dropTraceState, x.PeerTrusted);
    }

    /// <summary>Writes the response head sent to the client: hop-by-hop headers removed, request id and Connection set.</summary>
    public static void WriteClientResponse(PipeWriter output, ResponseHead resp, Pipeline.Exchange x, ReadOnlySpan<byte> requestId, bool close,
        bool interim, ReadOnlySpan<byte> extraHeaders = default) =>
        WriteClientResponse(output, resp, x.Request, requestId, close, interim, x.Snapshot?.Policy ?? CompiledPolicy.Empty, x.Policy, extraHeaders);

    private static void WriteUpstreamRequest(PipeWriter output, RequestHead r, RouteModel route, DestinationModel destination,
        ReadOnlySpan<byte> clientIp, ReadOnlySpan<byte> requestId, bool http10, CompiledPolicy policy, PolicyResult decision,
        Security.ApiKeyAuthenticator auth, Security.ConsumerModel? consumer, Security.DeviceTable devices, Security.DeviceModel? device, bool tls,
        ReadOnlySpan<byte> traceParent, bool dropTraceState, bool fromTrustedProxy)
    {
        bool edits = HasEdits(policy, decision, response: false);
        var w = new HeadWriter(output);
        w.Write(r[r.MethodRange]);
        w.Write((byte)' ');
        if (r.IsAsteriskForm)
        {
            w.Write((byte)'*');
        }
        else if (decision.RewriteRule >= 0)
        {
            w.Write(policy.Rules[decision.RewriteRule].RewritePath);
            WriteQuery(ref w, r[r.Query], route.ForwardApiKey ? default : auth.KeyQueryPrefix);
        }
        else
        {
            // the canonical path: what the route and the rules were matched on (the bytes sent when already canonical)
            var path = r.CanonicalPath;
            var strip = route.StripPrefix;
            if (strip.Length > 0 && path.StartsWith(strip) && (path.Length == strip.Length || path[strip.Length] == (byte)'/'))
            {
                path = path[strip.Length..];
                if (path.IsEmpty) w.Write((byte)'/');
            }
            w.Write(path);
            WriteQuery(ref w, r[r.Query], route.ForwardApiKey ? default : auth.KeyQueryPrefix);
        }
        w.Write(http10 ? " HTTP/1.0\r\nHost: "u8 : " HTTP/1.1\r\nHost: "u8);
        w.Write(route.PreserveHost ? r.CanonicalAuthority : destination.Authority);
        w.Write("\r\n"u8);

        bool hasForwardedFor = false;
        bool lengthWritten = false;
        foreach (ref readonly var f in r.Headers)
        {
            switch (f.Known)
            {
                case KnownHeader.ContentLength:
                    // "5, 5" or repeated equal lines (accepted by the parser) go on as one Content-Length
                    if (!lengthWritten) WriteContentLength(ref w, r.ContentLength);
                    lengthWritten = true;
                    continue;
                case KnownHeader.Host:
                case KnownHeader.Expect:
                case KnownHeader.XForwardedProto:
                case KnownHeader.XForwardedHost:
                case KnownHeader.XRequestId:
                case KnownHeader.Spoofed: // "X_Consumer_Id" and the like (RequestCanonicalizer)
                    continue;
                case KnownHeader.XForwardedFor:
                    hasForwardedFor = true;
                    continue;
            }
            if (r.IsHopByHop(f)) continue;
            if (!fromTrustedProxy && IsClientAddressClaim(r[f.Name])) continue;
            if (!traceParent.IsEmpty && Observability.TraceContext.IsReplacedHeader(r[f.Name], dropTraceState)) continue;
            if (edits && IsEdited(policy, decision, r[f.Name], response: false)) continue;
            if (IsCredentialOrIdentity(r, f, auth, route.ForwardApiKey)) continue;
            if (System.Text.Ascii.EqualsIgnoreCase(r[f.Name], devices.HeaderName)) continue; // the gateway's to set
            if (route.UpstreamCredentialName is { } credential && System.Text.Ascii.EqualsIgnoreCase(r[f.Name], credential)) continue;
            w.Write(r[f.Name]);
            w.Write(": "u8);
            w.Write(r[f.Value]);
            w.Write("\r\n"u8);
        }
        if (edits)
        {
            foreach (int i in decision.Matched) w.Write(policy.Rules[i].SetRequestHeaderLines);
        }
        if (consumer is not null) w.Write(consumer.ForwardedHeaderLine);
        if (device is not null) w.Write(device.ForwardedHeaderLine);
        if (route.UpstreamCredentialLine is { } secret) w.Write(secret); // key injection: the client never sees or sets it

        w.Write("X-Forwarded-For: "u8);
        if (hasForwardedFor)
        {
            foreach (ref readonly var f in r.Headers)
            {
                if (f.Known != KnownHeader.XForwardedFor || f.Value.IsEmpty) continue;
                w.Write(r[f.Value]);
                w.Write(", "u8);
            }
        }
        w.Write(clientIp);
        w.Write(tls ? "\r\nX-Forwarded-Proto: https\r\n"u8 : "\r\nX-Forwarded-Proto: http\r\n"u8);
        if (r.HasHost)
        {
            w.WriteHeader("X-Forwarded-Host: "u8, r.CanonicalAuthority);
        }
        w.WriteHeader("X-Request-Id: "u8, requestId);
        if (!traceParent.IsEmpty)
        {
            w.WriteHeader("traceparent: "u8, traceParent);
        }
        if (r.IsUpgrade)
        {
            w.Write("Connection: Upgrade\r\nUpgrade: "u8);
            w.Write(r[r.Upgrade]);
            w.Write("\r\n"u8);
        }
        else if (http10)
        {
            w.Write("Connection: close\r\n"u8);
        }
        w.Write("\r\n"u8);
        w.Commit();
    }

    private static void WriteClientResponse(PipeWriter output, ResponseHead resp, RequestHead request, ReadOnlySpan<byte> requestId, bool close, bool interim,
        CompiledPolicy policy, PolicyResult decision, ReadOnlySpan<byte> extraHeaders)
    {
        bool edits = !interim && HasEdits(policy, decision, response: true);
        var w = new HeadWriter(output);
        w.WriteStatusLine(resp.StatusCode, resp[resp.Reason]);
        // no framing fields on a 1xx or 204 (RFC 9110 8.6, RFC 9112 6.1); a 304 keeps its Content-Length (RFC 9110 8.6)
        bool noFraming = resp.IsInformational || resp.StatusCode == 204;
        bool lengthWritten = false;
        foreach (ref readonly var f in resp.Headers)
        {
            if (resp.IsHopByHop(f)) continue;
            if (edits && IsEdited(policy, decision, resp[f.Name], response: true)) continue;
            if (f.Known == KnownHeader.ContentLength)
            {
                // "5, 5" or repeated equal lines (accepted by the parser) go on as one Content-Length
                if (!noFraming && !lengthWritten) WriteContentLength(ref w, resp.ContentLength);
                lengthWritten = true;
                continue;
            }
            if (f.Known == KnownHeader.TransferEncoding && noFraming) continue;
            w.Write(resp[f.Name]);
            w.Write(": "u8);
            w.Write(resp[f.Value]);
            w.Write("\r\n"u8);
        }
        if (edits)
        {
            foreach (int i in decision.Matched) w.Write(policy.Rules[i].SetResponseHeaderLines);
        }
        if (!interim)
        {
            w.Write(extraHeaders); // rate-limit quota and CORS headers
            if (!resp.HasRequestId)
            {
                w.Write("X-Request-Id: "u8);
                w.Write(requestId);
                w.Write("\r\n"u8);
            }
            if (resp.StatusCode == 101)
            {
                w.Write("Connection: Upgrade\r\n"u8);
                if (resp.TryGetHeader("upgrade"u8, out var upgrade))
                {
                    w.Write("Upgrade: "u8);
                    w.Write(upgrade);
                    w.Write("\r\n"u8);
                }
            }
            else if (close) w.Write("Connection: close\r\n"u8);
            else if (!request.IsHttp11) w.Write("Connection: keep-alive\r\n"u8);
        }
        w.Write("\r\n"u8);
        w.Commit();
    }


    private static void WriteContentLength(ref HeadWriter w, long length)
    {
        w.Write("Content-Length: "u8);
        w.WriteNumber(length);
        w.Write("\r\n"u8);
    }

    /// <summary>
    /// The identity headers (consumer, token subject and issuer) are the gateway's to set: a client's copy is always dropped (no spoofing). The API key is
    /// dropped unless the route forwards it.
    /// </summary>
    private static bool IsCredentialOrIdentity(RequestHead r, in HeaderField f, Security.ApiKeyAuthenticator auth, bool forwardApiKey)
    {
        var name = r[f.Name];
        if (auth.IsIdentityHeader(name)) return true; // X-Consumer-Id, X-Subject-Id, X-Subject-Issuer
        if (forwardApiKey) return false;
        if (System.Text.Ascii.EqualsIgnoreCase(name, auth.KeyHeaderName)) return true;
        var value = r[f.Value];
        return System.Text.Ascii.EqualsIgnoreCase(name, "authorization"u8) && value.Length > 7
               && System.Text.Ascii.EqualsIgnoreCase(value[..7], "ApiKey "u8);
    }

    /// <summary>
    /// The query as sent, without the API-key parameter (<paramref name="keyPrefix"/> is "name=", empty when the key is
    /// forwarded or no query parameter is configured): a credential the gateway consumed never reaches the upstream.
    /// </summary>
    private static void WriteQuery(ref HeadWriter w, ReadOnlySpan<byte> query, ReadOnlySpan<byte> keyPrefix)
    {
        if (keyPrefix.IsEmpty || query.IsEmpty || query.IndexOf(keyPrefix) < 0)
        {
            w.Write(query);
            return;
        }
        var rest = query[1..];
        bool first = true;
        while (true)
        {
            int amp = rest.IndexOf((byte)'&');
            var pair = amp < 0 ? rest : rest[..amp];
            if (!pair.StartsWith(keyPrefix) && !pair.IsEmpty)
            {
                w.Write(first ? (byte)'?' : (byte)'&');
                w.Write(pair);
                first = false;
            }
            if (amp < 0) break;
            rest = rest[(amp + 1)..];
        }
    }

    /// <summary>Forwarded and X-Real-IP name the client; only a trusted proxy may say who that is.</summary>
    private static bool IsClientAddressClaim(ReadOnlySpan<byte> name) =>
        name.Length == 9 && (System.Text.Ascii.EqualsIgnoreCase(name, "forwarded"u8) || System.Text.Ascii.EqualsIgnoreCase(name, "x-real-ip"u8));

    private static bool HasEdits(CompiledPolicy policy, PolicyResult decision, bool response)
    {
        foreach (int i in decision.Matched)
            if (response ? policy.Rules[i].HasResponseHeaderActions : policy.Rules[i].HasRequestHeaderActions) return true;
        return false;
    }

    /// <summary>True when a matched rule sets or removes this header (the original field is then dropped).</summary>
    private static bool IsEdited(CompiledPolicy policy, PolicyResult decision, ReadOnlySpan<byte> name, bool response)
    {
        foreach (int i in decision.Matched)
        {
            var rule = policy.Rules[i];
            if (Contains(response ? rule.SetResponseHeaderNames : rule.SetRequestHeaderNames, name)) return true;
            if (Contains(response ? rule.RemoveResponseHeaderNames : rule.RemoveRequestHeaderNames, name)) return true;
        }
        return false;
    }

    private static bool Contains(byte[][] names, ReadOnlySpan<byte> name)
    {
        foreach (var n in names)
            if (System.Text.Ascii.EqualsIgnoreCase(n, name)) return true;
        return false;
    }
}
