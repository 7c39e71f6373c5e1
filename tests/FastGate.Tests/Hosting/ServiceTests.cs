using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using FastGate.Server;
using FastGate.Tests.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

/// <summary>`fastgate service`: the systemd unit it writes, install/uninstall, and the notify protocol the unit relies on.</summary>
public class ServiceTests
{
    private static (string Dir, string Config) WriteConfig(string json)
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-svc-").FullName;
        var config = Path.Combine(dir, "gate way.json"); // a space: ExecStart must quote it
        File.WriteAllText(config, json);
        return (dir, config);
    }

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await Cli.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static Dictionary<string, List<string>> Section(string unit, string name)
    {
        var result = new Dictionary<string, List<string>>();
        string? current = null;
        foreach (var raw in unit.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            if (line[0] == '[') { current = line; continue; }
            if (current != $"[{name}]") continue;
            int eq = line.IndexOf('=');
            Assert.True(eq > 0, $"not a key=value line: {line}");
            var key = line[..eq];
            if (!result.TryGetValue(key, out var values)) result[key] = values = [];
            values.Add(line[(eq + 1)..]);
        }
        return result;
    }

    [Fact]
    public async Task Unit_RunsThisGatewayOnTheConfig_WithNotifyReloadDrainAndSandbox()
    {
        var logDir = Directory.CreateTempSubdirectory("fastgate-svc-log-").FullName;
        var json = $$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "http://127.0.0.1:9" } ] } ],
              "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ],
              "limits": { "drainTimeout": "20s" },
              "accessLog": { "path": "{{Path.Combine(logDir, "access.log")}}" }
            }
            """;
        var (_, config) = WriteConfig(json);
        var (code, unit, err) = await Run("service", "unit", "--config", config);
        Assert.True(code == 0, err);

        var service = Section(unit, "Service");
        Assert.Equal(["notify"], service["Type"]);
        var expected = string.Join(' ', ServiceCommand.GatewayCommand(Path.GetFullPath(config)).Select(ServiceCommand.Quote));
        Assert.Equal([expected], service["ExecStart"]);
        Assert.EndsWith($"run --config \"{Path.GetFullPath(config)}\"", expected);
        Assert.Equal(["/bin/kill -HUP $MAINPID"], service["ExecReload"]);
        Assert.Equal(["30s"], service["TimeoutStopSec"]); // the drain plus ten seconds
        Assert.Equal(["yes"], service["DynamicUser"]);
        Assert.Equal(["strict"], service["ProtectSystem"]);
        Assert.Equal(["yes"], service["NoNewPrivileges"]);
        Assert.Equal([logDir], service["ReadWritePaths"]);
        Assert.Equal(["multi-user.target"], Section(unit, "Install")["WantedBy"]);
        Assert.False(service.ContainsKey("User"));

        var (withUser, unit2, _) = await Run("service", "unit", "--config", config, "--user", "gateway");
        Assert.Equal(0, withUser);
        Assert.Equal(["gateway"], Section(unit2, "Service")["User"]);
        Assert.False(Section(unit2, "Service").ContainsKey("DynamicUser"));
    }

    [LinuxFact]
    public async Task Unit_PassesSystemdAnalyzeVerify_WithAConfigPathThatNeedsQuoting()
    {
        // systemd's own parser (systemd-analyze verify, from tests/install-deps.sh) reads the unit: an unknown key,
        // a bad value or an ExecStart it cannot split into an existing program is reported against the file
        var (dir, config) = WriteConfig(TestGateway.Config("http://127.0.0.1:9"));
        var (code, unit, err) = await Run("service", "unit", "--config", config);
        Assert.True(code == 0, err);
        var file = Path.Combine(dir, "fastgate-verify.service");
        await File.WriteAllTextAsync(file, unit);
        var psi = new ProcessStartInfo("systemd-analyze", ["verify", file]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = await p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        var about = (await stdout + stderr).Split('\n').Where(l => l.Contains("fastgate-verify.service", StringComparison.Ordinal)).ToArray();
        Assert.True(p.ExitCode == 0 && about.Length == 0, $"systemd-analyze verify (exit {p.ExitCode}):\n{string.Join('\n', about)}\n{stderr}");
        // and the check bites: one unknown key is reported against the file
        await File.WriteAllTextAsync(file, unit.Replace("[Service]\n", "[Service]\nNoSuchKey=1\n"));
        using var bad = Process.Start(psi)!;
        var badErr = await bad.StandardError.ReadToEndAsync();
        await bad.WaitForExitAsync();
        Assert.Contains("NoSuchKey", badErr);
    }

    [Theory]
    [InlineData("/opt/fastgate/fastgate", "/opt/fastgate/fastgate")]
    [InlineData("/srv/my gate/fastgate.json", "\"/srv/my gate/fastgate.json\"")]
    [InlineData("/srv/100%/$HOME", "/srv/100%%/$$HOME")]
    public void Quote_KeepsAPathOneLiteralWord(string word, string expected) => Assert.Equal(expected, ServiceCommand.Quote(word));

    [Fact]
    public async Task Install_InvalidConfig_PrintsEveryErrorAndWritesNoUnit()
    {
        var (dir, config) = WriteConfig("""{ "listeners": [ { "address": "nowhere" } ], "routes": 3 }""");
        var unitDir = Path.Combine(dir, "units");
        var (code, _, err) = await Run("service", "install", "--config", config, "--unit-dir", unitDir, "--no-enable");
        Assert.Equal(1, code);
        Assert.Contains("$.listeners[0].address", err);
        Assert.Contains("$.routes", err);
        Assert.Contains("no service installed", err);
        Assert.False(Directory.Exists(unitDir) && Directory.EnumerateFiles(unitDir).Any());
    }

    [Fact]
    public async Task InstallThenUninstall_WritesAndRemovesTheUnit_AndLeavesAForeignUnitAlone()
    {
        var (dir, config) = WriteConfig(TestGateway.Config("http://127.0.0.1:9"));
        var unitDir = Path.Combine(dir, "units");
        var (code, output, err) = await Run("service", "install", "--config", config, "--unit-dir", unitDir, "--name", "edge-gw", "--no-enable");
        Assert.True(code == 0, err);
        var file = Path.Combine(unitDir, "edge-gw.service");
        Assert.Contains($"wrote {file}", output);
        var (_, printed, _) = await Run("service", "unit", "--config", config);
        Assert.Equal(printed, File.ReadAllText(file));

        Assert.Equal(0, (await Run("service", "uninstall", "--name", "edge-gw", "--unit-dir", unitDir, "--no-enable")).Code);
        Assert.False(File.Exists(file));

        var foreign = Path.Combine(unitDir, "other.service");
        File.WriteAllText(foreign, "[Service]\nExecStart=/bin/true\n");
        var refused = await Run("service", "uninstall", "--name", "other", "--unit-dir", unitDir, "--no-enable");
        Assert.Equal(1, refused.Code);
        Assert.Contains("not written by fastgate", refused.Err);
        Assert.True(File.Exists(foreign));

        Assert.Equal(1, (await Run("service", "install", "--config", config, "--unit-dir", unitDir, "--name", "../etc/x", "--no-enable")).Code);
        Assert.Equal(2, (await Run("service", "start")).Code);
    }

    /// <summary>
    /// The notify protocol of Type=notify, over a real AF_UNIX datagram socket: READY=1 only once the listeners are
    /// bound, STOPPING=1 when SIGTERM starts the drain. The gateway believes it runs under systemd when its parent
    /// process is named "systemd": the parent here is a copy of /bin/sh under that name.
    /// </summary>
    [LinuxFact]
    public async Task UnderSystemd_NotifiesReadyAfterBindingAndStoppingOnSigterm()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var (dir, config) = WriteConfig(TestGateway.Config(upstream.Address.ToString().TrimEnd('/')));
        var fakeSystemd = Path.Combine(dir, "systemd");
        File.Copy("/bin/sh", fakeSystemd);
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(fakeSystemd, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var socketPath = Path.Combine(dir, "notify.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(socketPath));

        var psi = new ProcessStartInfo(fakeSystemd) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // "; exit" keeps the shell alive as the parent (a lone command would be exec'd in its place)
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("\"$@\"; exit $?");
        psi.ArgumentList.Add("sh");
        psi.ArgumentList.Add("dotnet");
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fastgate.dll"));
        psi.ArgumentList.Add("run");
        psi.ArgumentList.Add("--config");
        psi.ArgumentList.Add(config);
        psi.Environment["NOTIFY_SOCKET"] = socketPath;
        psi.Environment.Remove("FASTGATE_CONFIG");
        using var shell = Process.Start(psi)!;
        var output = new StringBuilder();
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        shell.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.Contains("listening on")) listening.TrySetResult();
        };
        shell.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        shell.BeginOutputReadLine();
        shell.BeginErrorReadLine();
        try
        {
            var buffer = new byte[256];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            int n = await notify.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            Assert.Equal("READY=1", Encoding.ASCII.GetString(buffer, 0, n).Trim());
            Assert.True(listening.Task.IsCompleted || await Task.WhenAny(listening.Task, Task.Delay(TimeSpan.FromSeconds(10))) == listening.Task,
                "READY=1 came but the gateway never said it listens");

            int gateway = ChildOf(shell.Id);
            using (var kill = Process.Start("kill", ["-TERM", gateway.ToString()])) await kill.WaitForExitAsync();
            n = await notify.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            Assert.Equal("STOPPING=1", Encoding.ASCII.GetString(buffer, 0, n).Trim());
            await shell.WaitForExitAsync(timeout.Token);
            Assert.True(shell.ExitCode == 0, $"exit {shell.ExitCode}: {output}");
        }
        finally
        {
            if (!shell.HasExited) shell.Kill(entireProcessTree: true);
        }
    }

    private static int ChildOf(int pid)
    {
        foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            var children = File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (children.Length > 0) return int.Parse(children[0]);
        }
        throw new InvalidOperationException($"process {pid} has no child");
    }
}
