namespace FastGate.LoadTest.Client;

public enum ParseStatus
{
    /// <summary>Everything usable was consumed; give it more bytes (and keep the unconsumed rest).</summary>
    NeedMore,
    /// <summary>One whole response ended; <c>consumed</c> points just past it.</summary>
    Complete,
    /// <summary>The bytes are not an HTTP/1.x response we understand.</summary>
    Error,
}

/// <summary>
/// A minimal incremental HTTP/1.1 response reader for the load client: status line, Content-Length, chunked
/// bodies (with trailers), bodies delimited by the connection closing, and interim 1xx responses. Bodies are
/// skipped, never copied. Pure: spans in, state out; no allocation.
/// </summary>
public struct HttpResponseParser
{
    private enum State { Head, FixedBody, ChunkSize, ChunkData, ChunkDataEnd, Trailers, UntilClose, Done }

    private State _state;
    private long _remaining;
    private bool _headRequest;

    public int StatusCode { get; private set; }

    /// <summary>The response carried Retry-After or a RateLimit-* / X-RateLimit-* header.</summary>
    public bool HasRateLimitHeaders { get; private set; }

    /// <summary>False when the server said Connection: close (or spoke HTTP/1.0 without keep-alive).</summary>
    public bool KeepAlive { get; private set; }

    /// <summary>Starts reading a new response; a HEAD request's response has no body.</summary>
    public void Reset(bool headRequest = false)
    {
        _state = State.Head;
        _remaining = 0;
        _headRequest = headRequest;
        StatusCode = 0;
        KeepAlive = true;
        HasRateLimitHeaders = false;
    }

    /// <summary>True when the body runs until the connection closes; a close then completes the response.</summary>
    public readonly bool EndsAtClose => _state == State.UntilClose;

    public ParseStatus Parse(ReadOnlySpan<byte> data, out int consumed)
    {
        consumed = 0;
        while (true)
        {
            var rest = data[consumed..];
            switch (_state)
            {
                case State.Head:
                {
                    int end = rest.IndexOf("\r\n\r\n"u8);
                    if (end < 0) return ParseStatus.NeedMore;
                    if (!ParseHead(rest[..(end + 2)])) return ParseStatus.Error;
                    consumed += end + 4;
                    break; // state was set by ParseHead
                }
                case State.FixedBody:
                {
                    int take = (int)Math.Min(_remaining, rest.Length);
                    consumed += take;
                    _remaining -= take;
                    if (_remaining > 0) return ParseStatus.NeedMore;
                    _state = State.Done;
                    break;
                }
                case State.ChunkSize:
                {
                    int eol = rest.IndexOf("\r\n"u8);
                    if (eol < 0) return rest.Length > 1024 ? ParseStatus.Error : ParseStatus.NeedMore;
                    if (!TryParseChunkSize(rest[..eol], out long size)) return ParseStatus.Error;
                    consumed += eol + 2;
                    _remaining = size;
                    _state = size == 0 ? State.Trailers : State.ChunkData;
                    break;
                }
                case State.ChunkData:
                {
                    int take = (int)Math.Min(_remaining, rest.Length);
                    consumed += take;
                    _remaining -= take;
                    if (_remaining > 0) return ParseStatus.NeedMore;
                    _state = State.ChunkDataEnd;
                    break;
                }
                case State.ChunkDataEnd:
                {
                    if (rest.Length < 2) return ParseStatus.NeedMore;
                    if (rest[0] != '\r' || rest[1] != '\n') return ParseStatus.Error;
                    consumed += 2;
                    _state = State.ChunkSize;
                    break;
                }
                case State.Trailers:
                {
                    int eol = rest.IndexOf("\r\n"u8);
                    if (eol < 0) return rest.Length > 8192 ? ParseStatus.Error : ParseStatus.NeedMore;
                    consumed += eol + 2;
                    if (eol == 0) _state = State.Done;
                    break;
                }
                case State.UntilClose:
                    consumed = data.Length;
                    return ParseStatus.NeedMore;
                case State.Done:
                    return ParseStatus.Complete;
            }
        }
    }

    /// <summary>Parses the status line and headers (ending in the last header's CRLF).</summary>
    private bool ParseHead(ReadOnlySpan<byte> head)
    {
        int eol = head.IndexOf("\r\n"u8);
        var line = head[..eol];
        // HTTP/1.x SSS[ reason]
        if (line.Length < 12 || !line.StartsWith("HTTP/1."u8) || line[8] != ' ') return false;
        bool http10 = line[7] == '0';
        int s0 = line[9] - '0', s1 = line[10] - '0', s2 = line[11] - '0';
        if ((uint)s0 > 9 || (uint)s1 > 9 || (uint)s2 > 9 || s0 == 0) return false;
        if (line.Length > 12 && line[12] != ' ') return false;
        StatusCode = (s0 * 100) + (s1 * 10) + s2;

        long contentLength = -1;
        bool chunked = false;
        bool keepAlive = !http10;
        var headers = head[(eol + 2)..];
        while (headers.Length > 0)
        {
            int e = headers.IndexOf("\r\n"u8);
            if (e < 0) return false;
            var h = headers[..e];
            headers = headers[(e + 2)..];
            int colon = h.IndexOf((byte)':');
            if (colon <= 0) return false;
            var name = h[..colon];
            var value = Trim(h[(colon + 1)..]);
            if (name.EqualsAsciiIgnoreCase("content-length"u8))
            {
                if (!TryParseDecimal(value, out long cl) || (contentLength >= 0 && cl != contentLength)) return false;
                contentLength = cl;
            }
            else if (name.EqualsAsciiIgnoreCase("transfer-encoding"u8))
            {
                chunked = EndsWithIgnoreCase(value, "chunked"u8);
            }
            else if (name.EqualsAsciiIgnoreCase("retry-after"u8) || StartsWithIgnoreCase(name, "ratelimit"u8) || StartsWithIgnoreCase(name, "x-ratelimit"u8))
            {
                HasRateLimitHeaders = true;
            }
            else if (name.EqualsAsciiIgnoreCase("connection"u8))
            {
                if (ContainsIgnoreCase(value, "close"u8)) keepAlive = false;
                else if (ContainsIgnoreCase(value, "keep-alive"u8)) keepAlive = true;
            }
        }
        KeepAlive = keepAlive;

        if (StatusCode is >= 100 and < 200 && StatusCode != 101)
        {
            _state = State.Head; // interim response: the real one follows
            StatusCode = 0;
            KeepAlive = true;
            HasRateLimitHeaders = false;
            return true;
        }
        if (_headRequest || StatusCode is 204 or 304 or 101) _state = State.Done;
        else if (chunked) _state = State.ChunkSize;
        else if (contentLength >= 0)
        {
            _remaining = contentLength;
            _state = contentLength == 0 ? State.Done : State.FixedBody;
        }
        else
        {
            _state = State.UntilClose;
            KeepAlive = false;
        }
        return true;
    }

    private static ReadOnlySpan<byte> Trim(ReadOnlySpan<byte> v)
    {
        while (v.Length > 0 && (v[0] == ' ' || v[0] == '\t')) v = v[1..];
        while (v.Length > 0 && (v[^1] == ' ' || v[^1] == '\t')) v = v[..^1];
        return v;
    }

    private static bool TryParseDecimal(ReadOnlySpan<byte> v, out long value)
    {
        value = 0;
        if (v.Length == 0 || v.Length > 18) return false;
        foreach (byte b in v)
        {
            uint d = (uint)(b - '0');
            if (d > 9) return false;
            value = (value * 10) + d;
        }
        return true;
    }

    private static bool TryParseChunkSize(ReadOnlySpan<byte> line, out long size)
    {
        size = 0;
        int semi = line.IndexOf((byte)';');
        if (semi >= 0) line = line[..semi];
        line = Trim(line);
        if (line.Length == 0 || line.Length > 15) return false;
        foreach (byte b in line)
        {
            int d = b switch
            {
                >= (byte)'0' and <= (byte)'9' => b - '0',
                >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
                >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
                _ => -1,
            };
            if (d < 0) return false;
            size = (size << 4) | (uint)d;
        }
        return true;
    }

    private static bool StartsWithIgnoreCase(ReadOnlySpan<byte> v, ReadOnlySpan<byte> prefix)
        => v.Length >= prefix.Length && v[..prefix.Length].EqualsAsciiIgnoreCase(prefix);

    private static bool EndsWithIgnoreCase(ReadOnlySpan<byte> v, ReadOnlySpan<byte> suffix)
        => v.Length >= suffix.Length && v[^suffix.Length..].EqualsAsciiIgnoreCase(suffix);

    private static bool ContainsIgnoreCase(ReadOnlySpan<byte> v, ReadOnlySpan<byte> word)
    {
        for (int i = 0; i + word.Length <= v.Length; i++)
        {
            if (v.Slice(i, word.Length).EqualsAsciiIgnoreCase(word)) return true;
        }
        return false;
    }
}

internal static class AsciiSpanExtensions
{
    public static bool EqualsAsciiIgnoreCase(this ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => System.Text.Ascii.EqualsIgnoreCase(a, b);
}
