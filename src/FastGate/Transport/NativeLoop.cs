using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using FastGate.Http;

namespace FastGate.Transport;

/// <summary>
/// One event loop: a dedicated thread with its own epoll instance (edge-triggered), its own SO_REUSEPORT listening
/// socket per plain listener, and every connection accepted there, plus the upstream connections those connections
/// open (UpstreamPool keeps per-loop idle slots), for their whole life. Other threads reach a connection only
/// through <see cref="Post"/> (a queue and an eventfd wake-up): the heartbeat's aborts, a drain's cancel, a
/// continuation that resumed elsewhere.
///
/// Two ways to wait, chosen per transport (<c>nativeIo</c>, docs/performance.md): epoll readiness with one recv/send
/// syscall per I/O, or an <see cref="IoUring"/> where every recv and send of a turn is an SQE and one io_uring_enter
/// submits them all and waits for the next completion (the epoll instance then holds only the listeners and the
/// eventfd, and is itself watched by one multishot poll on the ring).
/// </summary>
internal sealed class NativeLoop
{
    internal enum Op : byte { Read, Flush, CancelRead, CancelFlush, Abort, Close, StopListening, AbortAll }

    [ThreadStatic] private static NativeLoop? t_current;

    private readonly NativeTransport _transport;
    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<(NativeSocket? Socket, Op Op)> _posted = new();
    private readonly List<(int Fd, int Listener)> _listeners = [];
    private NativeSocket?[] _sockets = new NativeSocket?[256];
    private uint[] _generations = new uint[256];
    private readonly Stack<int> _free = new();
    private int _nextSlot;
    private int _wakePending;
    private volatile bool _exiting;
    private readonly List<PendingConnect> _connects = [];
    private int _count;
    private readonly bool _wantRing;
    /// <summary>This loop's io_uring (set on the loop thread at start), or null: epoll readiness.</summary>
    internal IoUring? Ring;
    private readonly Stack<byte[]>[] _buffers = [new(), new(), new()]; // pinned socket buffers by size class, reused on this loop
    private readonly List<(NativeSocket Socket, long Deadline)> _lingering = []; // closed, a send still in flight
    private bool _epollReady, _timerArmed;
    private readonly long[] _timerSpec = GC.AllocateArray<long>(2, pinned: true); // the TIMEOUT op's timespec

    // io_uring user_data: the kind in the top two bits, then the socket's token (generation and slot)
    internal const ulong KindRecv = 0, KindSend = 1UL << 62, KindConnect = 2UL << 62, KindLoop = 3UL << 62;
    private const ulong KindMask = 3UL << 62;
    private const ulong LoopEpoll = KindLoop | 1, LoopTimer = KindLoop | 2, LoopCancel = KindLoop | 3;
    /// <summary>How long a closed socket may take to send what it had in flight before it is aborted.</summary>
    private static readonly long LingerTicks = 5 * Stopwatch.Frequency;

    private const ulong WakeToken = ulong.MaxValue;
    private const ulong ListenerTokenBase = 1UL << 62;

    private sealed class PendingConnect(NativeSocket socket, long deadline)
    {
        public readonly NativeSocket Socket = socket;
        public readonly long Deadline = deadline;
        public readonly TaskCompletionSource<RejectReason> Done = new(); // continuations inline, on this loop
    }

    internal NativeLoop(NativeTransport transport, int index, bool ring)
    {
        _transport = transport;
        _wantRing = ring;
        Index = index;
        _epoll = Libc.EpollCreate1(Libc.EPOLL_CLOEXEC);
        if (_epoll < 0) throw new IOException($"epoll_create1 failed (errno {Libc.Errno})");
        _wake = Libc.EventFd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
        if (_wake < 0) throw new IOException($"eventfd failed (errno {Libc.Errno})");
        Register(_wake, Libc.EPOLLIN, WakeToken);
        _thread = new Thread(Run) { IsBackground = true, Name = $"fastgate-loop-{index}" };
    }

    /// <summary>The loop running on this thread, or null (Kestrel's threads, the thread pool).</summary>
    public static NativeLoop? Current => t_current;
    public int Index { get; }
    public bool IsCurrent => ReferenceEquals(t_current, this);
    /// <summary>Open sockets on this loop (client and upstream).</summary>
    public int SocketCount => Volatile.Read(ref _count);
    /// <summary>Client connections this loop accepted.</summary>
    public long Accepted => Volatile.Read(ref _accepted);
    /// <summary>Flushes that found the kernel's send buffer full and waited for EPOLLOUT.</summary>
    public long FlushWaits => Volatile.Read(ref _flushWaits);
    private long _accepted;
    private long _flushWaits;
    internal void CountFlushWait() => Volatile.Write(ref _flushWaits, _flushWaits + 1);
    /// <summary>Whether this loop runs on io_uring (known once it started).</summary>
    public bool UsesRing => Volatile.Read(ref _ringState) == 1;
    /// <summary>Why a loop that was to use io_uring runs on epoll, or null.</summary>
    public string? RingFallback { get; private set; }
    /// <summary>io_uring_enter calls made by this loop.</summary>
    public long RingEnters => Ring?.Enters ?? 0;
    private int _ringState; // 0 starting, 1 io_uring, 2 epoll
    private readonly ManualResetEventSlim _started = new(false);

    /// <summary>Waits until the loop thread chose its way of waiting (the ring needs creating on that thread).</summary>
    internal void WaitStarted(TimeSpan timeout) => _started.Wait(timeout);

    /// <summary>
    /// A pinned buffer of at least <paramref name="size"/> bytes, from this loop's stacks: BufferSize, ×2 and ×4
    /// (a head and a body chunk written together need the next class; under io_uring that buffer comes back after
    /// every send, so the classes keep steady state allocation-free). Larger ones are allocated. Loop thread.
    /// </summary>
    internal byte[] RentBuffer(int size = NativeSocket.BufferSize)
    {
        int c = SizeClass(size);
        if (c < 0) return GC.AllocateUninitializedArray<byte>(size, pinned: true);
        var stack = _buffers[c];
        return stack.Count > 0 ? stack.Pop() : GC.AllocateUninitializedArray<byte>(NativeSocket.BufferSize << c, pinned: true);
    }

    /// <summary>Gives a buffer back (kept when it is one of the classes and its stack is not full). Loop thread.</summary>
    internal void ReturnBuffer(byte[] buffer)
    {
        int c = SizeClass(buffer.Length);
        if (c >= 0 && buffer.Length == NativeSocket.BufferSize << c && _buffers[c].Count < (4096 >> c)) _buffers[c].Push(buffer);
    }

    private static int SizeClass(int size) => size <= NativeSocket.BufferSize ? 0 : size <= NativeSocket.BufferSize * 2 ? 1 : size <= NativeSocket.BufferSize * 4 ? 2 : -1;

    // ---- io_uring submissions (loop thread; pointers are into pinned buffers) ----

    internal unsafe void QueueRecv(NativeSocket socket, byte* buffer, int length) => QueueIo(IoUring.OpRecv, KindRecv, socket, buffer, length, 0);

    internal unsafe void QueueSend(NativeSocket socket, byte* buffer, int length) => QueueIo(IoUring.OpSend, KindSend, socket, buffer, length, (uint)Libc.MSG_NOSIGNAL);

    private unsafe void QueueIo(byte opcode, ulong kind, NativeSocket socket, byte* buffer, int length, uint msgFlags)
    {
        var sqe = Ring!.Next();
        sqe->Opcode = opcode;
        sqe->Fd = socket.Fd;
        sqe->Addr = (ulong)buffer;
        sqe->Len = (uint)length;
        sqe->OpFlags = msgFlags;
        sqe->UserData = kind | socket.Token;
    }

    /// <summary>Cancels the socket's recv or connect poll (its completion still comes, with -ECANCELED or a result).</summary>
    internal unsafe void QueueCancel(NativeSocket socket, ulong kind)
    {
        var sqe = Ring!.Next();
        sqe->Opcode = IoUring.OpAsyncCancel;
        sqe->Fd = -1;
        sqe->Addr = kind | socket.Token;
        sqe->UserData = LoopCancel;
    }

    private unsafe void QueuePoll(int fd, uint events, ulong userData, bool multishot)
    {
        var sqe = Ring!.Next();
        sqe->Opcode = IoUring.OpPollAdd;
        sqe->Fd = fd;
        sqe->OpFlags = events;
        sqe->Len = multishot ? IoUring.PollAddMulti : 0;
        sqe->UserData = userData;
    }

    private unsafe void ArmTimer()
    {
        _timerSpec[0] = 0;
        _timerSpec[1] = 10_000_000; // 10 ms: connect deadlines and lingering sends are checked at that pace
        var sqe = Ring!.Next();
        sqe->Opcode = IoUring.OpTimeout;
        sqe->Fd = -1;
        fixed (long* spec = _timerSpec) sqe->Addr = (ulong)spec; // pinned array: the address stays valid
        sqe->Len = 1;
        sqe->UserData = LoopTimer;
        _timerArmed = true;
    }

    /// <summary>A closed socket with a send in flight: it gets <see cref="LingerTicks"/> to finish, then is aborted.</summary>
    internal void Linger(NativeSocket socket)
    {
        _lingering.Add((socket, Stopwatch.GetTimestamp() + LingerTicks));
        Volatile.Write(ref _lingers, _lingers + 1);
    }

    /// <summary>Sockets closed with a send still in flight (io_uring): each one's last bytes went out after its close.</summary>
    public long Lingers => Volatile.Read(ref _lingers);
    private long _lingers;

    internal void AddListener(int fd, int listener) => _listeners.Add((fd, listener));

    internal void Start()
    {
        foreach (var (fd, listener) in _listeners) Register(fd, Libc.EPOLLIN, ListenerTokenBase | (uint)listener);
        _thread.Start();
    }

    /// <summary>Hands an operation on <paramref name="socket"/> (or on the loop) to the loop thread. Any thread.</summary>
    internal unsafe void Post(NativeSocket? socket, Op op)
    {
        _posted.Enqueue((socket, op));
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            ulong one = 1;
            Libc.Write(_wake, (byte*)&one, 8);
        }
    }

    /// <summary>Stops accepting: the listening sockets close (connections already accepted carry on).</summary>
    internal void StopListening() => Post(null, Op.StopListening);

    /// <summary>Ends the loop: every socket still open on it closes.</summary>
    internal void Exit()
    {
        _exiting = true;
        Post(null, Op.StopListening);
    }

    /// <summary>Aborts every socket on the loop (the drain timeout ran out).</summary>
    internal void AbortAll() => Post(null, Op.AbortAll);

    internal void Join(TimeSpan timeout) => _thread.Join(timeout);

    /// <summary>A loop that never started: its epoll instance and eventfd close (and any listener bound for it).</summary>
    internal void CloseUnstarted()
    {
        CloseListeners();
        Libc.Close(_epoll);
        Libc.Close(_wake);
    }

    private unsafe void Register(int fd, uint events, ulong token)
    {
        var ev = new Libc.EpollEvent { Events = events, Data = token };
        if (Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_ADD, fd, &ev) != 0) throw new IOException($"epoll_ctl failed (errno {Libc.Errno})");
    }

    private NativeSocket Adopt(int fd, IPEndPoint? remote, IPEndPoint? local)
    {
        var socket = new NativeSocket(this, fd, remote, local);
        int slot = _free.Count > 0 ? _free.Pop() : _nextSlot++;
        if (slot == _sockets.Length)
        {
            Array.Resize(ref _sockets, slot * 2);
            Array.Resize(ref _generations, slot * 2);
        }
        _sockets[slot] = socket;
        socket.Token = ((ulong)(_generations[slot] & 0x3FFF_FFFF) << 32) | (uint)slot; // below the listener bit
        Interlocked.Increment(ref _count);
        if (Ring is null) Register(fd, Libc.EPOLLIN | Libc.EPOLLOUT | Libc.EPOLLRDHUP | Libc.EPOLLET, socket.Token);
        return socket;
    }

    /// <summary>Called by a socket that closes: its slot is free (the generation makes stale events miss).</summary>
    internal void Forget(NativeSocket socket)
    {
        int slot = (int)(uint)socket.Token;
        if (!ReferenceEquals(_sockets[slot], socket)) return;
        _sockets[slot] = null;
        _generations[slot]++;
        _free.Push(slot);
        Interlocked.Decrement(ref _count);
    }

    /// <summary>Opens an upstream connection from this loop (call on the loop): connect, and the socket lives here.</summary>
    internal async ValueTask<(NativeSocket? Socket, RejectReason Error)> ConnectAsync(IPEndPoint endPoint, TimeSpan timeout)
    {
        var (socket, inProgress) = StartConnect(endPoint);
        if (socket is null) return (null, RejectReason.UpstreamConnectFailed);
        if (!inProgress) return (socket, RejectReason.None);
        var pending = new PendingConnect(socket, Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency));
        _connects.Add(pending);
        if (Ring is not null)
        {
            QueuePoll(socket.Fd, Libc.EPOLLOUT | Libc.EPOLLERR | Libc.EPOLLHUP, KindConnect | socket.Token, multishot: false);
            socket.InFlight |= NativeSocket.InFlightConnect;
        }
        var error = await pending.Done.Task.ConfigureAwait(false);
        if (error == RejectReason.None) return (socket, RejectReason.None);
        socket.CloseOnLoop();
        return (null, error);
    }

    /// <summary>A non-blocking connect: the socket (adopted by the loop) and whether it is still in progress, or null.</summary>
    private unsafe (NativeSocket? Socket, bool InProgress) StartConnect(IPEndPoint endPoint)
    {
        int fd = Libc.Socket(endPoint.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? Libc.AF_INET : Libc.AF_INET6,
            Libc.SOCK_STREAM | Libc.SOCK_NONBLOCK | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) return (null, false);
        Libc.SetInt(fd, Libc.IPPROTO_TCP, Libc.TCP_NODELAY, 1);
        byte* addr = stackalloc byte[28];
        int length = Libc.WriteSockAddr(endPoint, new Span<byte>(addr, 28));
        int rc = Libc.Connect(fd, addr, length);
        if (rc != 0 && Libc.Errno != Libc.EINPROGRESS)
        {
            Libc.Close(fd);
            return (null, false);
        }
        return (Adopt(fd, endPoint, null), rc != 0);
    }

    private void Run()
    {
        t_current = this;
        if (_wantRing)
        {
            Ring = IoUring.TryCreate(4096, 65536, out var whyNot);
            RingFallback = whyNot;
        }
        Volatile.Write(ref _ringState, Ring is null ? 2 : 1);
        _started.Set();
        if (Ring is not null) RunRing();
        else RunEpoll();
    }

    private unsafe void RunEpoll()
    {
        const int MaxEvents = 256;
        var events = new Libc.EpollEvent[MaxEvents];
        fixed (Libc.EpollEvent* ev = events)
        {
            while (true)
            {
                int timeout = _connects.Count > 0 ? 10 : -1;
                int n = Libc.EpollWait(_epoll, ev, MaxEvents, timeout);
                if (n < 0)
                {
                    if (Libc.Errno == Libc.EINTR) continue;
                    break;
                }
                for (int i = 0; i < n; i++)
                {
                    ulong token = ev[i].Data;
                    uint flags = ev[i].Events;
                    if (token == WakeToken) continue; // drained below
                    if ((token & ListenerTokenBase) != 0 && token != WakeToken)
                    {
                        Accept((int)(token & 0xFFFF_FFFF));
                        continue;
                    }
                    int slot = (int)(uint)token;
                    var socket = slot < _sockets.Length ? _sockets[slot] : null;
                    if (socket is null || socket.Token != token) continue; // closed since
                    if (_connects.Count > 0 && CompleteConnect(socket, flags)) continue;
                    try
                    {
                        socket.OnEvents(flags);
                    }
                    catch (Exception e)
                    {
                        _transport.LogLoopError(e);
                    }
                }
                if (Volatile.Read(ref _wakePending) != 0) DrainPosted();
                if (_connects.Count > 0) ExpireConnects();
                if (_exiting) break;
            }
        }
        // disposed: whatever is still open closes with the loop
        DrainPosted();
        for (int i = 0; i < _sockets.Length; i++) _sockets[i]?.CloseOnLoop();
        Libc.Close(_epoll);
        Libc.Close(_wake);
    }

    /// <summary>
    /// The io_uring loop: one io_uring_enter submits the turn's SQEs and waits for a completion; the completions
    /// resume the connections inline, which queue the next turn's SQEs. Listeners and posted operations arrive
    /// through the epoll instance, watched by a multishot poll.
    /// </summary>
    private unsafe void RunRing()
    {
        var ring = Ring!;
        const int MaxEvents = 64;
        var events = new Libc.EpollEvent[MaxEvents];
        QueuePoll(_epoll, Libc.EPOLLIN, LoopEpoll, multishot: true);
        bool more = false; // work left from this turn (an accept batch that filled up): do not block
        fixed (Libc.EpollEvent* ev = events)
        {
            while (true)
            {
                if ((_connects.Count > 0 || _lingering.Count > 0) && !_timerArmed) ArmTimer();
                if (!ring.Enter(more ? 0u : 1u)) break;
                more = false;
                while (ring.TryComplete(out ulong userData, out int result, out uint flags))
                {
                    if ((userData & KindMask) == KindLoop)
                    {
                        if (userData == LoopEpoll)
                        {
                            _epollReady = true;
                            if ((flags & IoUring.CqeFMore) == 0) QueuePoll(_epoll, Libc.EPOLLIN, LoopEpoll, multishot: true);
                        }
                        else if (userData == LoopTimer) _timerArmed = false;
                        continue;
                    }
                    int slot = (int)(uint)userData;
                    var socket = slot < _sockets.Length ? _sockets[slot] : null;
                    if (socket is null || socket.Token != (userData & ~KindMask)) continue; // cannot happen: a socket stays until its last completion
                    try
                    {
                        if ((userData & KindMask) == KindConnect)
                        {
                            socket.InFlight &= unchecked((byte)~NativeSocket.InFlightConnect);
                            if (_connects.Count > 0) CompleteConnect(socket, result < 0 ? Libc.EPOLLERR : (uint)result | Libc.EPOLLOUT);
                            socket.AfterCompletion();
                        }
                        else socket.OnCompletion(userData & KindMask, result);
                    }
                    catch (Exception e)
                    {
                        _transport.LogLoopError(e);
                    }
                }
                if (_epollReady)
                {
                    _epollReady = false;
                    int n = Libc.EpollWait(_epoll, ev, MaxEvents, 0);
                    for (int i = 0; i < n; i++)
                    {
                        ulong token = ev[i].Data;
                        if (token == WakeToken) continue; // drained below
                        if ((token & ListenerTokenBase) != 0 && Accept((int)(token & 0xFFFF_FFFF))) more = _epollReady = true;
                    }
                    if (n == MaxEvents) more = _epollReady = true;
                }
                if (Volatile.Read(ref _wakePending) != 0) DrainPosted();
                if (_connects.Count > 0) ExpireConnects();
                if (_lingering.Count > 0) ExpireLingering();
                if (_exiting) break;
            }
        }
        DrainPosted();
        for (int i = 0; i < _sockets.Length; i++) _sockets[i]?.CloseNow();
        ring.Dispose(); // the kernel cancels whatever was still in flight
        Ring = null;
        Libc.Close(_epoll);
        Libc.Close(_wake);
    }

    private void ExpireLingering()
    {
        long now = Stopwatch.GetTimestamp();
        for (int i = _lingering.Count - 1; i >= 0; i--)
        {
            var (socket, deadline) = _lingering[i];
            if (socket.Fd < 0 || (socket.InFlight & NativeSocket.InFlightSend) == 0) _lingering.RemoveAt(i);
            else if (now >= deadline)
            {
                _lingering.RemoveAt(i);
                Libc.Shutdown(socket.Fd, Libc.SHUT_RDWR); // the send fails, its completion ends the socket
            }
        }
    }

    private unsafe void DrainPosted()
    {
        ulong value;
        Libc.Read(_wake, (byte*)&value, 8);
        Volatile.Write(ref _wakePending, 0);
        while (_posted.TryDequeue(out var item))
        {
            try
            {
                if (item.Socket is null)
                {
                    if (item.Op == Op.StopListening) CloseListeners();
                    else if (item.Op == Op.AbortAll)
                    {
                        for (int i = 0; i < _sockets.Length; i++) _sockets[i]?.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("the drain timeout ran out"));
                    }
                }
                else if (!item.Socket.IsClosed) item.Socket.Run(item.Op);
            }
            catch (Exception e)
            {
                _transport.LogLoopError(e);
            }
        }
    }

    private void CloseListeners()
    {
        foreach (var (fd, _) in _listeners) Libc.Close(fd);
        _listeners.Clear();
    }

    private unsafe bool CompleteConnect(NativeSocket socket, uint flags)
    {
        for (int i = 0; i < _connects.Count; i++)
        {
            var c = _connects[i];
            if (!ReferenceEquals(c.Socket, socket)) continue;
            int error = 0, length = sizeof(int);
            Libc.GetSockOpt(socket.Fd, Libc.SOL_SOCKET, Libc.SO_ERROR, &error, &length);
            if (error == 0 && (flags & Libc.EPOLLOUT) == 0) return true; // not yet
            _connects.RemoveAt(i);
            c.Done.SetResult(error == 0 ? RejectReason.None : RejectReason.UpstreamConnectFailed);
            return true;
        }
        return false;
    }

    private void ExpireConnects()
    {
        long now = Stopwatch.GetTimestamp();
        for (int i = _connects.Count - 1; i >= 0; i--)
        {
            var c = _connects[i];
            if (now < c.Deadline) continue;
            _connects.RemoveAt(i);
            c.Done.SetResult(RejectReason.UpstreamConnectTimeout);
        }
    }

    /// <summary>Accepts a batch; true when the batch filled up (more may wait: level-triggered under epoll, not under the ring's poll).</summary>
    private unsafe bool Accept(int listener)
    {
        int fd = -1;
        foreach (var l in _listeners) if (l.Listener == listener) fd = l.Fd;
        if (fd < 0) return false;
        byte* addr = stackalloc byte[128];
        for (int i = 0; i < 64; i++) // a batch, then back to the other sockets' events
        {
            int length = 128;
            int client = Libc.Accept4(fd, addr, &length, Libc.SOCK_NONBLOCK | Libc.SOCK_CLOEXEC);
            if (client < 0)
            {
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                return false; // EAGAIN (none left), or EMFILE and the like: level-triggered, so it comes back
            }
            Libc.SetInt(client, Libc.IPPROTO_TCP, Libc.TCP_NODELAY, 1);
            var remote = Libc.ReadSockAddr(new ReadOnlySpan<byte>(addr, length));
            var socket = Adopt(client, remote, _transport.ListenerEndPoint(listener));
            Volatile.Write(ref _accepted, _accepted + 1);
            _transport.OnAccepted(socket, listener);
        }
        return true;
    }
}
