using FastGate.Transport;

namespace FastGate.Configuration;

/// <summary>
/// Tells when the config file's directory changed in a way that can change the config: a file written and closed,
/// created, deleted or renamed in it (a Kubernetes ConfigMap's "..data" symlink swap is a rename). On Linux this is
/// inotify without IN_MODIFY: a file that stays open and keeps growing beside the config (the access log, by default
/// in the working directory) raises nothing, where FileSystemWatcher raised an event, a few strings and a reload
/// timer reset for every write the log made (measured: 6–8 B per proxied request on the full policy row). Elsewhere
/// (macOS, Windows, or when inotify cannot start) it is a FileSystemWatcher on the directory.
/// </summary>
internal sealed unsafe class DirectoryWatcher : IDisposable
{
    private const uint Mask = Libc.IN_CLOSE_WRITE | Libc.IN_CREATE | Libc.IN_DELETE | Libc.IN_MOVED_FROM | Libc.IN_MOVED_TO
        | Libc.IN_ATTRIB | Libc.IN_DELETE_SELF | Libc.IN_MOVE_SELF;

    private readonly Action _changed;
    private readonly FileSystemWatcher? _fallback;
    private readonly int _inotify = -1, _wake = -1;
    private readonly Thread? _thread;
    private volatile bool _disposed;

    public DirectoryWatcher(string directory, Action changed)
    {
        _changed = changed;
        if (OperatingSystem.IsLinux() && TryInotify(directory, out _inotify, out _wake))
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "fastgate-config-watch" };
            _thread.Start();
            return;
        }
        _fallback = new FileSystemWatcher(directory)
        {
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.Size | NotifyFilters.CreationTime,
            IncludeSubdirectories = false,
        };
        _fallback.Changed += (_, _) => changed();
        _fallback.Created += (_, _) => changed();
        _fallback.Deleted += (_, _) => changed();
        _fallback.Renamed += (_, _) => changed();
        _fallback.Error += (_, _) => changed(); // an overflowed event queue: look anyway
        _fallback.EnableRaisingEvents = true;
    }

    /// <summary>Whether the directory is watched by inotify (else by FileSystemWatcher).</summary>
    public bool UsesInotify => _thread is not null;

    private static bool TryInotify(string directory, out int inotify, out int wake)
    {
        wake = -1;
        inotify = Libc.InotifyInit1(Libc.IN_NONBLOCK | Libc.IN_CLOEXEC);
        if (inotify < 0) return false;
        if (Libc.InotifyAddWatch(inotify, directory, Mask) < 0 || (wake = Libc.EventFd(0, Libc.EFD_CLOEXEC)) < 0)
        {
            Libc.Close(inotify);
            inotify = -1;
            return false;
        }
        return true;
    }

    private void Run()
    {
        var buffer = new byte[4096];
        var fds = stackalloc Libc.PollFd[2];
        fds[0] = new Libc.PollFd { Fd = _inotify, Events = Libc.POLLIN };
        fds[1] = new Libc.PollFd { Fd = _wake, Events = Libc.POLLIN };
        while (!_disposed)
        {
            fds[0].REvents = fds[1].REvents = 0;
            if (Libc.Poll(fds, 2, -1) < 0)
            {
                if (Libc.Errno == Libc.EINTR) continue;
                return;
            }
            if (fds[1].REvents != 0 || _disposed) return;
            bool any = false;
            fixed (byte* p = buffer)
            {
                while (Libc.Read(_inotify, p, buffer.Length) > 0) any = true; // the events' names do not matter: any of them is a look
            }
            if (any && !_disposed)
            {
                try { _changed(); }
                catch (ObjectDisposedException) { return; }
            }
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _fallback?.Dispose();
        if (_thread is null) return;
        ulong one = 1;
        Libc.Write(_wake, (byte*)&one, 8);
        _thread.Join(TimeSpan.FromSeconds(2));
        Libc.Close(_inotify);
        Libc.Close(_wake);
    }
}
