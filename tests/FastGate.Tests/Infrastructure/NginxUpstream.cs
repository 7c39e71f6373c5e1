using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// A real nginx (tests/install-deps.sh installs it) as the upstream that normalises: it decodes %XX, merges "//" and
/// resolves dot segments before it picks a location, as the upstreams behind a gateway do. Every location answers
/// "&lt;name&gt; $uri" so a test sees which content the request reached and as what path.
/// </summary>
public sealed class NginxUpstream : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _dir;

    private NginxUpstream(Process process, string dir, int port)
    {
        _process = process;
        _dir = dir;
        Port = port;
    }

    public int Port { get; }
    /// <summary>The prefix folder (error.log is there).</summary>
    public string Folder => _dir;
    public string Address => $"http://127.0.0.1:{Port}";

    /// <param name="locations">nginx location blocks, e.g. <c>location /api/ { return 200 "protected $uri\n"; }</c>.</param>
    /// <param name="mainExtra">main-context lines (load_module), <paramref name="httpExtra"/> http-context ones.</param>
    public static Task<NginxUpstream> StartAsync(string locations, string serverExtra = "", string mainExtra = "", string httpExtra = "")
    {
        var nginx = File.Exists("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";
        string lastLog = "";
        // nginx cannot bind port 0 and report it: it gets a free port, and a new one if that was taken meanwhile
        return Ports.StartOnFreePortAsync(async port =>
        {
            var dir = Directory.CreateTempSubdirectory("fastgate-nginx-").FullName;
            var conf = Path.Combine(dir, "nginx.conf");
            File.WriteAllText(conf, $$"""
                {{mainExtra}}
                worker_processes 1;
                daemon off;
                pid {{dir}}/nginx.pid;
                error_log {{dir}}/error.log warn;
                events { worker_connections 128; }
                http {
                  access_log off;
                  default_type text/plain;
                  {{httpExtra}}
                  client_body_temp_path {{dir}}/body; proxy_temp_path {{dir}}/proxy; fastcgi_temp_path {{dir}}/fastcgi;
                  uwsgi_temp_path {{dir}}/uwsgi; scgi_temp_path {{dir}}/scgi;
                  server {
                    listen 127.0.0.1:{{port}};
                    {{serverExtra}}
                    {{locations}}
                  }
                }
                """);
            var psi = new ProcessStartInfo(nginx, $"-p {dir} -e {dir}/error.log -c {conf}")
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            var process = Process.Start(psi)!;
            if (await ListeningAsync(port, process)) return new NginxUpstream(process, dir, port);
            lastLog = File.Exists(Path.Combine(dir, "error.log")) ? File.ReadAllText(Path.Combine(dir, "error.log")) : "";
            try { process.Kill(true); } catch (InvalidOperationException) { }
            return null;
        }, "nginx", attempts: 3, lastError: () => lastLog);
    }

    /// <summary>True once nginx accepts connections on the port; false when it exited (the port was taken).</summary>
    private static async Task<bool> ListeningAsync(int port, Process process)
    {
        bool listening = false;
        // nginx writes no readiness line: poll its port (an external process coming up, not test time)
        await Eventually.WaitUntilAsync(async () =>
        {
            if (process.HasExited) return true;
            using var c = new TcpClient();
            try
            {
                await c.ConnectAsync(IPAddress.Loopback, port);
                return listening = true;
            }
            catch (SocketException) { return false; }
        }, $"nginx listens on port {port}", TimeSpan.FromSeconds(10));
        return listening;
    }

    public async ValueTask DisposeAsync()
    {
        try { _process.Kill(true); } catch (InvalidOperationException) { }
        await _process.WaitForExitAsync();
        _process.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
