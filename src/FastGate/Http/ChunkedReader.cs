namespace FastGate.Http;

/// <summary>
/// Incremental validator for a chunked message body (RFC 9112 7.1). Bytes are fed in any pieces; it reports how
/// many belong to the body so the caller can forward them verbatim, counts the decoded data against the body
/// limit, and stops exactly at the end of the trailer section (what follows belongs to the next message).
/// </summary>
public struct ChunkedReader
{
    private enum State : byte { Size, SizeOws, Extension, ExtensionQuoted, ExtensionEscape, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerLine, TrailerLf, FinalLf, Done }

    private State _state;
    private long _chunkRemaining;
    private int _sizeDigits;
    private long _dataTotal;
    private int _trailerBytes;
    private readonly long _maxBody;
    private readonly int _maxTrailerBytes;

    public ChunkedReader(long maxBodyBytes, int maxTrailerBytes)
    {
        _maxBody = maxBodyBytes;
        _maxTrailerBytes = maxTrailerBytes;
        _state = State.Size;
    }

    public readonly bool IsDone => _state == State.Done;
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
        int i = 0;
        while (i < input.Length && _state != State.Done)
        {
            byte b = input[i];
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
                    if (b == (byte)';') { _state = State.Extension; i++; break; }
                    if (b == (byte)' ' || b == (byte)'\t') { _state = State.SizeOws; i++; break; }
                    reason = RejectReason.InvalidChunkSize;
                    goto Fail;
                case State.SizeOws: // BWS before a chunk extension
                    if (b == (byte)' ' || b == (byte)'\t') { i++; break; }
                    if (b == (byte)';') { _state = State.Extension; i++; break; }
                    reason = RejectReason.InvalidChunkSize;
                    goto Fail;
                case State.Extension:
                    if (b == (byte)'\r') { _state = State.SizeLf; i++; break; }
                    if (b == (byte)'"') { _state = State.ExtensionQuoted; i++; break; }
                    if (HttpChars.IsToken(b) || b == (byte)'=' || b == (byte)';' || b == (byte)' ' || b == (byte)'\t') { i++; break; }
                    reason = RejectReason.InvalidChunkExtension;
                    goto Fail;
                case State.ExtensionQuoted:
                    if (b == (byte)'"') { _state = State.Extension; i++; break; }
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
                    _sizeDigits = 0;
                    if (_chunkRemaining == 0) { _state = State.TrailerStart; break; }
                    _dataTotal += _chunkRemaining;
                    if (_dataTotal > _maxBody) { reason = RejectReason.BodyTooLarge; goto Fail; }
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

    private static int HexValue(byte b) => b <= (byte)'9' ? b - '0' : (b | 0x20) - 'a' + 10;
}
