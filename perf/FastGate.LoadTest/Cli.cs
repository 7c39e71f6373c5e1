using System.Globalization;
using System.Net;
using FastGate.LoadTest.Load;
using FastGate.LoadTest.Metrics;
using FastGate.LoadTest.Reports;
using FastGate.LoadTest.Scenarios;
using FastGate.LoadTest.Thresholds;

namespace FastGate.LoadTest;

/// <summary>Exit codes: 0 all thresholds held, 1 a threshold was breached, 2 bad usage or refused target.</summary>
public static class Cli
{
    public const int Ok = 0, Breached = 1, Usage = 2;
    public const double MaxRate = 1_000_000;
    public static readonly TimeSpan MaxDuration = TimeSpan.FromHours(1);

    public const string Help = """
        fastgate-load: open-model HTTP/1.1 load generator with thresholds and reports

          --target <url>         http://127.0.0.1:PORT/ or http://[::1]:PORT/ (loopback only; required to run)
          --scenario <name>      a built-in scenario (see --list); default proxy
          --rate <rps>           arrival rate (open model); default 1000
          --ramp-from <rps>      ramp the arrival rate from this to --rate over the duration
          --users <n>            closed model: n users back to back instead of an arrival rate
          --duration <time>      measured time, e.g. 30s, 2m; default 10s
          --warmup <time>        unmeasured warm-up at the starting rate; default 2s
          --connections <n>      keep-alive connections for the open model; default 32
          --timeout <time>       per-request timeout; default 5s
          --threshold "<expr>"   repeatable, e.g. "p99<5ms" "errors<0.1%" "rps>=40000" "status429 between 0.4 and 0.6"
          --no-default-thresholds  only the --threshold rules, not the scenario's own
          --baseline <csv>       an earlier run's <scenario>-summary.csv for relative rules ("p99<=1.2x", "rps>=0.8x")
          --report-dir <dir>     default perf/reports/<timestamp>/
          --path <path>          request path (and query) for the scenarios; default: the --target URL's, else /
          --api-key <key>        X-API-Key for auth-apikey, rate-limited, mixed
          --api-keys <k1,k2,..>  one key per virtual user in turn
          --bearer-token <jwt>   for the jwt scenario
          --jwt-secret <secret>  jwt scenario without --bearer-token: mint an HS256 token with this secret
          --jwt-issuer <iss>     its iss; default https://load.fastgate.local
          --jwt-audience <aud>   its aud; default fastgate-load
          --policy-file <file>   the reload scenario rewrites it every second
          --hostile-rate <n>     bad requests per second from the hostile client; default 50
          --slowloris <n>        slowloris connections of the hostile client; default 20
          --precise              yield instead of sleeping between sends (sub-ms send lag, one busy core)
          --quiet                no per-second progress
          --list                 list the scenarios

        fastgate-load ai --gateway <AI route url> --admin <admin url> --ports a,b,c,d [--duration 10s --concurrency 16
          --latency-requests 1000 --alloc-requests 10 --events 2000 --report file.md]: issue 15's AI measurements
          (fake providers on those ports; perf/ai.sh starts the gateway and runs it)
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (args.Length > 0 && args[0] == "ai") return await Ai.AiBench.RunAsync(args[1..], stdout, stderr).ConfigureAwait(false);
        CliOptions o;
        try { o = CliOptions.Parse(args); }
        catch (FormatException e)
        {
            stderr.WriteLine("error: " + e.Message);
            stderr.WriteLine("run with --help for the options");
            return Usage;
        }
        if (o.Help) { stdout.WriteLine(Help); return Ok; }
        if (o.List)
        {
            foreach (var s in BuiltInScenarios.All) stdout.WriteLine($"{s.Name,-14} {s.Description}");
            return Ok;
        }
        if (o.Target is null)
        {
            stderr.WriteLine("error: --target is required (a loopback URL such as http://127.0.0.1:8080/); `make load` starts a gateway and passes it");
            return Usage;
        }
        if (!TryResolveLoopback(o.Target, out var endpoint, out string host, out string? why))
        {
            stderr.WriteLine("error: " + why);
            return Usage;
        }
        var entry = BuiltInScenarios.Find(o.Scenario);
        if (entry is null)
        {
            stderr.WriteLine($"error: unknown scenario '{o.Scenario}'; --list shows them");
            return Usage;
        }
        if (entry.Name == "reload" && o.Options.PolicyFile is { } pf && !File.Exists(pf))
        {
            stderr.WriteLine($"error: --policy-file {pf} does not exist");
            return Usage;
        }

        Baseline? baseline = null;
        if (o.BaselineFile is { } bf)
        {
            if (!File.Exists(bf)) { stderr.WriteLine($"error: --baseline {bf} does not exist"); return Usage; }
            baseline = Baseline.Load(bf);
        }

        var scenario = entry.Build(o.Profile, o.Options);
        if (o.NoDefaultThresholds) scenario = StripThresholds(scenario, entry, o);
        var settings = new RunSettings
        {
            Endpoint = endpoint,
            Host = host,
            Target = o.Target,
            Connections = o.Connections,
            Timeout = o.Timeout,
            Precise = o.Precise,
            Progress = o.Quiet ? null : stdout,
            Options = o.Options,
            Baseline = baseline,
        };

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        RunResult result;
        try
        {
            result = await new LoadRunner(settings).RunAsync(scenario, o.Thresholds, cts.Token).ConfigureAwait(false);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }

        string dir = o.ReportDir ?? Path.Combine("perf", "reports", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        var files = ReportWriter.Write(result, dir);
        stdout.WriteLine();
        stdout.WriteLine(SummaryTable(result));
        stdout.WriteLine("reports: " + string.Join(", ", files));
        foreach (var t in result.Thresholds.Where(t => !t.Passed)) stderr.WriteLine($"threshold breached: {t.Expression} (actual {t.Actual})");
        return result.Passed ? Ok : Breached;
    }

    private static Scenario StripThresholds(Scenario built, BuiltInScenarios.Entry entry, CliOptions o)
    {
        // Rebuild without the scenario's own rules: same requests, load and side activities.
        var s = Scenario.Create(entry.Name).WithDescription(built.Description).WithRequests(built.Requests).WithLoad([.. built.Load]);
        return built.SideActivities.Count == 0 ? s : s.WithSideActivities([.. built.SideActivities]);
    }

    public static string SummaryTable(RunResult r)
    {
        var l = r.LatencySummary;
        var g = r.SendLagSummary;
        var lines = new List<string>
        {
            $"scenario {r.Scenario}: {(r.Passed ? "PASSED" : "FAILED")}  ({r.Counts.Requests} requests in {Format.Num(r.MeasuredSeconds, "0.##")}s, warm-up excluded)",
            "  throughput      " + Format.Num(r.Rps, "0.#") + " rps",
            $"  latency         p50 {Format.Latency(l.P50)}  p90 {Format.Latency(l.P90)}  p99 {Format.Latency(l.P99)}  p99.9 {Format.Latency(l.P999)}  max {Format.Latency(l.Max)}",
            $"  send lag        p50 {Format.Latency(g.P50)}  p99 {Format.Latency(g.P99)}  max {Format.Latency(g.Max)}  (generator allocated {(r.Counts.Requests == 0 ? 0 : r.ClientAllocatedBytes / r.Counts.Requests)} B/request)",
            "  status          " + string.Join("  ", Enumerable.Range(100, 500).Where(s => r.Counts.Status[s] > 0).Select(s => $"{s}: {r.Counts.Status[s]}")),
            $"  errors          {r.Counts.ErrorTotal} ({Format.Num(r.ErrorShare * 100, "0.###")}%)  connect {r.Counts.Errors[(int)ErrorKind.Connect]}  timeout {r.Counts.Errors[(int)ErrorKind.Timeout]}  reset {r.Counts.Errors[(int)ErrorKind.Reset]}  protocol {r.Counts.Errors[(int)ErrorKind.Protocol]}  unexpected status {r.Counts.Errors[(int)ErrorKind.UnexpectedStatus]}  missing 429 headers {r.Counts.Errors[(int)ErrorKind.MissingHeaders]}",
        };
        foreach (var (k, v) in r.SideCounters) lines.Add($"  side            {k}: {v}");
        foreach (var t in r.Thresholds) lines.Add($"  {(t.Passed ? "pass    " : "BREACHED")}        {t.Expression}  (actual {t.Actual})");
        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>Accepts only http URLs whose host is a loopback address (127.0.0.0/8, ::1, localhost). No DNS.</summary>
    public static bool TryResolveLoopback(string target, out IPEndPoint endpoint, out string host, out string? error)
    {
        endpoint = null!;
        host = "";
        if (!Uri.TryCreate(target, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            error = $"--target '{target}' is not an http URL";
            return false;
        }
        if (uri.Scheme == Uri.UriSchemeHttps)
        {
            error = "--target: https is not supported by the load client; target the plain-HTTP listener";
            return false;
        }
        IPAddress? address = uri.HostNameType switch
        {
            UriHostNameType.IPv4 or UriHostNameType.IPv6 => IPAddress.Parse(uri.Host.Trim('[', ']')),
            _ when uri.Host.Equals("localhost", StringComparison.OrdinalIgnoreCase) => IPAddress.Loopback,
            _ => null,
        };
        if (address is { IsIPv4MappedToIPv6: true }) address = address.MapToIPv4();
        if (address is null || !IPAddress.IsLoopback(address))
        {
            error = $"refusing --target '{target}': the load generator only sends traffic to loopback addresses (127.0.0.1, ::1, localhost)";
            return false;
        }
        endpoint = new IPEndPoint(address, uri.Port);
        host = uri.Authority;
        error = null;
        return true;
    }
}

/// <summary>Parsed command line.</summary>
public sealed record CliOptions
{
    public string? Target { get; init; }
    public string Scenario { get; init; } = "proxy";
    public LoadProfile Profile { get; init; } = new();
    public int Connections { get; init; } = 32;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(5);
    public List<Threshold> Thresholds { get; init; } = [];
    public bool NoDefaultThresholds { get; init; }
    public string? ReportDir { get; init; }
    public string? BaselineFile { get; init; }
    public ScenarioOptions Options { get; init; } = new();
    public bool Precise { get; init; }
    public bool Quiet { get; init; }
    public bool List { get; init; }
    public bool Help { get; init; }

    public static CliOptions Parse(IReadOnlyList<string> args)
    {
        var o = new CliOptions();
        var profile = new LoadProfile();
        var so = new ScenarioOptions();
        bool pathGiven = false;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            string Next()
            {
                if (i + 1 >= args.Count) throw new FormatException($"{a} needs a value");
                return args[++i];
            }
            switch (a)
            {
                case "--target": o = o with { Target = Next() }; break;
                case "--scenario": o = o with { Scenario = Next() }; break;
                case "--rate": profile = profile with { Rate = Rate(a, Next()) }; break;
                case "--ramp-from": profile = profile with { RampFrom = Rate(a, Next(), allowZero: true) }; break;
                case "--users": profile = profile with { Users = Int(a, Next(), 1, 10_000) }; break;
                case "--duration": profile = profile with { Duration = Time(a, Next(), allowZero: false) }; break;
                case "--warmup": profile = profile with { Warmup = Time(a, Next(), allowZero: true) }; break;
                case "--connections": o = o with { Connections = Int(a, Next(), 1, 10_000) }; break;
                case "--timeout": o = o with { Timeout = Time(a, Next(), allowZero: false) }; break;
                case "--threshold":
                    string expr = Next();
                    if (!Threshold.TryParse(expr, out var t, out string? err)) throw new FormatException(err);
                    o.Thresholds.Add(t);
                    break;
                case "--no-default-thresholds": o = o with { NoDefaultThresholds = true }; break;
                case "--report-dir": o = o with { ReportDir = Next() }; break;
                case "--baseline": o = o with { BaselineFile = Next() }; break;
                case "--path":
                    string path = Next();
                    if (!path.StartsWith('/')) throw new FormatException("--path must start with '/'");
                    so = so with { Path = path };
                    pathGiven = true;
                    break;
                case "--api-key": so = so with { ApiKey = Next() }; break;
                case "--api-keys": so = so with { ApiKeys = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) }; break;
                case "--bearer-token": so = so with { BearerToken = Next() }; break;
                case "--jwt-secret": so = so with { JwtSecret = Next() }; break;
                case "--jwt-issuer": so = so with { JwtIssuer = Next() }; break;
                case "--jwt-audience": so = so with { JwtAudience = Next() }; break;
                case "--policy-file": so = so with { PolicyFile = Next() }; break;
                case "--hostile-rate": so = so with { HostileRate = Rate(a, Next(), allowZero: false) }; break;
                case "--slowloris": so = so with { SlowlorisConnections = Int(a, Next(), 0, 1000) }; break;
                case "--precise": o = o with { Precise = true }; break;
                case "--quiet": o = o with { Quiet = true }; break;
                case "--list": o = o with { List = true }; break;
                case "--help" or "-h": o = o with { Help = true }; break;
                default: throw new FormatException($"unknown option '{a}'");
            }
        }
        // The target URL's path and query are what is requested, unless --path names them (then the target may only
        // name the root, so that one run never reports one path while loading another).
        if (o.Target is not null && TargetPathAndQuery(o.Target) is { } targetPath)
        {
            if (!pathGiven) so = so with { Path = targetPath };
            else if (targetPath != "/" && targetPath != so.Path)
                throw new FormatException($"--target names the path '{targetPath}' and --path '{so.Path}': give the path in one of them");
        }
        return o with { Profile = profile, Options = so };
    }

    /// <summary>The path and query of an http URL exactly as written ("/" when it has none; no fragment), or null.</summary>
    public static string? TargetPathAndQuery(string target)
    {
        int scheme = target.IndexOf("://", StringComparison.Ordinal);
        if (scheme < 0) return null;
        int start = target.AsSpan(scheme + 3).IndexOfAny('/', '?', '#');
        if (start < 0) return "/";
        string rest = target[(scheme + 3 + start)..];
        int fragment = rest.IndexOf('#');
        if (fragment >= 0) rest = rest[..fragment];
        if (rest.Length == 0) return "/";
        return rest[0] == '?' ? "/" + rest : rest;
    }

    private static double Rate(string name, string v, bool allowZero = false)
    {
        if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double r) || double.IsNaN(r) || r < 0 || (!allowZero && r == 0) || r > Cli.MaxRate)
            throw new FormatException($"{name} '{v}': a rate in requests per second, up to {Cli.MaxRate}");
        return r;
    }

    private static int Int(string name, string v, int min, int max)
    {
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) || n < min || n > max)
            throw new FormatException($"{name} '{v}': a whole number from {min} to {max}");
        return n;
    }

    private static TimeSpan Time(string name, string v, bool allowZero)
    {
        if (!Format.TryParseDuration(v, out var d) || (!allowZero && d == TimeSpan.Zero) || d > Cli.MaxDuration)
            throw new FormatException($"{name} '{v}': a duration such as 500ms, 10s or 2m (at most 1h)");
        return d;
    }
}
