namespace FastGate.Http;

/// <summary>
/// Incremental validator for a chunked message body (RFC 9112 7.1). Bytes are fed in any pieces; it reports how
/// many belong to the body so the caller can forward them verbatim, counts the decoded data against the body
/// limit, and stops exactly at the end of the trailer section (what follows belongs to the next message).
/// </summary>
public struct ChunkedReader
{
    // The chunk-ext grammar (RFC 9112 7.1.1): *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
    // Order matters: every state from TrailerStart on is part of the trailer section (see InTrailers).
    private enum State : byte
    {
        Size, SizeOws, ExtensionSemicolon, ExtensionName, ExtensionNameOws, ExtensionEquals, ExtensionValue, ExtensionValueOws,
        ExtensionQuoted, ExtensionEscape, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerLine, TrailerLf, FinalLf, Done,
    }

    private State _state;
    private long _chunkRemaining;
    private int _sizeDigits;
    private long _dataTotal;
    private int _trailerBytes;
    private int _lineBytes;
    private long _extensionTotal;
    private int _trailerStart;
    private readonly long _maxBody;
    private readonly int _maxTrailerBytes;

    public ChunkedReader(long maxBodyBytes, int maxTrailerBytes)
    {
        _maxBody = maxBodyBytes;
        _maxTrailerBytes = maxTrailerBytes;
        _state = State.Size;
        _trailerStart = -1;
    }

    /// <summary>
    /// Longest chunk line (size, extensions and CRLF) accepted: far above any real extension, small enough that
    /// extensions cannot carry a second body past <c>maxBodyBytes</c> (longer: <see cref="RejectReason.ChunkExtensionTooLong"/>).
    /// </summary>
    public const int MaxChunkLineBytes = 4096;

    public readonly bool IsDone => _state == State.Done;
    /// <summary>True once the last chunk's line has ended: what follows is the trailer section (and its final CRLF).</summary>
    public readonly bool InTrailers => _state >= State.TrailerStart;
    /// <summary>Where in the input of the last <c>Feed</c> the trailer section began, or -1 when it did not begin in it.</summary>
    public readonly int TrailerStart => _trailerStart;
    public readonly long DataBytes => _dataTotal;

    /// <summary>
    /// Consumes body bytes from <paramref name="input"/>. Returns false with a reason on malformed framing.
    /// <paramref name="consumed"/> counts the bytes that belong to this body (all of the input unless it ended).
    /// </summary>
    public bool Feed(ReadOnlySpan<byte> input, out int consumed, out RejectReason reason)
    {
        var none = default(UsageScanner);
        return Feed(input, out consumed, out reason, ref none, scan: false);
    }

    /// <summary>As <see cref="Feed(ReadOnlySpan{byte}, out int, out RejectReason)"/>; with <paramref name="scan"/> the chunk
    /// data (without the framing) also goes through <paramref name="usage"/>.</summary>
    public bool Feed(ReadOnlySpan<byte> input, out int consumed, out RejectReason reason, ref UsageScanner usage, bool scan)
    {
        reason = RejectReason.None;
        _trailerStart = -1;
        int i = 0;
        while (i < input.Length && _state != State.Done)
        {
            byte b = input[i];
            if (_state <= State.SizeLf && ++_lineBytes > MaxChunkLineBytes) { reason = RejectReason.ChunkExtensionTooLong; goto Fail; }
            switch (_state)
            {
                case State.Size:
                    if (HttpChars.IsHex(b))
                    {
                        if (++_sizeDigits > 15) { reason = RejectReason.InvalidChunkSize; goto Fail; }
                        _chunkRemaining = (_chunkRemaining << 4) | (long)HexValue(b);
                        i++;
                        break;
                    }
                    if (_sizeDigits == 0) { reason = RejectReason.InvalidChunkSize; goto Fail; }
                    if (b == (byte)'\r') { _state = State.SizeLf; i++; break; }
                    if (b == (byte)';') { _state = State.ExtensionSemicolon; i++; break; }
                    if (b == (byte)' ' || b == (byte)'\t') { _state = State.SizeOws; i++; break; }
                    reason = RejectReason.InvalidChunkSize;
                    goto Fail;
                case State.SizeOws: // BWS before a chunk extension
                    if (b == (byte)' ' || b == (byte)'\t') { i++; break; }
                    if (b == (byte)';') { _state = State.ExtensionSemicolon; i++; break; }
                    reason = RejectReason.InvalidChunkSize;
                    goto Fail;
                case State.ExtensionSemicolon: // a name must follow each ';'
                    if (b == (byte)' ' || b == (byte)'\t') { i++; break; }
                    if (!HttpChars.IsToken(b)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    _state = State.ExtensionName;
                    i++;
                    break;
                case State.ExtensionName:
                    if (HttpChars.IsToken(b)) { i++; break; }
                    if (!AfterExtensionItem(b, allowEquals: true)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    i++;
                    break;
                case State.ExtensionNameOws:
                    if (!AfterExtensionItem(b, allowEquals: true)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    i++;
                    break;
                case State.ExtensionEquals: // a value must follow '='
                    if (b == (byte)' ' || b == (byte)'\t') { i++; break; }
                    if (b == (byte)'"') { _state = State.ExtensionQuoted; i++; break; }
                    if (!HttpChars.IsToken(b)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    _state = State.ExtensionValue;
                    i++;
                    break;
                case State.ExtensionValue:
                    if (HttpChars.IsToken(b)) { i++; break; }
                    if (!AfterExtensionItem(b, allowEquals: false)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    i++;
                    break;
                case State.ExtensionValueOws:
                    if (!AfterExtensionItem(b, allowEquals: false)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    i++;
                    break;
                case State.ExtensionQuoted:
                    if (b == (byte)'"') { _state = State.ExtensionValueOws; i++; break; }
                    if (b == (byte)'\\') { _state = State.ExtensionEscape; i++; break; }
                    if (HttpChars.IsFieldValue(b)) { i++; break; }
                    reason = RejectReason.InvalidChunkExtension;
                    goto Fail;
                case State.ExtensionEscape:
                    if (!HttpChars.IsFieldValue(b)) { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    _state = State.ExtensionQuoted;
                    i++;
                    break;
                case State.SizeLf:
                    if (b != (byte)'\n') { reason = RejectReason.InvalidChunkExtension; goto Fail; }
                    i++;
                    // the chunk line's extensions (all but the size and the CRLF) count toward the body limit
                    _extensionTotal += _lineBytes - _sizeDigits - 2;
                    _lineBytes = 0;
                    _sizeDigits = 0;
                    if (_dataTotal + _extensionTotal > _maxBody) { reason = RejectReason.BodyTooLarge; goto Fail; }
                    if (_chunkRemaining == 0) { _state = State.TrailerStart; _trailerStart = i; break; }
                    _dataTotal += _chunkRemaining;
                    if (_dataTotal + _extensionTotal > _maxBody) { reason = RejectReason.BodyTooLarge; goto Fail; }
                    _state = State.Data;
                    break;
                case State.Data:
                {
                    int take = (int)Math.Min(_chunkRemaining, input.Length - i);
                    if (scan) usage.Feed(input.Slice(i, take));
                    i += take;
                    _chunkRemaining -= take;
                    if (_chunkRemaining == 0) _state = State.DataCr;
                    break;
                }
                case State.DataCr:
                    if (b != (byte)'\r') { reason = RejectReason.MissingChunkTerminator; goto Fail; }
                    _state = State.DataLf;
                    i++;
                    break;
                case State.DataLf:
                    if (b != (byte)'\n') { reason = RejectReason.MissingChunkTerminator; goto Fail; }
                    _state = State.Size;
                    i++;
                    break;
                case State.TrailerStart:
                    if (b == (byte)'\r') { _state = State.FinalLf; i++; break; }
                    if (!HttpChars.IsToken(b)) { reason = RejectReason.InvalidTrailer; goto Fail; }
                    _state = State.TrailerLine;
                    break;
                case State.TrailerLine:
                    if (++_trailerBytes > _maxTrailerBytes) { reason = RejectReason.HeadersTooLarge; goto Fail; }
                    if (b == (byte)'\r') { _state = State.TrailerLf; i++; break; }
                    if (!HttpChars.IsFieldValue(b)) { reason = RejectReason.InvalidTrailer; goto Fail; }
                    i++;
                    break;
                case State.TrailerLf:
                    if (b != (byte)'\n') { reason = RejectReason.InvalidTrailer; goto Fail; }
                    _state = State.TrailerStart;
                    i++;
                    break;
                case State.FinalLf:
                    if (b != (byte)'\n') { reason = RejectReason.InvalidTrailer; goto Fail; }
                    _state = State.Done;
                    i++;
                    break;
            }
        }
        consumed = i;
        return true;
    Fail:
        consumed = i;
        return false;
    }

    /// <summary>After an extension name or value (and its BWS): BWS, '=' (after a name), ';' or the line's CR.</summary>
    private bool AfterExtensionItem(byte b, bool allowEquals)
    {
        if (b == (byte)' ' || b == (byte)'\t') { _state = allowEquals ? State.ExtensionNameOws : State.ExtensionValueOws; return true; }
        if (b == (byte)';') { _state = State.ExtensionSemicolon; return true; }
        if (b == (byte)'\r') { _state = State.SizeLf; return true; }
        if (b == (byte)'=' && allowEquals) { _state = State.ExtensionEquals; return true; }
        return false;
    }

    private static int HexValue(byte b) => b <= (byte)'9' ? b - '0' : (b | 0x20) - 'a' + 10;
}
