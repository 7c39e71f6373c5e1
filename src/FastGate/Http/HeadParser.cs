using System.Buffers;
using System.Text;

namespace FastGate.Http;

public enum ParseStatus : byte { Incomplete, Complete, Error }

/// <summary>
/// The field-section rules RFC 9112 gives requests and responses alike, applied to a contiguous head.
/// A head is parsed whole each time more bytes arrive, so a head split across segments or reads gives the
/// same result as the same bytes in one piece.
/// </summary>
internal static class HeadParser
{
    /// <summary>
    /// Copies a head that straddles segments into the head's own buffer (at most <paramref name="max"/> bytes),
    /// or returns the single segment as is.
    /// </summary>
    public static ReadOnlySpan<byte> Linearize(in ReadOnlySequence<byte> buffer, MessageHead head, int max, out bool copied)
    {
        if (buffer.IsSingleSegment)
        {
            copied = false;
            var first = buffer.FirstSpan;
            return first.Length > max ? first[..max] : first;
        }
        int len = (int)Math.Min(buffer.Length, max);
        var dest = head.EnsureBuffer(len);
        buffer.Slice(0, len).CopyTo(dest);
        copied = true;
        return dest[..len];
    }

    public static void CommitHead(ReadOnlySpan<byte> data, MessageHead head, int length, bool copied)
    {
        if (!copied) data[..length].CopyTo(head.EnsureBuffer(length));
        head.Length = length;
    }

    /// <summary>
    /// Parses header lines starting at <paramref name="pos"/> up to and including the empty line.
    /// Returns Incomplete when the empty line has not arrived yet.
    /// </summary>
    public static ParseStatus ParseFields(ReadOnlySpan<byte> data, ref int pos, MessageHead head, int maxHeaderBytes,
        int maxHeaderCount, ref RejectReason reason, RejectReason tooLarge, RejectReason tooMany)
    {
        int sectionStart = pos;
        int count = 0;
        while (true)
        {
            var rest = data[pos..];
            int lf = rest.IndexOf((byte)'\n');
            if (lf < 0)
            {
                if (pos - sectionStart + rest.Length > maxHeaderBytes + 2) { reason = tooLarge; return ParseStatus.Error; }
                return ParseStatus.Incomplete;
            }
            if (lf == 0 || rest[lf - 1] != (byte)'\r') { reason = RejectReason.BareLineFeed; return ParseStatus.Error; }
            var line = rest[..(lf - 1)];
            int lineStart = pos;
            pos += lf + 1;
            if (line.IsEmpty) return ParseStatus.Complete;
            if (pos - sectionStart > maxHeaderBytes) { reason = tooLarge; return ParseStatus.Error; }
            if (++count > maxHeaderCount) { reason = tooMany; return ParseStatus.Error; }
            if (!ParseField(line, lineStart, head, ref reason)) return ParseStatus.Error;
        }
    }

    private static bool ParseField(ReadOnlySpan<byte> line, int lineStart, MessageHead head, ref RejectReason reason)
    {
        byte first = line[0];
        if (first == (byte)' ' || first == (byte)'\t') { reason = RejectReason.ObsoleteLineFolding; return false; }
        int colon = line.IndexOf((byte)':');
        if (colon <= 0) { reason = RejectReason.InvalidHeaderName; return false; }
        var name = line[..colon];
        for (int i = 0; i < name.Length; i++)
        {
            byte b = name[i];
            if (HttpChars.IsToken(b)) continue;
            reason = b == (byte)' ' || b == (byte)'\t' ? RejectReason.WhitespaceBeforeColon : RejectReason.InvalidHeaderName;
            return false;
        }
        var raw = line[(colon + 1)..];
        int vs = 0, ve = raw.Length;
        while (vs < ve && (raw[vs] == (byte)' ' || raw[vs] == (byte)'\t')) vs++;
        while (ve > vs && (raw[ve - 1] == (byte)' ' || raw[ve - 1] == (byte)'\t')) ve--;
        var value = raw[vs..ve];
        foreach (var b in value)
            if (!HttpChars.IsFieldValue(b)) { reason = RejectReason.InvalidHeaderValue; return false; }

        var known = MessageHead.Classify(name);
        var field = new HeaderField(new ByteRange(lineStart, colon), new ByteRange(lineStart + colon + 1 + vs, value.Length), known);
        head.AddHeader(field);
        switch (known)
        {
            case KnownHeader.ContentLength:
                return ApplyContentLength(value, head, ref reason);
            case KnownHeader.TransferEncoding:
                return ApplyTransferEncoding(value, head, ref reason);
            case KnownHeader.Connection:
                ApplyConnection(value, field.Value.Start, head);
                return true;
        }
        return true;
    }

    private static bool ApplyContentLength(ReadOnlySpan<byte> value, MessageHead head, ref RejectReason reason)
    {
        // 1*DIGIT, or a list of identical values ("5, 5") which RFC 9110 8.6 lets a recipient accept as one.
        while (true)
        {
            int comma = value.IndexOf((byte)',');
            var item = HttpChars.TrimOws(comma < 0 ? value : value[..comma]);
            if (!HttpChars.TryParseDecimal(item, out long n)) { reason = RejectReason.InvalidContentLength; return false; }
            if (head.ContentLength >= 0 && head.ContentLength != n) { reason = RejectReason.ConflictingContentLength; return false; }
            head.ContentLength = n;
            if (comma < 0) return true;
            value = value[(comma + 1)..];
        }
    }

    private static bool ApplyTransferEncoding(ReadOnlySpan<byte> value, MessageHead head, ref RejectReason reason)
    {
        head.SawTransferEncoding = true;
        while (true)
        {
            int comma = value.IndexOf((byte)',');
            var item = HttpChars.TrimOws(comma < 0 ? value : value[..comma]);
            int semi = item.IndexOf((byte)';');
            var coding = HttpChars.TrimOws(semi < 0 ? item : item[..semi]);
            // A bad coding is remembered rather than returned: with a Content-Length anywhere in the head the message
            // is a framing error (400) whatever its codings, which only FinishFraming can tell.
            if (coding.IsEmpty) { head.TransferEncodingError = RejectReason.TransferEncodingNotChunkedLast; return true; }
            bool chunked = Ascii.EqualsIgnoreCase(coding, "chunked"u8);
            if (chunked)
            {
                if (semi >= 0 || head.ChunkedCount > 0) { head.TransferEncodingError = RejectReason.TransferEncodingNotChunkedLast; return true; }
                head.ChunkedCount++;
            }
            else if (!(Ascii.EqualsIgnoreCase(coding, "gzip"u8) || Ascii.EqualsIgnoreCase(coding, "x-gzip"u8)
                       || Ascii.EqualsIgnoreCase(coding, "deflate"u8) || Ascii.EqualsIgnoreCase(coding, "compress"u8)
                       || Ascii.EqualsIgnoreCase(coding, "x-compress"u8)))
            {
                head.TransferEncodingError = HttpChars.IsTokenSpan(coding) ? RejectReason.UnknownTransferCoding : RejectReason.TransferEncodingNotChunkedLast;
                return true;
            }
            head.TransferEncodingChunkedLast = chunked;
            if (comma < 0) return true;
            value = value[(comma + 1)..];
        }
    }

    private static void ApplyConnection(ReadOnlySpan<byte> value, int valueStart, MessageHead head)
    {
        int offset = 0;
        while (offset <= value.Length)
        {
            var rest = value[offset..];
            int comma = rest.IndexOf((byte)',');
            var item = comma < 0 ? rest : rest[..comma];
            int lead = 0;
            while (lead < item.Length && (item[lead] == (byte)' ' || item[lead] == (byte)'\t')) lead++;
            var token = HttpChars.TrimOws(item);
            if (!token.IsEmpty)
            {
                if (Ascii.EqualsIgnoreCase(token, "close"u8)) head.ConnectionClose = true;
                else if (Ascii.EqualsIgnoreCase(token, "keep-alive"u8)) head.ConnectionKeepAlive = true;
                else if (Ascii.EqualsIgnoreCase(token, "upgrade"u8)) head.ConnectionUpgrade = true;
                head.AddConnectionToken(new ByteRange(valueStart + offset + lead, token.Length));
            }
            if (comma < 0) break;
            offset += comma + 1;
        }
    }

    /// <summary>Framing rules shared by both directions once the field section is complete.</summary>
    public static bool FinishFraming(MessageHead head, ref RejectReason reason)
    {
        if (head.SawTransferEncoding)
        {
            if (head.ContentLength >= 0) { reason = RejectReason.ContentLengthWithTransferEncoding; return false; }
            if (head.TransferEncodingError != RejectReason.None) { reason = head.TransferEncodingError; return false; }
            head.Framing = head.TransferEncodingChunkedLast ? BodyFraming.Chunked : BodyFraming.ReadToClose;
        }
        else if (head.ContentLength >= 0)
        {
            head.Framing = BodyFraming.ContentLength;
        }
        return true;
    }
}
