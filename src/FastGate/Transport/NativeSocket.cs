using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace FastGate.Transport;

/// <summary>
/// One TCP connection (client or upstream) on a <see cref="NativeLoop"/>, for its whole life. It is the
/// ConnectionContext the shared connection code drives (ProxyConnection, UpstreamConnection), with a PipeReader and
/// a PipeWriter over two buffers it owns instead of Kestrel's transport pipes:
/// - read on demand: ReadAsync hands out the bytes not yet examined, else calls recv once (only when the socket may
///   have data: an edge since the last short read), else waits for the next EPOLLIN edge;
/// - FlushAsync sends what was written at once; what the kernel did not take waits for the EPOLLOUT edge, and the
///   flush completes only when all of it is out (the writer's backpressure; the buffer grows only by GetSpan hints).
/// Waits complete through IValueTaskSource with the continuation run inline on the loop thread: no thread-pool hop,
/// no ExecutionContext, no lock. Code that resumes on another thread (an awaited Redis call, an SslStream) is sent
/// back: its ReadAsync/FlushAsync is posted to the loop, and the continuation runs there.
///
/// On a loop with an <see cref="IoUring"/> the same reader and writer queue SQEs instead of calling recv/send: a read
/// that needs bytes arms one recv into the free space (completed by the ring when data comes, so an idle socket
/// costs nothing); a flush hands the written buffer to one send and the writer carries on in a fresh buffer (a
/// second flush waits for the first send: two buffers of backpressure). Buffers are pinned (the kernel writes into
/// them after the call returns) and come from the loop's own stack. A socket closes for good only after its last
/// completion: a recv in flight is cancelled, a send in flight may finish (a bounded linger).
/// </summary>
internal sealed unsafe partial class NativeSocket : ConnectionContext, IDuplexPipe
{
    internal const int BufferSize = 16384;

    private readonly NativeLoop _loop;
    private readonly Input _input;
    private readonly Output _output;
    private IFeatureCollection? _features;
    private IDictionary<object, object?>? _items;
    internal int Fd;
    internal ulong Token;
    private bool _closed;
    private volatile ConnectionAbortedException? _abortReason;
    /// <summary>The io_uring operations in flight for this socket (InFlight* bits). Loop thread.</summary>
    internal byte InFlight;
    internal const byte InFlightRecv = 1, InFlightSend = 2, InFlightConnect = 4;

    internal NativeSocket(NativeLoop loop, int fd, IPEndPoint? remote, IPEndPoint? local)
    {
        _loop = loop;
        Fd = fd;
        RemoteEndPoint = remote;
        LocalEndPoint = local;
        _input = new Input(this);
        _output = new Output(this);
        Transport = this;
    }

    public NativeLoop Loop => _loop;
    public override string ConnectionId { get; set; } = "";
    public override IFeatureCollection Features => _features ??= new FeatureCollection();
    public override IDictionary<object, object?> Items { get => _items ??= new Dictionary<object, object?>(); set => _items = value; }
    public override IDuplexPipe Transport { get; set; }
    PipeReader IDuplexPipe.Input => _input;
    PipeWriter IDuplexPipe.Output => _output;
    internal bool IsClosed => _closed;

    /// <summary>Breaks the connection: a pending read throws the reason, a pending flush completes as closed. Any thread.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        _abortReason = abortReason;
        if (_loop.IsCurrent) AbortOnLoop();
        else _loop.Post(this, NativeLoop.Op.Abort);
    }

    public override ValueTask DisposeAsync()
    {
        if (_loop.IsCurrent) CloseOnLoop();
        else _loop.Post(this, NativeLoop.Op.Close);
        return default;
    }

    // ---- called by the loop ----

    internal void OnEvents(uint events)
    {
        if ((events & (Libc.EPOLLIN | Libc.EPOLLRDHUP | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0) _input.OnReadable((events & (Libc.EPOLLRDHUP | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0);
        if ((events & (Libc.EPOLLOUT | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0) _output.OnWritable();
    }

    internal void Run(NativeLoop.Op op)
    {
        switch (op)
        {
            case NativeLoop.Op.Read: _input.ResumeRead(); break;
            case NativeLoop.Op.Flush: _output.ResumeFlush(); break;
            case NativeLoop.Op.CancelRead: _input.CancelPendingRead(); break;
            case NativeLoop.Op.CancelFlush: _output.CancelPendingFlush(); break;
            case NativeLoop.Op.Abort: AbortOnLoop(); break;
            case NativeLoop.Op.Close: CloseOnLoop(); break;
        }
    }

    private void AbortOnLoop()
    {
        if (_closed) return;
        Libc.Shutdown(Fd, Libc.SHUT_RDWR);
        _input.Fail(_abortReason ?? new ConnectionAbortedException());
        _output.Fail();
    }

    /// <summary>Closes the socket (the loop forgets it) and gives the buffers back; pending waits end.</summary>
    internal void CloseOnLoop()
    {
        if (_closed) return;
        _input.Fail(null);
        _output.Fail();
        _closed = true;
        if (InFlight == 0) Finish();
        else
        {
            // the ring still holds pointers into this socket's buffers: end those operations first
            if ((InFlight & InFlightRecv) != 0) _loop.QueueCancel(this, NativeLoop.KindRecv);
            if ((InFlight & InFlightConnect) != 0) _loop.QueueCancel(this, NativeLoop.KindConnect);
            if ((InFlight & InFlightSend) != 0) _loop.Linger(this);
        }
    }

    /// <summary>The loop ends: the socket closes now, whatever is in flight (the ring is closed right after).</summary>
    internal void CloseNow()
    {
        if (!_closed)
        {
            _input.Fail(null);
            _output.Fail();
            _closed = true;
        }
        if (Fd >= 0)
        {
            InFlight = 0;
            _loop.Forget(this);
            Libc.Close(Fd);
            Fd = -1;
        }
    }

    private void Finish()
    {
        _loop.Forget(this);
        Libc.Close(Fd);
        Fd = -1;
        _input.Release();
        _output.Release();
    }

    /// <summary>An io_uring completion for this socket (loop thread).</summary>
    internal void OnCompletion(ulong kind, int result)
    {
        if (kind == NativeLoop.KindRecv)
        {
            InFlight &= unchecked((byte)~InFlightRecv);
            _input.OnReceived(result);
        }
        else
        {
            InFlight &= unchecked((byte)~InFlightSend);
            _output.OnSent(result);
        }
        AfterCompletion();
    }

    /// <summary>After a completion: a closed socket whose last operation ended is finished.</summary>
    internal void AfterCompletion()
    {
        if (_closed && InFlight == 0 && Fd >= 0) Finish();
    }

    private static bool Again(int errno) => errno == Libc.EAGAIN || errno == Libc.EINTR;

    /// <summary>The receive size while a large body streams through (<see cref="Bulk"/>): four times the usual, so
    /// a 1 MB body takes 16 recvs and sends of 64 KB (loopback's segment size) rather than 64 of 16 KB.</summary>
    internal const int BulkSize = BufferSize * 4;

    /// <summary>
    /// A body much larger than a buffer is about to be read (true) or is done (false): while set, an empty read buffer
    /// is swapped for a <see cref="BulkSize"/> one, and back after. Loop thread.
    /// </summary>
    internal bool Bulk { get => _input.Bulk; set => _input.Bulk = value; }

    /// <summary>The read side: bytes [_start, _end) of _buffer are received and not yet consumed.</summary>
    private sealed class Input(NativeSocket socket) : PipeReader, System.Threading.Tasks.Sources.IValueTaskSource<ReadResult>
    {
        private byte[] _buffer = socket._loop.RentBuffer();
        private int _start, _end;
        private bool _examinedAll;   // the reader looked at every byte it has: the next read needs new ones
        private bool _readable = true; // an edge (or nothing yet) since the last short read: recv may find data
        private bool _eof, _cancel, _pending, _completed, _peerClosed;
        private Exception? _error;
        private System.Threading.Tasks.Sources.ManualResetValueTaskSourceCore<ReadResult> _source; // continuations inline

        private ReadOnlySequence<byte> Data => new(_buffer, _start, _end - _start);

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            if (_pending) throw new InvalidOperationException("a read is already pending");
            if (socket._loop.IsCurrent)
            {
                if (TryTake(out var ready, out var error)) return error is null ? new ValueTask<ReadResult>(ready) : ValueTask.FromException<ReadResult>(error);
                _source.Reset();
                _pending = true;
            }
            else
            {
                // resumed on another thread (an awaited Redis call, an SslStream): the loop takes the read over
                _source.Reset();
                _pending = true;
                socket._loop.Post(socket, NativeLoop.Op.Read);
            }
            return new ValueTask<ReadResult>(this, _source.Version);
        }

        /// <summary>A result without waiting: canceled, unexamined bytes, the end, or what one recv brings.</summary>
        private bool TryTake(out ReadResult result, out Exception? error)
        {
            error = null;
            while (true)
            {
                if (_cancel)
                {
                    _cancel = false;
                    result = new ReadResult(Data, isCanceled: true, isCompleted: _eof);
                    return true;
                }
                if (_end > _start && !_examinedAll)
                {
                    result = new ReadResult(Data, false, false);
                    return true;
                }
                if (_error is not null)
                {
                    result = default;
                    error = _error;
                    return true;
                }
                if (_eof)
                {
                    result = new ReadResult(Data, false, true);
                    return true;
                }
                if (socket._loop.Ring is not null)
                {
                    if ((socket.InFlight & InFlightRecv) == 0)
                    {
                        StartReceive();
                        if (_eof) continue;
                    }
                    result = default;
                    return false;
                }
                if (!_readable || !Receive())
                {
                    result = default;
                    return false;
                }
            }
        }

        /// <summary>See <see cref="NativeSocket.Bulk"/>.</summary>
        public bool Bulk;

        /// <summary>Makes room at the end of the buffer (compacting or growing); no recv may be in flight.</summary>
        private int MakeRoom()
        {
            if (_start == _end)
            {
                _start = _end = 0;
                // an empty buffer may change size: the bulk one while a large body streams, the usual one after
                if (Bulk ? _buffer.Length < BulkSize : _buffer.Length == BulkSize)
                {
                    socket._loop.ReturnBuffer(_buffer);
                    _buffer = socket._loop.RentBuffer(Bulk ? BulkSize : BufferSize);
                }
            }
            else if (_start > 0 && _end == _buffer.Length)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length)
            {
                // a head (or chunk line) larger than the buffer: grow it; the parser's limits bound how far
                var larger = socket._loop.RentBuffer(_buffer.Length * 2);
                Buffer.BlockCopy(_buffer, 0, larger, 0, _end);
                socket._loop.ReturnBuffer(_buffer);
                _buffer = larger;
            }
            return _buffer.Length - _end;
        }

        /// <summary>The ring's way: one recv armed into the free space; <see cref="OnReceived"/> takes its result.</summary>
        private void StartReceive()
        {
            if (socket._closed) { _eof = true; return; }
            int space = MakeRoom();
            fixed (byte* p = &_buffer[_end]) socket._loop.QueueRecv(socket, p, space); // pinned: the address outlives the fixed
            socket.InFlight |= InFlightRecv;
        }

        internal void OnReceived(int result)
        {
            if (result > 0)
            {
                _end += result;
                _examinedAll = false;
            }
            else if (result == 0 || result == -IoUring.ECANCELED) _eof = true;
            else _error ??= new ConnectionResetException($"recv failed (errno {-result})");
            if (_pending) ResumeRead();
        }

        /// <summary>One recv into the free space (compacting or growing first). False: nothing now (EAGAIN).</summary>
        private bool Receive()
        {
            if (socket._closed) { _eof = true; return true; }
            int space = MakeRoom();
            while (true)
            {
                nint n;
                fixed (byte* p = &_buffer[_end]) n = Libc.Recv(socket.Fd, p, space, 0);
                if (n > 0)
                {
                    _end += (int)n;
                    _examinedAll = false;
                    if (n < space && !_peerClosed) _readable = false; // drained: the next byte comes with a new edge
                    return true;
                }
                if (n == 0)
                {
                    _eof = true;
                    return true;
                }
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                if (errno == Libc.EAGAIN)
                {
                    _readable = false;
                    return false;
                }
                _error = new ConnectionResetException($"recv failed (errno {errno})");
                return true;
            }
        }

        internal void OnReadable(bool peerClosed)
        {
            _readable = true;
            // the peer's FIN may come in the same edge as its last bytes: read on until recv says 0
            if (peerClosed) _peerClosed = true;
            if (_pending) ResumeRead();
        }

        internal void ResumeRead()
        {
            if (!_pending) return;
            if (!TryTake(out var result, out var error)) return;
            _pending = false;
            if (error is null) _source.SetResult(result);
            else _source.SetException(error);
        }

        internal void Fail(Exception? error)
        {
            if (error is not null) _error ??= error;
            else _eof = true;
            ResumeRead();
        }

        internal void Release()
        {
            var b = _buffer;
            _buffer = [];
            _start = _end = 0;
            if (b.Length > 0) socket._loop.ReturnBuffer(b);
        }

        public override bool TryRead(out ReadResult result)
        {
            if (_cancel)
            {
                _cancel = false;
                result = new ReadResult(Data, true, _eof);
                return true;
            }
            if (_end == _start && !_eof && _error is null && socket._loop.IsCurrent)
            {
                // under the ring, a recv armed here notices the peer's close while the socket idles (a pooled upstream)
                if (socket._loop.Ring is not null) { if ((socket.InFlight & InFlightRecv) == 0 && !socket._closed) StartReceive(); }
                else if (_readable) Receive();
            }
            if (_error is not null) throw _error;
            result = new ReadResult(Data, false, _eof);
            return _end > _start || _eof;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            if (_buffer.Length == 0) return; // closed
            int c = consumed.GetInteger() & int.MaxValue;
            int e = examined.GetInteger() & int.MaxValue;
            if ((consumed.GetObject() is { } o && !ReferenceEquals(o, _buffer)) || c < _start || c > _end) throw new InvalidOperationException("the position is not from the last read");
            _start = c;
            _examinedAll = e >= _end;
            if (_start == _end && (socket.InFlight & InFlightRecv) == 0) _start = _end = 0; // a recv in flight writes at _end
        }

        public override void CancelPendingRead()
        {
            if (!socket._loop.IsCurrent)
            {
                socket._loop.Post(socket, NativeLoop.Op.CancelRead);
                return;
            }
            _cancel = true;
            ResumeRead();
        }

        public override void Complete(Exception? exception = null) => _completed = true;

        public bool IsCompleted => _completed;

        ReadResult System.Threading.Tasks.Sources.IValueTaskSource<ReadResult>.GetResult(short token) => _source.GetResult(token);
        System.Threading.Tasks.Sources.ValueTaskSourceStatus System.Threading.Tasks.Sources.IValueTaskSource<ReadResult>.GetStatus(short token) => _source.GetStatus(token);
        void System.Threading.Tasks.Sources.IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token,
            System.Threading.Tasks.Sources.ValueTaskSourceOnCompletedFlags flags) => _source.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>The write side: bytes [_sent, _written) of _buffer wait to be sent.</summary>
    private sealed class Output(NativeSocket socket) : PipeWriter, System.Threading.Tasks.Sources.IValueTaskSource<FlushResult>
    {
        private byte[] _buffer = socket._loop.RentBuffer();
        private int _sent, _written;
        private bool _failed, _pending, _cancel;
        private byte[]? _sending;          // the ring's way: the buffer a send in flight reads from
        private int _sendingAt, _sendingLeft;
        private System.Threading.Tasks.Sources.ManualResetValueTaskSourceCore<FlushResult> _source;

        // the head writers ask for a span per piece: the common case (room left) straight off the array, no Memory
        public override Span<byte> GetSpan(int sizeHint = 0)
        {
            var buffer = _buffer;
            int written = _written;
            if ((uint)written < (uint)buffer.Length && buffer.Length - written >= Math.Max(sizeHint, 1)) return buffer.AsSpan(written);
            return GetMemory(sizeHint).Span;
        }

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            int need = Math.Max(sizeHint, 1);
            if (_buffer.Length - _written >= need) return _buffer.AsMemory(_written);
            if (_sent == _written) _sent = _written = 0;
            else if (_sent > 0)
            {
                Buffer.BlockCopy(_buffer, _sent, _buffer, 0, _written - _sent);
                _written -= _sent;
                _sent = 0;
            }
            if (_buffer.Length - _written < need)
            {
                var larger = socket._loop.RentBuffer(Math.Max(_buffer.Length * 2, _written + need));
                Buffer.BlockCopy(_buffer, 0, larger, 0, _written);
                if (_buffer.Length > 0) socket._loop.ReturnBuffer(_buffer);
                _buffer = larger;
            }
            return _buffer.AsMemory(_written);
        }

        public override void Advance(int bytes) => _written += bytes;

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            if (_pending) throw new InvalidOperationException("a flush is already pending");
            if (socket._loop.IsCurrent)
            {
                if (socket._loop.Ring is not null)
                {
                    if (_failed || socket._closed) { _written = 0; return new ValueTask<FlushResult>(new FlushResult(false, true)); }
                    if (_written == 0) return new ValueTask<FlushResult>(new FlushResult(false, false));
                    if ((socket.InFlight & InFlightSend) == 0)
                    {
                        StartSend();
                        return new ValueTask<FlushResult>(new FlushResult(false, false));
                    }
                }
                else if (TrySend()) return new ValueTask<FlushResult>(new FlushResult(false, _failed));
                socket._loop.CountFlushWait();
                _source.Reset();
                _pending = true;
            }
            else
            {
                _source.Reset();
                _pending = true;
                socket._loop.Post(socket, NativeLoop.Op.Flush);
            }
            return new ValueTask<FlushResult>(this, _source.Version);
        }

        /// <summary>Sends what is written; true when done (all sent, or the socket failed), false: the kernel is full.</summary>
        private bool TrySend()
        {
            while (_sent < _written && !_failed)
            {
                if (socket._closed) { _failed = true; break; }
                nint n;
                fixed (byte* p = &_buffer[_sent]) n = Libc.Send(socket.Fd, p, _written - _sent, Libc.MSG_NOSIGNAL);
                if (n >= 0)
                {
                    _sent += (int)n;
                    continue;
                }
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                if (errno == Libc.EAGAIN) return false; // EPOLLOUT will say when there is room
                _failed = true;
            }
            if (_failed || _sent == _written) _sent = _written = 0;
            return true;
        }

        /// <summary>The ring's way: the written bytes go to one send, the writer carries on in a fresh buffer.</summary>
        private void StartSend()
        {
            if (_written == 0) return;
            _sending = _buffer;
            _sendingAt = 0;
            _sendingLeft = _written;
            _buffer = socket._loop.RentBuffer(_sending.Length); // the same class: a writer that grew once stays grown
            _written = _sent = 0;
            QueueSending();
        }

        private void QueueSending()
        {
            fixed (byte* p = &_sending![_sendingAt]) socket._loop.QueueSend(socket, p, _sendingLeft); // pinned
            socket.InFlight |= InFlightSend;
        }

        internal void OnSent(int result)
        {
            // also after a close: on the ring a flush returns once its send is queued, so a Connection: close
            // response is closed with its last send in flight, and the rest of a short send is still the response.
            // An aborted socket is shut down first, so there the next send fails and ends this.
            if (result > 0 && result < _sendingLeft)
            {
                _sendingAt += result; // a short send: the rest goes next
                _sendingLeft -= result;
                QueueSending();
                return;
            }
            if (result <= 0) _failed = true;
            if (_sending is { } done)
            {
                _sending = null;
                socket._loop.ReturnBuffer(done);
            }
            if (_pending) ResumeFlush();
        }

        internal void OnWritable()
        {
            if (_pending) ResumeFlush();
        }

        internal void ResumeFlush()
        {
            if (!_pending) return;
            bool canceled = _cancel;
            _cancel = false;
            if (socket._loop.Ring is not null)
            {
                if (!canceled && !_failed)
                {
                    if ((socket.InFlight & InFlightSend) != 0) return; // the flush before this one is still going out
                    StartSend();
                }
            }
            else if (!canceled && !TrySend()) return;
            _pending = false;
            _source.SetResult(new FlushResult(canceled, _failed));
        }

        internal void Fail()
        {
            _failed = true;
            ResumeFlush();
        }

        internal void Release()
        {
            var b = _buffer;
            _buffer = [];
            _sent = _written = 0;
            if (b.Length > 0) socket._loop.ReturnBuffer(b);
            if (_sending is { } s && (socket.InFlight & InFlightSend) == 0)
            {
                _sending = null;
                socket._loop.ReturnBuffer(s);
            }
        }

        public override void CancelPendingFlush()
        {
            if (!socket._loop.IsCurrent)
            {
                socket._loop.Post(socket, NativeLoop.Op.CancelFlush);
                return;
            }
            if (!_pending) return;
            _cancel = true;
            ResumeFlush();
        }

        public override void Complete(Exception? exception = null) { }

        public override bool CanGetUnflushedBytes => true;
        public override long UnflushedBytes => _written - _sent + (_sending is null ? 0 : _sendingLeft);

        FlushResult System.Threading.Tasks.Sources.IValueTaskSource<FlushResult>.GetResult(short token) => _source.GetResult(token);
        System.Threading.Tasks.Sources.ValueTaskSourceStatus System.Threading.Tasks.Sources.IValueTaskSource<FlushResult>.GetStatus(short token) => _source.GetStatus(token);
        void System.Threading.Tasks.Sources.IValueTaskSource<FlushResult>.OnCompleted(Action<object?> continuation, object? state, short token,
            System.Threading.Tasks.Sources.ValueTaskSourceOnCompletedFlags flags) => _source.OnCompleted(continuation, state, token, flags);
    }
}
