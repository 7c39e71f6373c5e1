using System.Diagnostics;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Text;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// The real `fastgate` executable as a separate OS process (its own runtime, its own string-hash seed), on fixed
/// free loopback ports written into its config. Ready when its admin /healthz answers.
/// </summary>
public sealed class FastgateProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private FastgateProcess(Process process, int port, int adminPort)
    {
        _process = process;
        Port = port;
        AdminPort = adminPort;
    }

    public int Port { get; }
    public int AdminPort { get; }
    public string Output { get { lock (_output) return _output.ToString(); } }

    /// <summary>
    /// Starts `fastgate run` on a config made by <paramref name="config"/> from (listener port, admin port), written
    /// into <paramref name="directory"/>.
    /// </summary>
    public static async Task<FastgateProcess> StartAsync(string directory, Func<int, int, string> config, string name = "fastgate.json")
    {
        int port = FreePort(), adminPort = FreePort();
        var path = Path.Combine(directory, name);
        File.WriteAllText(path, config(port, adminPort));
        var dll = Path.Combine(AppContext.BaseDirectory, "fastgate.dll");
        Assert.True(File.Exists(dll), dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { dll, "run", "--config", path }) psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        var gateway = new FastgateProcess(process, port, adminPort);
        process.OutputDataReceived += (_, e) => { lock (gateway._output) gateway._output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (gateway._output) gateway._output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            if (process.HasExited) throw new InvalidOperationException($"fastgate exited with {process.ExitCode}:\n{gateway.Output}");
            try
            {
                if ((await http.GetAsync($"http://127.0.0.1:{adminPort}/healthz")).StatusCode == HttpStatusCode.OK) return gateway;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"fastgate did not become healthy:\n{gateway.Output}");
            await Task.Delay(50); // waiting for an external process to come up, not for test time
        }
    }

    public HttpClient CreateClient() => new(new SocketsHttpHandler { UseProxy = false })
    {
        BaseAddress = new Uri($"http://127.0.0.1:{Port}"),
        Timeout = TimeSpan.FromSeconds(15),
    };

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
