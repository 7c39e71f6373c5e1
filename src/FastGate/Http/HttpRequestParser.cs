using System.Buffers;
using System.Text;

namespace FastGate.Http;

/// <summary>
/// Strict RFC 9112 request-head parser. Pure: bytes in, a <see cref="RequestHead"/> and a status out.
/// Nothing is consumed until the whole head is present; a rejected head names its <see cref="RejectReason"/>.
/// </summary>
public static class HttpRequestParser
{
    private const int MaxLeadingEmptyLines = 4;

    public static ParseStatus TryParse(in ReadOnlySequence<byte> buffer, HttpLimits limits, RequestHead head,
        out int consumed, out RejectReason reason)
    {
        var data = HeadParser.Linearize(buffer, head, limits.MaxHeadBytes + MaxLeadingEmptyLines * 2, out bool copied);
        var status = Parse(data, limits, head, out consumed, out reason);
        if (status == ParseStatus.Complete) return Commit(data, limits, head, consumed, copied, out reason);
        return status;
    }

    public static ParseStatus TryParse(ReadOnlySpan<byte> data, HttpLimits limits, RequestHead head,
        out int consumed, out RejectReason reason)
    {
        var status = Parse(data, limits, head, out consumed, out reason);
        if (status == ParseStatus.Complete) return Commit(data, limits, head, consumed, copied: false, out reason);
        return status;
    }

    /// <summary>Copies the complete head into its own buffer, then computes its canonical view (which may still refuse it).</summary>
    private static ParseStatus Commit(ReadOnlySpan<byte> data, HttpLimits limits, RequestHead head, int consumed, bool copied, out RejectReason reason)
    {
        HeadParser.CommitHead(data, head, consumed, copied);
        return RequestCanonicalizer.Apply(head, limits, out reason) ? ParseStatus.Complete : ParseStatus.Error;
    }

    private static ParseStatus Parse(ReadOnlySpan<byte> data, HttpLimits limits, RequestHead head, out int consumed, out RejectReason reason)
    {
        head.Reset();
        consumed = 0;
        reason = RejectReason.None;
        int pos = 0;

        // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
        for (int i = 0; i < MaxLeadingEmptyLines && pos < data.Length && (data[pos] == (byte)'\r' || data[pos] == (byte)'\n'); i++)
        {
            if (data[pos] == (byte)'\n') { reason = RejectReason.BareLineFeed; return ParseStatus.Error; }
            if (pos + 1 >= data.Length) return ParseStatus.Incomplete;
            if (data[pos + 1] != (byte)'\n') { reason = RejectReason.InvalidRequestLine; return ParseStatus.Error; }
            pos += 2;
        }

        var rest = data[pos..];
        int lf = rest.IndexOf((byte)'\n');
        if (lf < 0)
        {
            if (rest.Length > limits.MaxRequestLineBytes + 1) { reason = LineTooLong(rest, limits); return ParseStatus.Error; }
            return EarlyCheck(rest, ref reason);
        }
        if (lf == 0 || rest[lf - 1] != (byte)'\r') { reason = RejectReason.BareLineFeed; return ParseStatus.Error; }
        if (lf - 1 > limits.MaxRequestLineBytes) { reason = LineTooLong(rest, limits); return ParseStatus.Error; }
        if (!ParseRequestLine(rest[..(lf - 1)], pos, head, ref reason)) return ParseStatus.Error;
        pos += lf + 1;

        var status = HeadParser.ParseFields(data, ref pos, head, limits.MaxHeaderBytes, limits.MaxHeaderCount, ref reason,
            RejectReason.HeadersTooLarge, RejectReason.TooManyHeaders);
        if (status != ParseStatus.Complete) return status;

        if (!ApplyRequestFields(data, head, ref reason)) return ParseStatus.Error;
        if (!HeadParser.FinishFraming(head, ref reason)) return ParseStatus.Error;
        if (head.Framing == BodyFraming.ReadToClose) { reason = RejectReason.TransferEncodingNotChunkedLast; return ParseStatus.Error; }
        if (head.SawTransferEncoding && !head.IsHttp11) { reason = RejectReason.TransferEncodingInHttp10; return ParseStatus.Error; }
        if (head.Framing == BodyFraming.ContentLength && head.ContentLength > limits.MaxBodyBytes)
        {
            reason = RejectReason.BodyTooLarge;
            return ParseStatus.Error;
        }
        consumed = pos;
        return ParseStatus.Complete;
    }

    /// <summary>
    /// A request line over the limit: 414 only when the target is what is long. A line with no space within the limit
    /// has a method longer than any request line may be, which is a bad method (400), not a long URI.
    /// </summary>
    private static RejectReason LineTooLong(ReadOnlySpan<byte> line, HttpLimits limits) =>
        line[..Math.Min(line.Length, limits.MaxRequestLineBytes + 1)].IndexOf((byte)' ') < 0 ? RejectReason.InvalidMethod : RejectReason.RequestLineTooLong;

    /// <summary>Rejects an obviously bad method before the request line is complete (cheap defence against junk).</summary>
    private static ParseStatus EarlyCheck(ReadOnlySpan<byte> partialLine, ref RejectReason reason)
    {
        int sp = partialLine.IndexOf((byte)' ');
        var method = sp < 0 ? partialLine : partialLine[..sp];
        foreach (var b in method)
            if (!HttpChars.IsToken(b) && b != (byte)'\r') { reason = RejectReason.InvalidMethod; return ParseStatus.Error; }
        return ParseStatus.Incomplete;
    }

    private static bool ParseRequestLine(ReadOnlySpan<byte> line, int offset, RequestHead head, ref RejectReason reason)
    {
        int sp1 = line.IndexOf((byte)' ');
        if (sp1 <= 0) { reason = RejectReason.InvalidRequestLine; return false; }
        var method = line[..sp1];
        if (!HttpChars.IsTokenSpan(method)) { reason = RejectReason.InvalidMethod; return false; }
        head.MethodRange = new ByteRange(offset, sp1);
        head.Method = ClassifyMethod(method);

        var afterMethod = line[(sp1 + 1)..];
        int sp2 = afterMethod.IndexOf((byte)' ');
        if (sp2 <= 0) { reason = RejectReason.InvalidRequestLine; return false; }
        var target = afterMethod[..sp2];
        var version = afterMethod[(sp2 + 1)..];
        int targetStart = offset + sp1 + 1;

        if (version.SequenceEqual("HTTP/1.1"u8)) head.IsHttp11 = true;
        else if (version.SequenceEqual("HTTP/1.0"u8)) head.IsHttp11 = false;
        else
        {
            bool wellFormed = version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5])
                              && version[6] == (byte)'.' && char.IsAsciiDigit((char)version[7]);
            reason = wellFormed ? RejectReason.UnsupportedHttpVersion : RejectReason.InvalidRequestLine;
            return false;
        }

        head.Target = new ByteRange(targetStart, target.Length);
        return ParseTarget(target, targetStart, head, ref reason);
    }

    private static bool ParseTarget(ReadOnlySpan<byte> target, int start, RequestHead head, ref RejectReason reason)
    {
        if (target[0] == (byte)'/')
        {
            if (!HttpChars.IsValidTarget(target)) { reason = RejectReason.InvalidRequestTarget; return false; }
            if (SplitPathAndQuery(target, start, head)) return true;
            reason = RejectReason.InvalidRequestTarget;
            return false;
        }
        if (target.Length == 1 && target[0] == (byte)'*')
        {
            if (head.Method != HttpMethod.Options) { reason = RejectReason.InvalidRequestTarget; return false; }
            head.IsAsteriskForm = true;
            head.Path = new ByteRange(start, 1);
            return true;
        }
        // absolute-form: accepted and normalised (RFC 9112 3.2.2: its authority replaces the Host header)
        int schemeLength = StartsWithIgnoreCase(target, "http://"u8) ? 7 : StartsWithIgnoreCase(target, "https://"u8) ? 8 : 0;
        if (schemeLength == 0 || head.Method == HttpMethod.Connect) { reason = RejectReason.InvalidRequestTarget; return false; }
        var afterScheme = target[schemeLength..];
        int pathStart = afterScheme.IndexOfAny((byte)'/', (byte)'?');
        var authority = pathStart < 0 ? afterScheme : afterScheme[..pathStart];
        if (authority.IsEmpty || authority.Contains((byte)'@') || !HttpChars.IsValidHost(authority))
        {
            reason = RejectReason.InvalidRequestTarget;
            return false;
        }
        head.IsAbsoluteForm = true;
        head.Host = new ByteRange(start + schemeLength, authority.Length);
        head.HasHost = true;
        if (pathStart < 0)
        {
            head.Path = default; // empty path: forwarded as "/"
            return true;
        }
        var pathAndQuery = afterScheme[pathStart..];
        if (!HttpChars.IsValidTarget(pathAndQuery)) { reason = RejectReason.InvalidRequestTarget; return false; }
        if (SplitPathAndQuery(pathAndQuery, start + schemeLength + pathStart, head)) return true;
        reason = RejectReason.InvalidRequestTarget;
        return false;
    }

    private static bool SplitPathAndQuery(ReadOnlySpan<byte> s, int start, RequestHead head)
    {
        int q = s.IndexOf((byte)'?');
        // "/./" and "/../" segments are refused rather than normalised, so no rule can be bypassed with them
        if (RequestCanonicalizer.HasDotSegment(q < 0 ? s : s[..q])) return false;
        if (q < 0)
        {
            head.Path = new ByteRange(start, s.Length);
        }
        else
        {
            head.Path = new ByteRange(start, q);
            head.Query = new ByteRange(start + q, s.Length - q);
        }
        return true;
    }

    private static bool ApplyRequestFields(ReadOnlySpan<byte> data, RequestHead head, ref RejectReason reason)
    {
        foreach (ref readonly var f in head.Headers)
        {
            switch (f.Known)
            {
                case KnownHeader.Host:
                    head.HostCount++;
                    if (head.HostCount > 1) { reason = RejectReason.MultipleHost; return false; }
                    var host = data.Slice(f.Value.Start, f.Value.Length);
                    if (host.IsEmpty) { reason = RejectReason.EmptyHost; return false; } // in HTTP/1.0 too
                    if (!HttpChars.IsValidHost(host)) { reason = RejectReason.InvalidHost; return false; }
                    if (!head.IsAbsoluteForm) { head.Host = f.Value; head.HasHost = true; }
                    break;
                case KnownHeader.Expect:
                    if (!Ascii.EqualsIgnoreCase(data.Slice(f.Value.Start, f.Value.Length), "100-continue"u8))
                    {
                        reason = RejectReason.ExpectationFailed;
                        return false;
                    }
                    head.ExpectContinue = head.IsHttp11; // RFC 9110 10.1.1: ignored in an HTTP/1.0 request (no 1xx to 1.0)
                    break;
                case KnownHeader.XRequestId:
                    var id = data.Slice(f.Value.Start, f.Value.Length);
                    if (head.RequestId.IsEmpty && id.Length is > 0 and <= 128 && HttpChars.IsTokenSpan(id)) head.RequestId = f.Value;
                    break;
                case KnownHeader.Upgrade:
                    head.Upgrade = f.Value;
                    break;
            }
        }
        if (head.IsHttp11 && head.HostCount == 0) { reason = RejectReason.MissingHost; return false; }
        return true;
    }

    private static bool StartsWithIgnoreCase(ReadOnlySpan<byte> s, ReadOnlySpan<byte> prefix) =>
        s.Length >= prefix.Length && Ascii.EqualsIgnoreCase(s[..prefix.Length], prefix);

    public static HttpMethod ClassifyMethod(ReadOnlySpan<byte> m) => m.Length switch
    {
        3 when m.SequenceEqual("GET"u8) => HttpMethod.Get,
        3 when m.SequenceEqual("PUT"u8) => HttpMethod.Put,
        4 when m.SequenceEqual("POST"u8) => HttpMethod.Post,
        4 when m.SequenceEqual("HEAD"u8) => HttpMethod.Head,
        5 when m.SequenceEqual("PATCH"u8) => HttpMethod.Patch,
        5 when m.SequenceEqual("TRACE"u8) => HttpMethod.Trace,
        6 when m.SequenceEqual("DELETE"u8) => HttpMethod.Delete,
        7 when m.SequenceEqual("OPTIONS"u8) => HttpMethod.Options,
        7 when m.SequenceEqual("CONNECT"u8) => HttpMethod.Connect,
        _ => HttpMethod.Other,
    };
}
