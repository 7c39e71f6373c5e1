using System.Runtime.CompilerServices;
using FastGate.Http;

namespace FastGate.Ai;

/// <summary>
/// Where one provider response stands, from the bytes the connection delivered to the HTTP client: in its head (1xx
/// interim heads skipped), in a chunked body, or past the body's last chunk and trailers. Pure: bytes in, state out.
/// The body is followed with the gateway's own <see cref="ChunkedReader"/>; anything it does not accept makes the
/// tracker <see cref="ResponseFraming.Unknown"/>, which only ever costs the relay its zero-allocation wait, never
/// correctness (see <see cref="ProviderStream"/>).
/// </summary>
internal struct ResponseTracker
{
    private ResponseFraming _state;
    private int _line;       // the head's line being read (0: the status line)
    private int _lineLength; // bytes of that line so far, CR not counted
    private bool _interim;   // the head being read is a 1xx
    private ChunkedReader _body;
    private long _bodyBytes;

    public readonly ResponseFraming State => _state;
    /// <summary>Bytes of the body delivered so far (0: whatever the client holds is head, none of it body).</summary>
    public readonly long BodyBytes => _bodyBytes;

    /// <summary>A new response follows (its request was just written); <paramref name="tracked"/> false: not followed.</summary>
    public void Start(bool tracked)
    {
        _state = tracked ? ResponseFraming.Head : ResponseFraming.Unknown;
        _line = _lineLength = 0;
        _interim = false;
        _bodyBytes = 0;
    }

    public void Feed(ReadOnlySpan<byte> bytes)
    {
        int i = 0;
        while (i < bytes.Length)
        {
            switch (_state)
            {
                case ResponseFraming.Head:
                    byte b = bytes[i++];
                    if (b == (byte)'\n')
                    {
                        if (_lineLength > 0) { _line++; _lineLength = 0; }
                        else if (_line > 0)
                        {
                            // the blank line: a 1xx head is followed by the real one; else the body begins
                            if (_interim) Start(tracked: true);
                            else
                            {
                                _state = ResponseFraming.Body;
                                _body = new ChunkedReader(long.MaxValue, 1 << 20);
                            }
                        }
                    }
                    else if (b != (byte)'\r')
                    {
                        if (_line == 0 && _lineLength == 9) _interim = b == (byte)'1'; // "HTTP/1.1 1xx"
                        _lineLength++;
                    }
                    break;
                case ResponseFraming.Body:
                    if (!_body.Feed(bytes[i..], out int consumed, out _))
                    {
                        _state = ResponseFraming.Unknown;
                        return;
                    }
                    i += consumed;
                    _bodyBytes += consumed;
                    if (_body.IsDone) _state = ResponseFraming.Complete;
                    break;
                default:
                    return; // Unknown, or Complete: nothing after the body belongs to this response
            }
        }
    }
}

/// <summary>A provider's counts of waits for a streamed body's bytes (tests read them; exact per compiled route).</summary>
public sealed class ProviderWaits
{
    /// <summary>Waits the relay did itself (zero-byte reads before a read: no allocation).</summary>
    public long Relay;
    /// <summary>Reads by the HTTP client, inside a chunked body, that had to wait (each costs the handler's async boxes).</summary>
    public long Client;
}

internal enum ResponseFraming : byte
{
    /// <summary>Not followed (no call linked to the request, or framing the tracker does not accept).</summary>
    Unknown,
    Head,
    /// <summary>In a chunked body whose last chunk has not been delivered yet: the client needs more bytes.</summary>
    Body,
    /// <summary>Every byte of the response has been delivered to the client.</summary>
    Complete,
}

/// <summary>
/// One provider call's handle on the connection that carries it: the connection's <see cref="ProviderStream"/> links
/// itself here when it writes the call's request (the link is the current one in the writing flow, an async local).
/// A new link per try: a retried key or destination may reuse the same connection.
/// </summary>
internal sealed class ProviderLink
{
    private static readonly AsyncLocal<ProviderLink?> s_current = new();

    /// <summary>The link of the request being sent in this flow (set around <c>SendAsync</c>, cleared after).</summary>
    public static ProviderLink? Current
    {
        get => s_current.Value;
        set => s_current.Value = value;
    }

    public ProviderStream? Stream { get; internal set; }

    /// <summary>
    /// True when the response's chunked body is not complete yet: once the client has nothing left to decode (the
    /// caller's last read did not fill its buffer, or no body byte has been delivered at all) its next bytes can only
    /// come from the network, and <see cref="ProviderStream.WaitForDataAsync"/> before the read keeps the HTTP client's
    /// read from waiting.
    /// </summary>
    public bool NeedsNetwork => Stream is { } s && s.Owner == this && s.Framing == ResponseFraming.Body;

    /// <summary>No byte of the body has reached the client yet (what it holds after the head is nothing to decode).</summary>
    public bool NoBodyYet => Stream is { } s && s.Owner == this && s.Framing == ResponseFraming.Body && s.BodyBytes == 0;
}

/// <summary>
/// The plaintext stream of a provider connection (SocketsHttpHandler's <c>PlaintextStreamFilter</c>: over the socket,
/// or over TLS), passing every byte through while a <see cref="ResponseTracker"/> follows the linked call's response.
/// It exists so that streamed responses cost nothing per event: SocketsHttpHandler's chunked response stream
/// allocates two async boxes (its ReadAsyncCore and FillAsync) on every read that has to wait for the network, which
/// in a live LLM stream is every event. The relay instead waits itself — a zero-byte read on this connection, in its
/// own async method whose box is made once per call — and only then reads, when the data is already there and the
/// handler's read completes synchronously. It waits only while the tracker says the body is not complete: a zero-byte
/// read after the response's end would wait on a connection that is back in the handler's pool.
/// </summary>
internal sealed class ProviderStream : Stream
{
    private readonly Stream _inner;
    private readonly ProviderWaits _waits;
    private ResponseTracker _tracker;

    public ProviderStream(Stream inner, ProviderWaits waits)
    {
        _inner = inner;
        _waits = waits;
    }

    internal ProviderLink? Owner { get; private set; }
    internal ResponseFraming Framing => _tracker.State;
    internal long BodyBytes => _tracker.BodyBytes;

    /// <summary>Waits until the connection has bytes to read (a zero-byte read: nothing is consumed).</summary>
    public ValueTask<int> WaitForDataAsync()
    {
        Interlocked.Increment(ref _waits.Relay);
        return _inner.ReadAsync(Memory<byte>.Empty);
    }

    /// <summary>A request is being written: the response that follows belongs to the flow's current link.</summary>
    private void OnWrite()
    {
        var link = ProviderLink.Current;
        if (ReferenceEquals(link, Owner)) return; // the same request's next write (its body, a flush)
        Owner = link;
        _tracker.Start(tracked: link is not null);
        if (link is not null) link.Stream = this;
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = _inner.ReadAsync(buffer, cancellationToken);
        if (!read.IsCompletedSuccessfully)
        {
            if (_tracker.State == ResponseFraming.Body) Interlocked.Increment(ref _waits.Client);
            return ReadAwaitedAsync(read, buffer);
        }
        int n = read.Result;
        _tracker.Feed(buffer.Span[..n]);
        return new ValueTask<int>(n);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> ReadAwaitedAsync(ValueTask<int> read, Memory<byte> buffer)
    {
        int n = await read.ConfigureAwait(false);
        _tracker.Feed(buffer.Span[..n]);
        return n;
    }

    public override int Read(Span<byte> buffer)
    {
        int n = _inner.Read(buffer);
        _tracker.Feed(buffer[..n]);
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        OnWrite();
        return _inner.WriteAsync(buffer, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        OnWrite();
        _inner.Write(buffer);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);
    public override void Flush() => _inner.Flush();

    protected override void Dispose(bool disposing)
    {
        if (disposing) _inner.Dispose();
        base.Dispose(disposing);
    }

    public override ValueTask DisposeAsync() => _inner.DisposeAsync();

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
