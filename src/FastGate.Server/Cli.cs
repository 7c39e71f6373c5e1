using System.Reflection;
using FastGate.Configuration;
using FastGate.Hosting;
using Microsoft.Extensions.Logging;

namespace FastGate.Server;

/// <summary>The <c>fastgate</c> command line: run, validate, version.</summary>
public static class Cli
{
    public const string Usage = """
        usage: fastgate <command> [options]

        commands:
          run --config <file>        run the gateway with this configuration
          validate --config <file>   check a configuration; prints every error with its JSON path
          version                    print the version
          hash-key <key>             print the "sha256:<hex>" form of an API key for a consumer's apiKeys
          new-key                    create a random API key and print it with its hash
          service unit|install|uninstall
                                     run as a systemd (Linux) or Windows service; `fastgate service` for details

        options:
          --config <file>            the configuration file (JSON; comments and trailing commas allowed);
                                     without it, the file named by the FASTGATE_CONFIG environment variable
          --log-level <level>        trace, debug, information (default), warning, error
        """;

    /// <summary>The environment variable naming the configuration file when <c>--config</c> is not given.</summary>
    public const string ConfigEnvironmentVariable = "FASTGATE_CONFIG";

    public static string Version =>
        typeof(Cli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancel = default)
    {
        if (args.Length == 0) return UsageError(stderr, "no command given");
        string command = args[0];
        if (command is "-h" or "--help" or "help")
        {
            stdout.WriteLine(Usage);
            return 0;
        }
        if (command is "version" or "--version")
        {
            if (args.Length > 1) return UsageError(stderr, $"unexpected argument '{args[1]}'");
            stdout.WriteLine($"fastgate {Version}");
            return 0;
        }
        if (command == "hash-key")
        {
            if (args.Length != 2 || args[1].Length == 0) return UsageError(stderr, "hash-key takes exactly one key");
            stdout.WriteLine(Security.ApiKeys.Hash(args[1]));
            return 0;
        }
        if (command == "new-key")
        {
            if (args.Length != 1) return UsageError(stderr, $"unexpected argument '{args[1]}'");
            var key = Security.ApiKeys.NewKey();
            stdout.WriteLine($"key:  {key}");
            stdout.WriteLine($"hash: {Security.ApiKeys.Hash(key)}");
            return 0;
        }
        if (command == "service") return await ServiceCommand.RunAsync(args, stdout, stderr);
        if (command is not ("run" or "validate")) return UsageError(stderr, $"unknown command '{command}'");

        string? config = null;
        var level = LogLevel.Information;
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--config" or "-c" when i + 1 < args.Length:
                    config = args[++i];
                    break;
                case "--log-level" when i + 1 < args.Length && command == "run":
                    if (!Enum.TryParse(args[++i], ignoreCase: true, out level)) return UsageError(stderr, $"unknown log level '{args[i]}'");
                    break;
                default:
                    return UsageError(stderr, $"unknown argument '{args[i]}'");
            }
        }
        // without --config, the environment names the file (containers, service units)
        if (config is null && Environment.GetEnvironmentVariable(ConfigEnvironmentVariable) is { Length: > 0 } fromEnv) config = fromEnv;
        if (config is null) return UsageError(stderr, $"--config <file> is required (or set {ConfigEnvironmentVariable})");

        var loaded = ConfigLoader.LoadFile(config);
        if (!loaded.IsValid)
        {
            stderr.WriteLine($"{config}: {loaded.Errors.Count} error(s)");
            foreach (var e in loaded.Errors) stderr.WriteLine($"  {e}");
            return 1;
        }
        foreach (var w in loaded.Warnings) stderr.WriteLine($"{config}: warning: {w}");
        if (command == "validate")
        {
            stdout.WriteLine($"{config}: valid");
            return 0;
        }

        var (host, _) = GatewayHost.FromConfig(loaded, Path.GetFullPath(config), level);
        await using (host!)
        {
            await host!.StartAsync(cancel);
            var listeners = loaded.Config!.Listeners;
            for (int i = 0; i < host.ListenerEndPoints.Count; i++)
                stdout.WriteLine($"fastgate {Version}: listening on {(listeners[i].Tls is null ? "http" : "https")}://{host.ListenerEndPoints[i]}");
            if (host.AdminEndPoint is { } admin) stdout.WriteLine($"fastgate: admin on http://{admin} (/healthz /readyz /metrics)");
            stdout.Flush();
            await host.WaitForShutdownAsync(cancel);
        }
        return 0;
    }

    private static int UsageError(TextWriter stderr, string message)
    {
        stderr.WriteLine($"fastgate: {message}");
        stderr.WriteLine(Usage);
        return 2;
    }
}
