using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace FastGate.Transport;

/// <summary>The libc calls of the native transport (Linux x64: the epoll_event layout below is x86-64's packed one).</summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int AF_INET = 2, AF_INET6 = 10;
    public const int SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_ERROR = 4, SO_REUSEPORT = 15;
    public const int IPPROTO_TCP = 6, TCP_NODELAY = 1, IPPROTO_IPV6 = 41, IPV6_V6ONLY = 26;
    public const uint EPOLLIN = 0x1, EPOLLOUT = 0x4, EPOLLERR = 0x8, EPOLLHUP = 0x10, EPOLLRDHUP = 0x2000, EPOLLET = 1u << 31;
    public const int EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLL_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800, EFD_CLOEXEC = 0x80000;
    public const int EINTR = 4, EAGAIN = 11, EINPROGRESS = 115;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int SHUT_WR = 1, SHUT_RDWR = 2;

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [LibraryImport(Lib, EntryPoint = "socket", SetLastError = true)] public static partial int Socket(int domain, int type, int protocol);
    [LibraryImport(Lib, EntryPoint = "setsockopt", SetLastError = true)] public static partial int SetSockOpt(int fd, int level, int name, int* value, int length);
    [LibraryImport(Lib, EntryPoint = "getsockopt", SetLastError = true)] public static partial int GetSockOpt(int fd, int level, int name, int* value, int* length);
    [LibraryImport(Lib, EntryPoint = "bind", SetLastError = true)] public static partial int Bind(int fd, byte* address, int length);
    [LibraryImport(Lib, EntryPoint = "connect", SetLastError = true)] public static partial int Connect(int fd, byte* address, int length);
    [LibraryImport(Lib, EntryPoint = "listen", SetLastError = true)] public static partial int Listen(int fd, int backlog);
    [LibraryImport(Lib, EntryPoint = "accept4", SetLastError = true)] public static partial int Accept4(int fd, byte* address, int* length, int flags);
    [LibraryImport(Lib, EntryPoint = "getsockname", SetLastError = true)] public static partial int GetSockName(int fd, byte* address, int* length);
    [LibraryImport(Lib, EntryPoint = "recv", SetLastError = true)] public static partial nint Recv(int fd, byte* buffer, nint length, int flags);
    [LibraryImport(Lib, EntryPoint = "send", SetLastError = true)] public static partial nint Send(int fd, byte* buffer, nint length, int flags);
    [LibraryImport(Lib, EntryPoint = "shutdown", SetLastError = true)] public static partial int Shutdown(int fd, int how);
    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)] public static partial int Close(int fd);
    [LibraryImport(Lib, EntryPoint = "epoll_create1", SetLastError = true)] public static partial int EpollCreate1(int flags);
    [LibraryImport(Lib, EntryPoint = "epoll_ctl", SetLastError = true)] public static partial int EpollCtl(int epfd, int op, int fd, EpollEvent* ev);
    [LibraryImport(Lib, EntryPoint = "epoll_wait", SetLastError = true)] public static partial int EpollWait(int epfd, EpollEvent* events, int max, int timeout);
    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)] public static partial int EventFd(uint initial, int flags);
    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)] public static partial nint Write(int fd, byte* buffer, nint length);
    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)] public static partial nint Read(int fd, byte* buffer, nint length);
    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)] public static partial int Poll(PollFd* fds, nuint count, int timeout);
    [LibraryImport(Lib, EntryPoint = "inotify_init1", SetLastError = true)] public static partial int InotifyInit1(int flags);
    [LibraryImport(Lib, EntryPoint = "inotify_add_watch", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int InotifyAddWatch(int fd, string path, uint mask);

    public const short POLLIN = 0x1;
    public const int IN_NONBLOCK = 0x800, IN_CLOEXEC = 0x80000;
    public const uint IN_ATTRIB = 0x4, IN_CLOSE_WRITE = 0x8, IN_MOVED_FROM = 0x40, IN_MOVED_TO = 0x80, IN_CREATE = 0x100, IN_DELETE = 0x200,
        IN_DELETE_SELF = 0x400, IN_MOVE_SELF = 0x800;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    public static int Errno => Marshal.GetLastPInvokeError();

    /// <summary>Whether this process can run the native transport (Linux on x64: the struct layout above).</summary>
    public static bool IsSupported => OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    public static int SetInt(int fd, int level, int name, int value) => SetSockOpt(fd, level, name, &value, sizeof(int));

    /// <summary>Writes a sockaddr_in / sockaddr_in6 for <paramref name="ep"/> into <paramref name="dest"/> (≥ 28 bytes); returns its length.</summary>
    public static int WriteSockAddr(IPEndPoint ep, Span<byte> dest)
    {
        dest[..28].Clear();
        int port = ep.Port;
        dest[2] = (byte)(port >> 8);
        dest[3] = (byte)port;
        if (ep.AddressFamily == AddressFamily.InterNetwork)
        {
            BitConverter.TryWriteBytes(dest, (ushort)AF_INET);
            ep.Address.TryWriteBytes(dest[4..8], out _);
            return 16;
        }
        BitConverter.TryWriteBytes(dest, (ushort)AF_INET6);
        ep.Address.TryWriteBytes(dest[8..24], out _);
        BitConverter.TryWriteBytes(dest[24..28], (uint)ep.Address.ScopeId);
        return 28;
    }

    public static IPEndPoint? ReadSockAddr(ReadOnlySpan<byte> src)
    {
        int family = BitConverter.ToUInt16(src);
        int port = (src[2] << 8) | src[3];
        if (family == AF_INET) return new IPEndPoint(new IPAddress(src[4..8]), port);
        if (family == AF_INET6) return new IPEndPoint(new IPAddress(src[8..24], BitConverter.ToUInt32(src[24..28])), port);
        return null;
    }

    public static IPEndPoint? LocalEndPoint(int fd)
    {
        byte* addr = stackalloc byte[128];
        int length = 128;
        return GetSockName(fd, addr, &length) == 0 ? ReadSockAddr(new ReadOnlySpan<byte>(addr, length)) : null;
    }
}
