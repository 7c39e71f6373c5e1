using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace FastGate.Http;

/// <summary>A span of a head buffer, by offset and length.</summary>
public readonly record struct ByteRange(int Start, int Length)
{
    public bool IsEmpty => Length == 0;
    public int End => Start + Length;
}

public enum KnownHeader : byte
{
    None,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    TE,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    /// <summary>A name that an upstream would read as a protected one (see RequestCanonicalizer): never forwarded.</summary>
    Spoofed,
}

public readonly record struct HeaderField(ByteRange Name, ByteRange Value, KnownHeader Known);

public enum BodyFraming : byte { None, ContentLength, Chunked, ReadToClose }

/// <summary>
/// What request and response heads share: the copied head bytes, the header fields as ranges into them, the
/// framing and the Connection options. Reused for every message on a connection; <see cref="Reset"/> clears it.
/// </summary>
public abstract class MessageHead : IDisposable
{
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(4096);
    private HeaderField[] _headers = new HeaderField[32];
    private ByteRange[] _connectionTokens = new ByteRange[4];

    public int Length { get; internal set; }
    public ReadOnlySpan<byte> Bytes => _buffer.AsSpan(0, Length);
    public int HeaderCount { get; private set; }
    public ReadOnlySpan<HeaderField> Headers => _headers.AsSpan(0, HeaderCount);
    public int ConnectionTokenCount { get; private set; }
    public ReadOnlySpan<ByteRange> ConnectionTokens => _connectionTokens.AsSpan(0, ConnectionTokenCount);

    public BodyFraming Framing { get; internal set; }
    public long ContentLength { get; internal set; } = -1;
    public bool ConnectionClose { get; internal set; }
    public bool ConnectionKeepAlive { get; internal set; }
    public bool ConnectionUpgrade { get; internal set; }
    public bool IsHttp11 { get; internal set; }
    internal bool SawTransferEncoding { get; set; }
    internal int ChunkedCount { get; set; }
    internal bool TransferEncodingChunkedLast { get; set; }
    /// <summary>The first bad Transfer-Encoding coding, reported by FinishFraming unless a Content-Length makes it a 400.</summary>
    internal RejectReason TransferEncodingError { get; set; }

    public ReadOnlySpan<byte> this[ByteRange r] => _buffer.AsSpan(r.Start, r.Length);

    internal Span<byte> EnsureBuffer(int size)
    {
        if (_buffer.Length < size)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = ArrayPool<byte>.Shared.Rent(size);
        }
        return _buffer;
    }

    public virtual void Reset()
    {
        Length = 0;
        HeaderCount = 0;
        ConnectionTokenCount = 0;
        Framing = BodyFraming.None;
        ContentLength = -1;
        ConnectionClose = ConnectionKeepAlive = ConnectionUpgrade = false;
        IsHttp11 = false;
        SawTransferEncoding = false;
        ChunkedCount = 0;
        TransferEncodingChunkedLast = false;
        TransferEncodingError = RejectReason.None;
    }

    internal void AddHeader(in HeaderField field)
    {
        if (HeaderCount == _headers.Length) Array.Resize(ref _headers, _headers.Length * 2);
        _headers[HeaderCount++] = field;
    }

    internal void MarkSpoofed(int index) => _headers[index] = _headers[index] with { Known = KnownHeader.Spoofed };

    internal void AddConnectionToken(ByteRange token)
    {
        if (ConnectionTokenCount == _connectionTokens.Length) Array.Resize(ref _connectionTokens, _connectionTokens.Length * 2);
        _connectionTokens[ConnectionTokenCount++] = token;
    }

    /// <summary>True when the header name is listed in this message's Connection header (so it is hop-by-hop).</summary>
    public bool IsNamedByConnection(ReadOnlySpan<byte> name)
    {
        for (int i = 0; i < ConnectionTokenCount; i++)
            if (Ascii.EqualsIgnoreCase(this[_connectionTokens[i]], name)) return true;
        return false;
    }

    /// <summary>The first header with this name, or an empty span.</summary>
    public bool TryGetHeader(ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        for (int i = 0; i < HeaderCount; i++)
        {
            if (Ascii.EqualsIgnoreCase(this[_headers[i].Name], name))
            {
                value = this[_headers[i].Value];
                return true;
            }
        }
        value = default;
        return false;
    }

    public void Dispose()
    {
        var b = _buffer;
        _buffer = [];
        if (b.Length > 0) ArrayPool<byte>.Shared.Return(b);
        GC.SuppressFinalize(this);
    }

    public override string ToString() => Encoding.ASCII.GetString(Bytes);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static KnownHeader Classify(ReadOnlySpan<byte> name)
    {
        switch (name.Length)
        {
            case 2: if (Ascii.EqualsIgnoreCase(name, "te"u8)) return KnownHeader.TE; break;
            case 4: if (Ascii.EqualsIgnoreCase(name, "host"u8)) return KnownHeader.Host; break;
            case 6: if (Ascii.EqualsIgnoreCase(name, "expect"u8)) return KnownHeader.Expect; break;
            case 7:
                if (Ascii.EqualsIgnoreCase(name, "upgrade"u8)) return KnownHeader.Upgrade;
                if (Ascii.EqualsIgnoreCase(name, "trailer"u8)) return KnownHeader.Trailer;
                break;
            case 10:
                if (Ascii.EqualsIgnoreCase(name, "connection"u8)) return KnownHeader.Connection;
                if (Ascii.EqualsIgnoreCase(name, "keep-alive"u8)) return KnownHeader.KeepAlive;
                break;
            case 12: if (Ascii.EqualsIgnoreCase(name, "x-request-id"u8)) return KnownHeader.XRequestId; break;
            case 14: if (Ascii.EqualsIgnoreCase(name, "content-length"u8)) return KnownHeader.ContentLength; break;
            case 15: if (Ascii.EqualsIgnoreCase(name, "x-forwarded-for"u8)) return KnownHeader.XForwardedFor; break;
            case 16:
                if (Ascii.EqualsIgnoreCase(name, "proxy-connection"u8)) return KnownHeader.ProxyConnection;
                if (Ascii.EqualsIgnoreCase(name, "x-forwarded-host"u8)) return KnownHeader.XForwardedHost;
                break;
            case 17:
                if (Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8)) return KnownHeader.TransferEncoding;
                if (Ascii.EqualsIgnoreCase(name, "x-forwarded-proto"u8)) return KnownHeader.XForwardedProto;
                break;
        }
        return KnownHeader.None;
    }

    /// <summary>True for headers a proxy never forwards (RFC 9110 7.6.1), or that this message's Connection names.</summary>
    public bool IsHopByHop(in HeaderField f) => f.Known switch
    {
        KnownHeader.Connection or KnownHeader.KeepAlive or KnownHeader.ProxyConnection or KnownHeader.TE
            or KnownHeader.Trailer or KnownHeader.Upgrade => true,
        KnownHeader.None => ConnectionTokenCount > 0 && IsNamedByConnection(this[f.Name]),
        _ => false,
    };
}
