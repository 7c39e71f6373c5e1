using System.Diagnostics;
using System.Text;
using FastGate.Configuration;

namespace FastGate.Server;

/// <summary>
/// <c>fastgate service unit|install|uninstall</c>: runs the gateway as a managed service. On Linux a systemd unit
/// (Type=notify: the gateway reports READY=1 once its listeners are bound and STOPPING=1 when the drain starts,
/// through Microsoft.Extensions.Hosting.Systemd; SIGHUP reloads the config); on Windows a service created with
/// sc.exe (the gateway runs under the service control manager through Microsoft.Extensions.Hosting.WindowsServices).
/// The config is validated first: a unit is never installed for a file that would not start.
/// </summary>
public static class ServiceCommand
{
    public const string Usage = """
        fastgate service unit --config <file> [--user <name>] [--name <unit>]
            print the systemd unit for this config
        fastgate service install --config <file> [--user <name>] [--name <unit>] [--unit-dir <dir>] [--no-enable]
            Linux: write <unit-dir>/<unit>.service (default /etc/systemd/system/fastgate.service), then
            `systemctl daemon-reload` and `systemctl enable --now <unit>` (not with --no-enable);
            Windows: `sc.exe create <unit>` (start=auto) and start it
        fastgate service uninstall [--name <unit>] [--unit-dir <dir>] [--no-enable]
            stop and remove the service (--no-enable: only remove the unit file)
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length < 2 || args[1] is not ("unit" or "install" or "uninstall"))
            return Fail(stderr, "service takes unit, install or uninstall", usage: true);
        string verb = args[1];
        string? config = null, user = null;
        string name = "fastgate", unitDir = "/etc/systemd/system";
        bool manage = true;
        for (int i = 2; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--config" or "-c" when i + 1 < args.Length && verb != "uninstall": config = args[++i]; break;
                case "--user" when i + 1 < args.Length && verb != "uninstall": user = args[++i]; break;
                case "--name" when i + 1 < args.Length: name = args[++i]; break;
                case "--unit-dir" when i + 1 < args.Length && verb != "unit": unitDir = args[++i]; break;
                case "--no-enable" when verb != "unit": manage = false; break;
                default: return Fail(stderr, $"unknown argument '{args[i]}'", usage: true);
            }
        }
        if (!IsUnitName(name)) return Fail(stderr, $"'{name}' is not a service name (letters, digits, '-', '_', '.')");
        if (user is not null && !IsUnitName(user)) return Fail(stderr, $"'{user}' is not a user name");

        if (verb == "uninstall") return OperatingSystem.IsWindows() ? await UninstallWindowsAsync(name, stdout, stderr) : await UninstallAsync(name, unitDir, manage, stdout, stderr);

        config ??= Environment.GetEnvironmentVariable(Cli.ConfigEnvironmentVariable) is { Length: > 0 } e ? e : null;
        if (config is null) return Fail(stderr, "--config <file> is required", usage: true);
        var full = Path.GetFullPath(config);
        var loaded = ConfigLoader.LoadFile(full);
        if (!loaded.IsValid)
        {
            stderr.WriteLine($"{config}: {loaded.Errors.Count} error(s); no service installed");
            foreach (var err in loaded.Errors) stderr.WriteLine($"  {err}");
            return 1;
        }
        var command = GatewayCommand(full);
        if (OperatingSystem.IsWindows())
        {
            if (verb == "unit") return Fail(stderr, "service unit prints a systemd unit (Linux); on Windows use service install");
            return await InstallWindowsAsync(name, command, stdout, stderr);
        }
        var unit = SystemdUnit(command, loaded.Config!, user);
        if (verb == "unit")
        {
            stdout.Write(unit);
            return 0;
        }
        return await InstallAsync(name, unitDir, unit, manage, stdout, stderr);
    }

    /// <summary>How this very executable runs the gateway on <paramref name="configPath"/>: the Native AOT binary
    /// itself, or `dotnet fastgate.dll` when it runs on the shared runtime.</summary>
    public static string[] GatewayCommand(string configPath)
    {
        var process = Environment.ProcessPath ?? "fastgate";
        var exe = Path.GetFileNameWithoutExtension(process);
        var dll = Path.Combine(AppContext.BaseDirectory, "fastgate.dll");
        return exe.Equals("dotnet", StringComparison.OrdinalIgnoreCase) && File.Exists(dll)
            ? [process, dll, "run", "--config", configPath]
            : [process, "run", "--config", configPath];
    }

    /// <summary>The unit: notify readiness, reload by SIGHUP, a stop timeout beyond the drain, and a sandbox that
    /// leaves the gateway only what it needs (its config readable, the access-log directory writable, low ports).</summary>
    public static string SystemdUnit(string[] command, GatewayConfig config, string? user)
    {
        var drain = (int)Math.Ceiling(config.Limits.DrainTimeout.TotalSeconds);
        var sb = new StringBuilder();
        sb.Append("# Written by `fastgate service install`; `fastgate service uninstall` removes it.\n");
        sb.Append("[Unit]\nDescription=FastGate API gateway\n");
        sb.Append("Wants=network-online.target\nAfter=network-online.target\n\n");
        sb.Append("[Service]\nType=notify\n");
        sb.Append("ExecStart=").Append(string.Join(' ', command.Select(Quote))).Append('\n');
        sb.Append("ExecReload=/bin/kill -HUP $MAINPID\n");
        sb.Append("Restart=on-failure\nRestartSec=2s\n");
        sb.Append("TimeoutStopSec=").Append(drain + 10).Append("s\n");
        sb.Append("KillSignal=SIGTERM\n");
        if (user is null) sb.Append("DynamicUser=yes\n");
        else sb.Append("User=").Append(user).Append("\nGroup=").Append(user).Append('\n');
        sb.Append("AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n");
        sb.Append("NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=read-only\nPrivateTmp=yes\nPrivateDevices=yes\n");
        sb.Append("ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes\n");
        sb.Append("ProtectClock=yes\nProtectHostname=yes\nRestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\n");
        sb.Append("LockPersonality=yes\nRestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n");
        sb.Append("LimitNOFILE=1048576\n");
        var log = config.Observability.AccessLog;
        if (log.Enabled && log.Path is not ("stdout" or "") && Path.GetDirectoryName(log.Path) is { Length: > 0 } dir)
            sb.Append("ReadWritePaths=").Append(Quote(dir)).Append('\n');
        // the .NET runtime's own files (no shared-memory diagnostics under ProtectSystem=strict)
        sb.Append("Environment=DOTNET_EnableDiagnostics=0\n");
        sb.Append("\n[Install]\nWantedBy=multi-user.target\n");
        return sb.ToString();
    }

    /// <summary>A word of ExecStart: quoted when it holds a space; '%' and '$' escaped (systemd specifiers and
    /// variables), so a path can never expand into something else.</summary>
    public static string Quote(string word)
    {
        var escaped = word.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("%", "%%").Replace("$", "$$");
        return escaped.Any(c => c is ' ' or '\t' or '\'' or ';') || escaped.Length == 0 ? $"\"{escaped}\"" : escaped;
    }

    private static bool IsUnitName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') && name[0] != '.';

    private static async Task<int> InstallAsync(string name, string unitDir, string unit, bool manage, TextWriter stdout, TextWriter stderr)
    {
        var file = Path.Combine(unitDir, name + ".service");
        try
        {
            Directory.CreateDirectory(unitDir);
            var temp = file + ".tmp";
            await File.WriteAllTextAsync(temp, unit);
            File.Move(temp, file, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Fail(stderr, $"cannot write {file}: {e.Message} (run as root, or give --unit-dir)");
        }
        stdout.WriteLine($"wrote {file}");
        if (!manage)
        {
            stdout.WriteLine($"start it with: systemctl daemon-reload && systemctl enable --now {name}");
            return 0;
        }
        if (await RunToolAsync("systemctl", ["daemon-reload"], stderr) != 0) return 1;
        if (await RunToolAsync("systemctl", ["enable", "--now", name], stderr) != 0) return 1;
        stdout.WriteLine($"{name} enabled and started (journalctl -u {name} shows its log)");
        return 0;
    }

    private static async Task<int> UninstallAsync(string name, string unitDir, bool manage, TextWriter stdout, TextWriter stderr)
    {
        var file = Path.Combine(unitDir, name + ".service");
        if (!File.Exists(file)) return Fail(stderr, $"{file} does not exist");
        if (!File.ReadAllText(file).StartsWith("# Written by `fastgate service install`", StringComparison.Ordinal))
            return Fail(stderr, $"{file} was not written by fastgate; left in place");
        if (manage && await RunToolAsync("systemctl", ["disable", "--now", name], stderr) != 0) return 1;
        File.Delete(file);
        stdout.WriteLine($"removed {file}");
        if (manage) await RunToolAsync("systemctl", ["daemon-reload"], stderr);
        return 0;
    }

    private static async Task<int> InstallWindowsAsync(string name, string[] command, TextWriter stdout, TextWriter stderr)
    {
        var binPath = string.Join(' ', command.Select(w => w.Contains(' ') ? $"\"{w}\"" : w));
        if (await RunToolAsync("sc.exe", ["create", name, "binPath=", binPath, "start=", "auto", "DisplayName=", "FastGate API gateway"], stderr) != 0) return 1;
        if (await RunToolAsync("sc.exe", ["start", name], stderr) != 0) return 1;
        stdout.WriteLine($"service {name} created and started");
        return 0;
    }

    private static async Task<int> UninstallWindowsAsync(string name, TextWriter stdout, TextWriter stderr)
    {
        await RunToolAsync("sc.exe", ["stop", name], stderr);
        if (await RunToolAsync("sc.exe", ["delete", name], stderr) != 0) return 1;
        stdout.WriteLine($"service {name} removed");
        return 0;
    }

    private static async Task<int> RunToolAsync(string tool, string[] args, TextWriter stderr)
    {
        var psi = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            var err = await p.StandardError.ReadToEndAsync();
            await p.WaitForExitAsync();
            if (p.ExitCode != 0) stderr.WriteLine($"fastgate: {tool} {string.Join(' ', args)} failed ({p.ExitCode}): {err.Trim()}");
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            stderr.WriteLine($"fastgate: cannot run {tool}: {e.Message}");
            return 127;
        }
    }

    private static int Fail(TextWriter stderr, string message, bool usage = false)
    {
        stderr.WriteLine($"fastgate: {message}");
        if (usage) stderr.WriteLine(Usage);
        return usage ? 2 : 1;
    }
}
