using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.RateLimiting;

/// <summary>
/// A real redis-server on an ephemeral loopback port, without persistence. Fails with a clear message when
/// redis-server is not installed (tests/install-deps.sh installs it): these tests are never skipped silently.
/// </summary>
public sealed class RedisServerProcess : IDisposable
{
    private Process? _process;

    public RedisServerProcess()
    {
        // redis-server cannot bind port 0 and report it (--port 0 turns TCP off): it gets a free port, and a new one
        // if that was taken meanwhile. Start() brings it back on the same port after Kill().
        Ports.StartOnFreePort(port => TryStart(port) ? this : null, "redis-server", lastError: () => _lastError);
    }

    private string _lastError = "";

    public int Port { get; private set; }
    public string Configuration => $"127.0.0.1:{Port}";

    private static string FindRedisServer()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                     .Concat(["/usr/bin", "/usr/local/bin", "/usr/sbin"]))
        {
            string path = Path.Combine(dir, "redis-server");
            if (File.Exists(path)) return path;
        }
        throw new InvalidOperationException(
            "redis-server is not installed, so the rate-limiting cluster tests cannot run. " +
            "Run `bash tests/install-deps.sh` (it installs the Debian package redis-server) or `apt-get install redis-server`.");
    }

    /// <summary>Starts redis-server again on its port (after <see cref="Kill"/>); throws when it does not come up.</summary>
    public void Start()
    {
        if (!TryStart(Port)) throw new InvalidOperationException(_lastError);
    }

    private bool TryStart(int port)
    {
        var psi = new ProcessStartInfo(FindRedisServer())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no" })
            psi.ArgumentList.Add(a);
        var output = new StringBuilder();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.Contains("Ready to accept connections", StringComparison.Ordinal)) ready.TrySetResult();
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.Exited += (_, _) => ready.TrySetException(new InvalidOperationException("exited"));
        if (!process.Start()) throw new InvalidOperationException("could not start redis-server");
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // the line redis-server logs once it listens: the readiness signal
            ready.Task.Wait(TimeSpan.FromSeconds(15));
        }
        catch (AggregateException) { }
        if (ready.Task.IsCompletedSuccessfully && Ping(port))
        {
            _process = process;
            Port = port;
            return true;
        }
        lock (output) _lastError = $"redis-server on port {port} did not come up ({(process.HasExited ? "exited " + process.ExitCode : "no readiness line in 15 s")}):\n{output}";
        try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        process.WaitForExit();
        process.Dispose();
        return false;
    }

    private static bool Ping(int port)
    {
        try
        {
            using var c = new TcpClient();
            c.Connect(IPAddress.Loopback, port);
            var s = c.GetStream();
            s.ReadTimeout = 5000;
            s.Write("PING\r\n"u8);
            var buf = new byte[16];
            int n = s.Read(buf);
            return Encoding.ASCII.GetString(buf, 0, n).StartsWith("+PONG", StringComparison.Ordinal);
        }
        catch (SocketException) { return false; }
        catch (IOException) { return false; }
    }

    public void Kill()
    {
        if (_process is null) return;
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
        _process.Dispose();
        _process = null;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>Freezes the server (SIGSTOP): connections stay open but nothing answers.</summary>
    public void Pause() => kill(_process!.Id, 19);

    public void Resume() => kill(_process!.Id, 18);

    public void Dispose()
    {
        try { if (_process is not null) Resume(); } catch { }
        Kill();
    }
}
