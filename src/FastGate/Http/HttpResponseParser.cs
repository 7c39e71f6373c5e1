using System.Buffers;

namespace FastGate.Http;

/// <summary>
/// Parses upstream response heads with the same strictness as requests. Any error means the upstream is
/// answered with 502 and its connection dropped.
/// </summary>
public static class HttpResponseParser
{
    public static ParseStatus TryParse(in ReadOnlySequence<byte> buffer, HttpLimits limits, ResponseHead head,
        HttpMethod requestMethod, out int consumed, out RejectReason reason)
    {
        var data = HeadParser.Linearize(buffer, head, limits.MaxHeadBytes, out bool copied);
        var status = Parse(data, limits, head, requestMethod, out consumed, out reason);
        if (status == ParseStatus.Complete) HeadParser.CommitHead(data, head, consumed, copied);
        return status;
    }

    private static ParseStatus Parse(ReadOnlySpan<byte> data, HttpLimits limits, ResponseHead head, HttpMethod requestMethod,
        out int consumed, out RejectReason reason)
    {
        head.Reset();
        consumed = 0;
        reason = RejectReason.None;
        int lf = data.IndexOf((byte)'\n');
        if (lf < 0)
        {
            if (data.Length > limits.MaxRequestLineBytes) { reason = RejectReason.UpstreamMalformedResponse; return ParseStatus.Error; }
            return ParseStatus.Incomplete;
        }
        if (lf == 0 || data[lf - 1] != (byte)'\r' || !ParseStatusLine(data[..(lf - 1)], head))
        {
            reason = RejectReason.UpstreamMalformedResponse;
            return ParseStatus.Error;
        }
        int pos = lf + 1;
        var status = HeadParser.ParseFields(data, ref pos, head, limits.MaxHeaderBytes, limits.MaxHeaderCount, ref reason,
            RejectReason.UpstreamMalformedResponse, RejectReason.UpstreamMalformedResponse);
        if (status == ParseStatus.Error) reason = RejectReason.UpstreamMalformedResponse;
        if (status != ParseStatus.Complete) return status;

        foreach (ref readonly var f in head.Headers)
            if (f.Known == KnownHeader.XRequestId) head.HasRequestId = true;

        if (!HeadParser.FinishFraming(head, ref reason)) { reason = RejectReason.UpstreamMalformedResponse; return ParseStatus.Error; }
        // RFC 9112 6.3: these never have a body, whatever their headers say.
        if (requestMethod == HttpMethod.Head || head.IsInformational || head.StatusCode is 204 or 304)
        {
            head.AnnouncedBodyIgnored = head.SawTransferEncoding
                || (head.ContentLength > 0 && (requestMethod == HttpMethod.Head || head.StatusCode == 204));
            head.Framing = BodyFraming.None;
        }
        else if (head.Framing == BodyFraming.None)
            head.Framing = BodyFraming.ReadToClose;
        consumed = pos;
        return ParseStatus.Complete;
    }

    private static bool ParseStatusLine(ReadOnlySpan<byte> line, ResponseHead head)
    {
        // HTTP/1.x SP 3DIGIT SP reason-phrase (the SP before an empty reason is sometimes left out)
        if (line.Length < 12) return false;
        if (!line.StartsWith("HTTP/1."u8)) return false;
        if (line[7] == (byte)'1') head.IsHttp11 = true;
        else if (line[7] != (byte)'0') return false;
        if (line[8] != (byte)' ') return false;
        int code = 0;
        for (int i = 9; i < 12; i++)
        {
            uint d = (uint)(line[i] - '0');
            if (d > 9) return false;
            code = code * 10 + (int)d;
        }
        if (code < 100) return false;
        head.StatusCode = code;
        if (line.Length == 12) return true;
        if (line[12] != (byte)' ') return false;
        var reason = line[13..];
        foreach (var b in reason) if (!HttpChars.IsFieldValue(b)) return false;
        head.Reason = new ByteRange(13, reason.Length);
        return true;
    }
}
