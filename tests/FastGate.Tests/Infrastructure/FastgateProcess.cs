using System.Diagnostics;
using System.Net;
using System.Net.Http;
using System.Text;
using System.Text.RegularExpressions;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// The real `fastgate` executable as a separate OS process (its own runtime, its own string-hash seed). Its config
/// binds port 0 (no port is picked for it in advance, so none can be taken in between): the ports it got are read
/// from the lines it prints once its listeners are bound, and that line is the readiness signal.
/// </summary>
public sealed partial class FastgateProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private FastgateProcess(Process process) => _process = process;

    /// <summary>The first listener's port.</summary>
    public int Port { get; private set; }
    /// <summary>The admin listener's port (0 when the config has none).</summary>
    public int AdminPort { get; private set; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    public string Output { get { lock (_output) return _output.ToString(); } }

    [GeneratedRegex(@"listening on https?://[^\s]*:(\d+)$")]
    private static partial Regex ListeningLine();

    [GeneratedRegex(@"admin on http://[^\s]*:(\d+) ")]
    private static partial Regex AdminLine();

    /// <summary>
    /// Writes <paramref name="configJson"/> (listeners and admin on "127.0.0.1:0") into <paramref name="directory"/>
    /// and starts `fastgate run` on it: with --config, or with <paramref name="configFromEnvironment"/> through
    /// FASTGATE_CONFIG only. Returns once the process has said where it listens.
    /// </summary>
    public static async Task<FastgateProcess> StartAsync(string directory, string configJson, string name = "fastgate.json",
        bool configFromEnvironment = false)
    {
        var path = Path.Combine(directory, name);
        File.WriteAllText(path, TestTransport.ForProcess(configJson));
        var dll = Path.Combine(AppContext.BaseDirectory, "fastgate.dll");
        Assert.True(File.Exists(dll), dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("run");
        if (configFromEnvironment) psi.Environment["FASTGATE_CONFIG"] = path;
        else
        {
            psi.Environment.Remove("FASTGATE_CONFIG");
            psi.ArgumentList.Add("--config");
            psi.ArgumentList.Add(path);
        }
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var gateway = new FastgateProcess(process)
        {
            _expectAdmin = System.Text.Json.JsonDocument.Parse(configJson).RootElement.TryGetProperty("admin", out _),
        };
        process.OutputDataReceived += (_, e) => gateway.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gateway._output) gateway._output.AppendLine(e.Data); };
        process.Exited += (_, _) => gateway._exited.TrySetResult();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool timedOut = false;
        try { await Task.WhenAny(gateway._ready.Task, gateway._exited.Task).WaitAsync(TimeSpan.FromSeconds(60)); }
        catch (TimeoutException) { timedOut = true; }
        if (gateway._ready.Task.IsCompleted) return gateway;
        string output = gateway.Output;
        int? code = timedOut ? null : process.ExitCode;
        await gateway.DisposeAsync();
        throw code is null
            ? new TimeoutException($"fastgate did not report its listeners within 60 s:\n{output}")
            : new InvalidOperationException($"fastgate exited with {code}:\n{output}");
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
        if (Port == 0 && ListeningLine().Match(line) is { Success: true } listening) Port = int.Parse(listening.Groups[1].Value);
        else if (AdminLine().Match(line) is { Success: true } admin) AdminPort = int.Parse(admin.Groups[1].Value);
        // the admin line comes after every listener line (Cli.RunAsync); a config without admin never prints it
        if (Port != 0 && (AdminPort != 0 || !_expectAdmin)) _ready.TrySetResult();
    }

    private bool _expectAdmin;

    public HttpClient CreateClient() => new(new SocketsHttpHandler { UseProxy = false })
    {
        BaseAddress = new Uri($"http://127.0.0.1:{Port}"),
        Timeout = TimeSpan.FromSeconds(15),
    };

    /// <summary>Sends SIGTERM (with kill(1)), as a service manager or the kubelet does.</summary>
    public async Task TerminateAsync()
    {
        using var kill = Process.Start("kill", $"-TERM {_process.Id}")!;
        await kill.WaitForExitAsync();
    }

    /// <summary>Waits for the process to exit on its own and returns its exit code (fails after the timeout).</summary>
    public async Task<int> WaitForExitAsync(TimeSpan? timeout = null)
    {
        await Eventually.SignalledAsync(_process.WaitForExitAsync(), "fastgate exited", timeout ?? TimeSpan.FromSeconds(20));
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { }
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
