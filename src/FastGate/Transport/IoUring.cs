using System.Runtime.InteropServices;

namespace FastGate.Transport;

/// <summary>
/// One io_uring instance (Linux ≥ 6.1, x86-64 syscall numbers), owned by one <see cref="NativeLoop"/> thread: a
/// submission ring the loop fills with SQEs during a turn and a completion ring it reads without a syscall; one
/// io_uring_enter per turn submits everything queued and waits for the next completion. Created on the loop
/// thread with SINGLE_ISSUER | DEFER_TASKRUN, so completions are only ever produced inside that thread's enter
/// (no task-work interrupting the loop, no lock anywhere: the rings are shared memory with the kernel only).
/// </summary>
internal sealed unsafe partial class IoUring : IDisposable
{
    // opcodes (include/uapi/linux/io_uring.h)
    public const byte OpPollAdd = 6, OpTimeout = 11, OpAsyncCancel = 14, OpSend = 26, OpRecv = 27;
    public const uint PollAddMulti = 1;
    public const uint CancelFd = 1u << 1, CancelAll = 1u << 0;
    public const uint CqeFMore = 1u << 1;
    public const int ECANCELED = 125, ETIME = 62, EBUSY = 16;

    private const uint SetupSubmitAll = 1u << 7, SetupCqSize = 1u << 3, SetupClamp = 1u << 4, SetupSingleIssuer = 1u << 12, SetupDeferTaskrun = 1u << 13;
    private const uint FeatSingleMmap = 1u << 0, FeatNoDrop = 1u << 1;
    private const uint EnterGetEvents = 1u << 0;
    private const long SysSetup = 425, SysEnter = 426;
    private const long OffSqRing = 0, OffSqes = 0x10000000;

    [StructLayout(LayoutKind.Sequential)]
    private struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd, Resv0, Resv1, Resv2;
        public uint SqHead, SqTail, SqRingMask, SqRingEntries, SqFlags, SqDropped, SqArray, SqResv1;
        public ulong SqUserAddr;
        public uint CqHead, CqTail, CqRingMask, CqRingEntries, CqOverflow, CqCqes, CqFlags, CqResv1;
        public ulong CqUserAddr;
    }

    /// <summary>A submission queue entry (64 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    public struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(2)] public ushort IoPrio;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(8)] public ulong Off;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint OpFlags; // msg_flags, poll32_events, timeout_flags, cancel_flags
        [FieldOffset(32)] public ulong UserData;
        [FieldOffset(40)] public ulong Pad0;
        [FieldOffset(48)] public ulong Pad1;
        [FieldOffset(56)] public ulong Pad2;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Cqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    private readonly int _fd;
    private readonly byte* _ring;
    private readonly nuint _ringSize;
    private readonly Sqe* _sqes;
    private readonly nuint _sqesSize;
    private readonly uint* _sqHead, _sqTail, _cqHead, _cqTail;
    private readonly uint _sqMask, _sqEntries, _cqMask;
    private readonly Cqe* _cqes;
    private uint _tail;      // our copy of the SQ tail (SQEs filled, not yet published)
    private uint _submitted; // SQEs published to the kernel (the kernel's head catches up on enter)
    /// <summary>io_uring_enter calls made (the syscall count the docs quote per request).</summary>
    public long Enters;

    private IoUring(int fd, in Params p, byte* ring, nuint ringSize, Sqe* sqes, nuint sqesSize)
    {
        _fd = fd;
        _ring = ring;
        _ringSize = ringSize;
        _sqes = sqes;
        _sqesSize = sqesSize;
        _sqHead = (uint*)(ring + p.SqHead);
        _sqTail = (uint*)(ring + p.SqTail);
        _sqMask = *(uint*)(ring + p.SqRingMask);
        _sqEntries = *(uint*)(ring + p.SqRingEntries);
        _cqHead = (uint*)(ring + p.CqHead);
        _cqTail = (uint*)(ring + p.CqTail);
        _cqMask = *(uint*)(ring + p.CqRingMask);
        _cqes = (Cqe*)(ring + p.CqCqes);
        uint* array = (uint*)(ring + p.SqArray);
        for (uint i = 0; i < _sqEntries; i++) array[i] = i; // identity: SQE i sits in slot i
        _tail = _submitted = *_sqTail;
    }

    /// <summary>A ring on the calling thread (its only submitter), or null and why not (old kernel, disabled, no memory).</summary>
    public static IoUring? TryCreate(uint entries, uint cqEntries, out string? whyNot)
    {
        whyNot = null;
        var p = new Params { Flags = SetupSubmitAll | SetupCqSize | SetupClamp | SetupSingleIssuer | SetupDeferTaskrun, CqEntries = cqEntries };
        int fd = (int)Syscall(SysSetup, entries, (long)&p, 0, 0, 0, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            whyNot = errno switch
            {
                38 => "io_uring is not in this kernel (ENOSYS)",
                1 => "io_uring is disabled (EPERM: /proc/sys/kernel/io_uring_disabled)",
                22 => "this kernel's io_uring lacks SINGLE_ISSUER/DEFER_TASKRUN (EINVAL: needs Linux 6.1)",
                _ => $"io_uring_setup failed (errno {errno})",
            };
            return null;
        }
        if ((p.Features & FeatSingleMmap) == 0 || (p.Features & FeatNoDrop) == 0)
        {
            Libc.Close(fd);
            whyNot = "this kernel's io_uring lacks SINGLE_MMAP/NODROP";
            return null;
        }
        nuint sqSize = p.SqArray + p.SqEntries * sizeof(uint);
        nuint cqSize = p.CqCqes + p.CqEntries * (nuint)sizeof(Cqe);
        nuint ringSize = Math.Max(sqSize, cqSize);
        var ring = (byte*)Mmap(null, ringSize, 3, 0x01 | 0x8000, fd, OffSqRing); // PROT_READ|WRITE, MAP_SHARED|POPULATE
        if ((nint)ring == -1)
        {
            Libc.Close(fd);
            whyNot = $"mmap of the io_uring rings failed (errno {Marshal.GetLastPInvokeError()})";
            return null;
        }
        nuint sqesSize = p.SqEntries * (nuint)sizeof(Sqe);
        var sqes = (Sqe*)Mmap(null, sqesSize, 3, 0x01 | 0x8000, fd, OffSqes);
        if ((nint)sqes == -1)
        {
            Munmap(ring, ringSize);
            Libc.Close(fd);
            whyNot = $"mmap of the io_uring SQEs failed (errno {Marshal.GetLastPInvokeError()})";
            return null;
        }
        return new IoUring(fd, p, ring, ringSize, sqes, sqesSize);
    }

    /// <summary>SQEs filled and not yet submitted.</summary>
    public uint Pending => _tail - _submitted;

    /// <summary>The next free SQE, cleared (when the ring is full, what is queued is submitted first).</summary>
    public Sqe* Next()
    {
        if (_tail - Volatile.Read(ref *_sqHead) >= _sqEntries)
        {
            Enter(0);
            if (_tail - Volatile.Read(ref *_sqHead) >= _sqEntries) throw new IOException("the io_uring submission queue stays full");
        }
        var sqe = &_sqes[_tail & _sqMask];
        *sqe = default;
        _tail++;
        return sqe;
    }

    /// <summary>
    /// Submits every queued SQE and waits until at least <paramref name="minComplete"/> completions are there
    /// (0: only runs the completions that are ready). Returns false on an error other than an interruption.
    /// </summary>
    public bool Enter(uint minComplete)
    {
        Volatile.Write(ref *_sqTail, _tail);
        uint toSubmit = _tail - _submitted;
        while (true)
        {
            Enters++;
            long rc = Syscall(SysEnter, _fd, toSubmit, minComplete, EnterGetEvents, 0, 0);
            if (rc >= 0)
            {
                _submitted += (uint)rc;
                return true;
            }
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR) { if (minComplete == 0) return true; continue; }
            if (errno == Libc.EAGAIN || errno == EBUSY) return true; // the completion queue is full: the caller reaps first
            if (errno == ETIME) return true;
            return false;
        }
    }

    /// <summary>The next completion, if one is there (its slot is given back at once: copy out, then act).</summary>
    public bool TryComplete(out ulong userData, out int result, out uint flags)
    {
        uint head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail))
        {
            userData = 0; result = 0; flags = 0;
            return false;
        }
        ref var cqe = ref _cqes[head & _cqMask];
        userData = cqe.UserData;
        result = cqe.Res;
        flags = cqe.Flags;
        Volatile.Write(ref *_cqHead, head + 1);
        return true;
    }

    public void Dispose()
    {
        Munmap(_sqes, _sqesSize);
        Munmap(_ring, _ringSize);
        Libc.Close(_fd);
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)] private static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);
    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)] private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)] private static partial int Munmap(void* addr, nuint length);
}
