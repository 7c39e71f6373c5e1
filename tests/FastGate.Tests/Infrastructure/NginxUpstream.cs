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
    public string Address => $"http://127.0.0.1:{Port}";

    /// <param name="locations">nginx location blocks, e.g. <c>location /api/ { return 200 "protected $uri\n"; }</c>.</param>
    public static async Task<NginxUpstream> StartAsync(string locations, string serverExtra = "")
    {
        var nginx = File.Exists("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            var dir = Directory.CreateTempSubdirectory("fastgate-nginx-").FullName;
            var conf = Path.Combine(dir, "nginx.conf");
            File.WriteAllText(conf, $$"""
                worker_processes 1;
                daemon off;
                pid {{dir}}/nginx.pid;
                error_log {{dir}}/error.log warn;
                events { worker_connections 128; }
                http {
                  access_log off;
                  default_type text/plain;
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
            if (await WaitForPortAsync(port, process))
                return new NginxUpstream(process, dir, port);
            string log = File.Exists(Path.Combine(dir, "error.log")) ? File.ReadAllText(Path.Combine(dir, "error.log")) : "";
            try { process.Kill(true); } catch (InvalidOperationException) { }
            if (attempt == 2) throw new InvalidOperationException("nginx did not start: " + log);
        }
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static async Task<bool> WaitForPortAsync(int port, Process process)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < deadline && !process.HasExited)
        {
            using var c = new TcpClient();
            try
            {
                await c.ConnectAsync(IPAddress.Loopback, port);
                return true;
            }
            catch (SocketException)
            {
                await Task.Delay(20);
            }
        }
        return false;
    }

    public async ValueTask DisposeAsync()
    {
        try { _process.Kill(true); } catch (InvalidOperationException) { }
        await _process.WaitForExitAsync();
        _process.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
