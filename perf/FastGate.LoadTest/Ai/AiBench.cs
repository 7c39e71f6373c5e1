using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace FastGate.LoadTest.Ai;

/// <summary>
/// <c>fastgate-load ai</c>: issue 15's three AI measurements against a gateway started by perf/ai.sh (its config names
/// the ports of the fake providers this command starts on 127.0.0.1):
/// 1. failover: closed-loop load on alias <c>fo</c> (providers a and b, OpenAI-compatible), provider a killed half-way;
/// 2. time to first content event, client → provider c (or d, Anthropic) directly vs client → gateway → the same provider;
/// 3. allocated bytes per relayed SSE event (the gateway's <c>dotnet_gc_allocated_bytes_total</c> on its admin /metrics).
/// Bounded: every phase has a request count or a duration, every request a timeout; loopback only.
/// </summary>
public static class AiBench
{
    private sealed record Options(string Gateway, string Admin, int[] Ports, TimeSpan Duration, int Concurrency, int LatencyRequests, int AllocRequests, int LongEvents, string? Report,
        int Warmup, string[] Phases, TlsProvider? Tls)
    {
        public bool Runs(string phase) => Phases.Contains(phase);
    }

    /// <summary>Provider t: OpenAI-compatible over TLS on this port, with this PEM certificate and key (model "ot" on the gateway).</summary>
    private sealed record TlsProvider(int Port, string Certificate, string Key);

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        Options o;
        try { o = Parse(args); }
        catch (FormatException e) { stderr.WriteLine("error: " + e.Message); return Cli.Usage; }
        foreach (var u in new[] { o.Gateway, o.Admin })
            if (!Uri.TryCreate(u, UriKind.Absolute, out var uri) || !IPAddress.TryParse(uri.Host, out var ip) || !IPAddress.IsLoopback(ip))
            { stderr.WriteLine($"error: {u} is not a loopback http URL"); return Cli.Usage; }

        var a = new FakeLlmProvider(o.Ports[0], FakeWire.OpenAi);
        var b = new FakeLlmProvider(o.Ports[1], FakeWire.OpenAi);
        var c = new FakeLlmProvider(o.Ports[2], FakeWire.OpenAi);
        var d = new FakeLlmProvider(o.Ports[3], FakeWire.Anthropic);
        using var certificate = o.Tls is { } tp ? LoadCertificate(tp) : null;
        await using var t = certificate is not null ? new FakeLlmProvider(o.Tls!.Port, FakeWire.OpenAi, certificate) : null;
        var report = new StringBuilder();
        string load0 = LoadAvg();
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 1024, UseProxy = false, PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5) };
        // the direct calls to provider t trust exactly its certificate (the gateway checks it against its tls.ca)
        if (certificate is not null)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null && cert.GetCertHash().AsSpan().SequenceEqual(certificate.GetCertHash());
        using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(30) };
        try
        {
            report.AppendLine(CultureInfo.InvariantCulture, $"# fastgate-load ai, {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC");
            report.AppendLine();
            report.AppendLine(CultureInfo.InvariantCulture, $"- Machine: {Environment.ProcessorCount} CPUs; load average at start {load0}");
            report.AppendLine();
            if (o.Runs("latency")) await LatencyAsync(http, o, report, stdout).ConfigureAwait(false);
            if (o.Runs("alloc")) await AllocationAsync(http, o, report, stdout).ConfigureAwait(false);
            if (o.Runs("kill")) await FailoverAsync(http, o, a, b, report, stdout).ConfigureAwait(false);
            if (o.Runs("failover"))
            {
                var e = new FakeLlmProvider(o.Ports[4], FakeWire.OpenAi);
                await e.DisposeAsync().ConfigureAwait(false); // provider k: its port taken and closed, as by a killed process
                await FailoverCostAsync(http, o, report, stdout).ConfigureAwait(false);
            }
            report.AppendLine(CultureInfo.InvariantCulture, $"- Load average at end: {LoadAvg()}");
        }
        finally
        {
            await a.DisposeAsync().ConfigureAwait(false);
            await b.DisposeAsync().ConfigureAwait(false);
            await c.DisposeAsync().ConfigureAwait(false);
            await d.DisposeAsync().ConfigureAwait(false);
        }
        stdout.WriteLine();
        stdout.WriteLine(report.ToString());
        if (o.Report is { } file)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(file))!);
            await File.WriteAllTextAsync(file, report.ToString()).ConfigureAwait(false);
            stdout.WriteLine("report: " + file);
        }
        return Cli.Ok;
    }

    // ---- 2. time to first content event -------------------------------------------------------------------------
    private static async Task LatencyAsync(HttpClient http, Options o, StringBuilder report, TextWriter stdout)
    {
        report.AppendLine(CultureInfo.InvariantCulture, $"## Time to first content event (1 client, back to back, direct and through the gateway alternating, after {o.Warmup} warm-up pairs)");
        report.AppendLine();
        report.AppendLine("| provider | path | requests | p50 µs | p99 µs | added p50 µs | added p99 µs |");
        report.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        var runtime = new List<string>();
        var providers = new List<(string, string, string, FakeWire)>
        {
            ("OpenAI-compatible (c)", "oa", $"http://127.0.0.1:{o.Ports[2]}/v1/chat/completions", FakeWire.OpenAi),
            ("Anthropic Messages (d)", "an", $"http://127.0.0.1:{o.Ports[3]}/v1/messages", FakeWire.Anthropic),
        };
        if (o.Tls is { } tls) providers.Add(("OpenAI-compatible over TLS (t)", "ot", $"https://127.0.0.1:{tls.Port}/v1/chat/completions", FakeWire.OpenAi));
        foreach (var (name, model, direct, wire) in providers)
        {
            var directTimes = new List<double>();
            var gatewayTimes = new List<double>();
            int warm = o.Warmup;
            (double Gen0, double Gen1, double Gen2, double Jit) before = default;
            for (int i = 0; i < warm + o.LatencyRequests; i++)
            {
                if (i == warm) before = await RuntimeCountsAsync(http, o.Admin).ConfigureAwait(false);
                var dr = await StreamAsync(http, direct, DirectBody(wire, 5, 0), wire).ConfigureAwait(false);
                var gr = await StreamAsync(http, o.Gateway + "/v1/chat/completions", GatewayBody(model, 5, 0, true), FakeWire.OpenAi).ConfigureAwait(false);
                if (i < warm) continue;
                if (dr.Kind == Result.Ok) directTimes.Add(dr.FirstEventUs);
                if (gr.Kind == Result.Ok) gatewayTimes.Add(gr.FirstEventUs);
            }
            var after = await RuntimeCountsAsync(http, o.Admin).ConfigureAwait(false);
            runtime.Add(string.Create(CultureInfo.InvariantCulture,
                $"- {name}: during the {o.LatencyRequests} measured pairs the gateway ran {after.Gen0 - before.Gen0:F0} gen-0, {after.Gen1 - before.Gen1:F0} gen-1 and {after.Gen2 - before.Gen2:F0} gen-2 collections and JIT-compiled {after.Jit - before.Jit:F0} methods"));
            directTimes.Sort();
            gatewayTimes.Sort();
            double d50 = Pct(directTimes, 0.5), d99 = Pct(directTimes, 0.99), g50 = Pct(gatewayTimes, 0.5), g99 = Pct(gatewayTimes, 0.99);
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | client → provider | {directTimes.Count} | {d50:F0} | {d99:F0} | | |");
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | client → gateway → provider | {gatewayTimes.Count} | {g50:F0} | {g99:F0} | {g50 - d50:F0} | {g99 - d99:F0} |");
            stdout.WriteLine($"ai: first event via {name}: direct p50 {d50:F0} µs, gateway p50 {g50:F0} µs");
        }
        report.AppendLine();
        foreach (var line in runtime) report.AppendLine(line);
        report.AppendLine();
    }

    // ---- 4. the failover latency on its own ---------------------------------------------------------------------
    private static async Task FailoverCostAsync(HttpClient http, Options o, StringBuilder report, TextWriter stdout)
    {
        var plain = new List<double>();
        var failover = new List<double>();
        int warm = Math.Min(200, o.LatencyRequests / 5), failed = 0;
        string gatewayBase = o.Gateway[..o.Gateway.LastIndexOf('/')];
        double failovers0 = await FailoversAsync(http, o.Admin).ConfigureAwait(false);
        for (int i = 0; i < warm + o.LatencyRequests; i++)
        {
            await Task.Delay(2).ConfigureAwait(false); // past k's 1 ms cooldown: every /aik call tries k first
            var pr = await StreamAsync(http, o.Gateway + "/v1/chat/completions", GatewayBody("oa", 5, 0, true), FakeWire.OpenAi).ConfigureAwait(false);
            var fr = await StreamAsync(http, gatewayBase + "/aik/v1/chat/completions", GatewayBody("oa", 5, 0, true), FakeWire.OpenAi).ConfigureAwait(false);
            if (i < warm) continue;
            if (fr.Kind != Result.Ok) failed++;
            if (pr.Kind == Result.Ok) plain.Add(pr.FirstEventUs);
            if (fr.Kind == Result.Ok) failover.Add(fr.FirstEventUs);
        }
        plain.Sort();
        failover.Sort();
        double failovers = await FailoversAsync(http, o.Admin).ConfigureAwait(false) - failovers0;
        report.AppendLine("## Failover latency (every call to /aik tries the killed provider k first, then c; /ai goes to c; alternating, 1 client)");
        report.AppendLine();
        report.AppendLine("| path | requests | failed | p50 µs | p99 µs | max µs |");
        report.AppendLine("|---|---:|---:|---:|---:|---:|");
        report.AppendLine(Row("gateway → c", plain, failed: "0"));
        report.AppendLine(Row("gateway → k (refused) → c", failover, failed: failed.ToString(CultureInfo.InvariantCulture)));
        report.AppendLine(CultureInfo.InvariantCulture, $"| added by the failover | | | {Pct(failover, 0.5) - Pct(plain, 0.5):F0} | {Pct(failover, 0.99) - Pct(plain, 0.99):F0} | |");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"fastgate_ai_failovers_total grew by {failovers:F0} in this phase ({warm + o.LatencyRequests} calls to /aik, warm-up included; a call 2 ms after the last, past k's 1 ms cooldown).");
        report.AppendLine();
        stdout.WriteLine($"ai: failover cost p50 {Pct(failover, 0.5) - Pct(plain, 0.5):F0} µs");
    }

    // ---- 3. allocated bytes per relayed event ------------------------------------------------------------------
    private static async Task AllocationAsync(HttpClient http, Options o, StringBuilder report, TextWriter stdout)
    {
        report.AppendLine(CultureInfo.InvariantCulture, $"## Gateway allocation per relayed SSE event ({o.AllocRequests} streams of N events, then {o.AllocRequests} of 10, one at a time; median bytes per stream)");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"Unpaced: the provider writes the {o.LongEvents} events as fast as it can (the gateway's reads rarely wait). Paced: "
            + $"{PacedEvents} events, the provider pausing {PacedGapMs} ms before each, as a live model does (every read of the gateway waits for the network).");
        report.AppendLine();
        report.AppendLine("| provider | stream | B/request, long stream (median) | B/request, 10 events (median) | B/event (long − short) / Δevents | events relayed |");
        report.AppendLine("|---|---|---:|---:|---:|---:|");
        foreach (bool paced in new[] { false, true })
            foreach (var (name, model) in o.Tls is null
                ? new[] { ("OpenAI-compatible (c)", "oa"), ("Anthropic Messages (d)", "an") }
                : [("OpenAI-compatible (c)", "oa"), ("Anthropic Messages (d)", "an"), ("OpenAI-compatible over TLS (t)", "ot")])
            {
                string url = o.Gateway + "/v1/chat/completions";
                int longEvents = paced ? PacedEvents : o.LongEvents, gap = paced ? PacedGapMs : 0, every = paced ? 1 : 10;
                for (int i = 0; i < 5; i++) await StreamAsync(http, url, GatewayBody(model, longEvents, gap, true, every), FakeWire.OpenAi).ConfigureAwait(false);
                // the gateway's allocated bytes read around each stream, the median taken: a background timer's burst
                // (the config file poll, every 5 s) lands in one stream's window at most, not in the median
                var longBytes = new List<double>();
                long events = 0;
                for (int i = 0; i < o.AllocRequests; i++)
                {
                    double before = await AllocatedAsync(http, o.Admin).ConfigureAwait(false);
                    events += (await StreamAsync(http, url, GatewayBody(model, longEvents, gap, true, every), FakeWire.OpenAi).ConfigureAwait(false)).ContentEvents;
                    longBytes.Add(await AllocatedAsync(http, o.Admin).ConfigureAwait(false) - before);
                }
                var shortBytes = new List<double>();
                long shortEvents = 0;
                for (int i = 0; i < o.AllocRequests; i++)
                {
                    double before = await AllocatedAsync(http, o.Admin).ConfigureAwait(false);
                    shortEvents += (await StreamAsync(http, url, GatewayBody(model, 10, gap, true, every), FakeWire.OpenAi).ConfigureAwait(false)).ContentEvents;
                    shortBytes.Add(await AllocatedAsync(http, o.Admin).ConfigureAwait(false) - before);
                }
                double longPer = Median(longBytes), shortPer = Median(shortBytes);
                double perEvent = (longPer - shortPer) / Math.Max(1, (events - shortEvents) / (double)o.AllocRequests);
                string kind = paced ? $"paced, {longEvents} events" : $"unpaced, {longEvents} events";
                report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {kind} | {longPer:F0} | {shortPer:F0} | {perEvent:F1} | {events} |");
                stdout.WriteLine($"ai: {name}, {kind}: {perEvent:F1} B/event");
            }
        report.AppendLine();
    }

    private static X509Certificate2 LoadCertificate(TlsProvider tls)
    {
        using var pem = X509Certificate2.CreateFromPemFile(tls.Certificate, tls.Key);
        // a PKCS#12 round trip: a key SslStream can use on every platform
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        int n = values.Count;
        return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    }

    /// <summary>The paced allocation streams: this many events, the provider pausing before each (every read waits).</summary>
    private const int PacedEvents = 1000, PacedGapMs = 1;

    private static async Task<double> AllocatedAsync(HttpClient http, string admin)
    {
        var text = await http.GetStringAsync(admin.TrimEnd('/') + "/metrics").ConfigureAwait(false);
        double sum = 0;
        foreach (var line in text.Split('\n'))
            if (line.StartsWith("dotnet_gc_allocated_bytes_total", StringComparison.Ordinal))
                sum += double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        return sum;
    }

    /// <summary>The gateway's GC collections by generation and JIT-compiled methods so far (its admin /metrics).</summary>
    private static async Task<(double Gen0, double Gen1, double Gen2, double Jit)> RuntimeCountsAsync(HttpClient http, string admin)
    {
        var text = await http.GetStringAsync(admin.TrimEnd('/') + "/metrics").ConfigureAwait(false);
        double g0 = 0, g1 = 0, g2 = 0, jit = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            double value() => double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
            if (line.StartsWith("dotnet_collection_count_total{", StringComparison.Ordinal))
            {
                if (line.Contains("generation=\"0\"", StringComparison.Ordinal)) g0 += value();
                else if (line.Contains("generation=\"1\"", StringComparison.Ordinal)) g1 += value();
                else if (line.Contains("generation=\"2\"", StringComparison.Ordinal)) g2 += value();
            }
            else if (line.Contains("jit_compiled_methods", StringComparison.Ordinal) && !line.Contains("_bucket", StringComparison.Ordinal)) jit += value();
        }
        return (g0, g1, g2, jit);
    }

    private static async Task<double> FailoversAsync(HttpClient http, string admin)
    {
        var text = await http.GetStringAsync(admin.TrimEnd('/') + "/metrics").ConfigureAwait(false);
        double sum = 0;
        foreach (var line in text.Split('\n'))
            if (line.StartsWith("fastgate_ai_failovers_total{", StringComparison.Ordinal))
                sum += double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        return sum;
    }

    // ---- 1. a provider killed mid-run ---------------------------------------------------------------------------
    private sealed record Sample(long StartTicks, Result Kind, double FirstEventUs, bool Streamed, bool EndedAsComplete);

    private static async Task FailoverAsync(HttpClient http, Options o, FakeLlmProvider a, FakeLlmProvider b, StringBuilder report, TextWriter stdout)
    {
        // streams of 100 events with a 1 ms pause every 10 (about 10 ms or more each), and whole responses, 1:1
        const int StreamEvents = 100;
        var samples = new System.Collections.Concurrent.ConcurrentBag<Sample>();
        double failovers0 = await FailoversAsync(http, o.Admin).ConfigureAwait(false);
        long start = Stopwatch.GetTimestamp();
        long end = start + (long)(o.Duration.TotalSeconds * Stopwatch.Frequency);
        long killAt = start + (end - start) / 2;
        var workers = Enumerable.Range(0, o.Concurrency).Select(w => Task.Run(async () =>
        {
            int i = 0;
            while (Stopwatch.GetTimestamp() < end)
            {
                bool streamed = (w + i++) % 2 == 0;
                long t0 = Stopwatch.GetTimestamp();
                var r = streamed
                    ? await StreamAsync(http, o.Gateway + "/v1/chat/completions", GatewayBody("fo", StreamEvents, 1, true), FakeWire.OpenAi, StreamEvents).ConfigureAwait(false)
                    : await WholeAsync(http, o.Gateway + "/v1/chat/completions", GatewayBody("fo", 20, 0, false)).ConfigureAwait(false);
                samples.Add(new Sample(t0, r.Kind, r.FirstEventUs, streamed, r.EndedAsComplete));
            }
        })).ToArray();
        while (Stopwatch.GetTimestamp() < killAt) await Task.Delay(5).ConfigureAwait(false);
        long aBefore = a.Requests, bBefore = b.Requests;
        int closed = a.Kill();
        long killed = Stopwatch.GetTimestamp();
        stdout.WriteLine($"ai: provider a killed after {Stopwatch.GetElapsedTime(start).TotalSeconds:F1} s ({aBefore} requests to a, {bBefore} to b so far; {closed} connections closed)");
        await Task.WhenAll(workers).ConfigureAwait(false);
        double failovers = await FailoversAsync(http, o.Admin).ConfigureAwait(false) - failovers0;

        var all = samples.ToArray();
        var before = all.Where(s => s.StartTicks < killed && s.Kind == Result.Ok).Select(s => s.FirstEventUs).Order().ToList();
        long window = (long)(0.5 * Stopwatch.Frequency);
        var justAfter = all.Where(s => s.StartTicks >= killed && s.StartTicks < killed + window && s.Kind == Result.Ok).Select(s => s.FirstEventUs).Order().ToList();
        var after = all.Where(s => s.StartTicks >= killed && s.Kind == Result.Ok).Select(s => s.FirstEventUs).Order().ToList();
        // the requests in flight at the kill that had not started streaming: started before, their first event after
        int failedBefore = all.Count(s => s.Kind == Result.FailedBeforeStream);
        int cut = all.Count(s => s.Kind == Result.CutMidStream);
        int cutDone = all.Count(s => s.Kind == Result.CutMidStream && s.EndedAsComplete);
        int ok = all.Count(s => s.Kind == Result.Ok);
        report.AppendLine(CultureInfo.InvariantCulture, $"## Provider killed mid-run (alias fo → a, b; {o.Concurrency} closed-loop clients for {o.Duration.TotalSeconds:F0} s; half streams of {StreamEvents} events, half whole responses; a killed at {TimeSpan.FromTicks((killed - start) * TimeSpan.TicksPerSecond / Stopwatch.Frequency).TotalSeconds:F1} s)");
        report.AppendLine();
        report.AppendLine("| requests | complete | failed before streaming | cut mid-stream (of which ended with a finish chunk and [DONE]) | failovers counted by the gateway | requests to a / b | a's connections closed / answers broken off |");
        report.AppendLine("|---:|---:|---:|---:|---:|---:|---:|");
        report.AppendLine(CultureInfo.InvariantCulture, $"| {all.Length} | {ok} | {failedBefore} | {cut} ({cutDone}) | {failovers:F0} | {a.Requests} / {b.Requests} | {closed} / {a.BrokenAnswers} |");
        report.AppendLine();
        report.AppendLine("Time to first event (streams) or to the whole response (non-streamed), µs:");
        report.AppendLine();
        report.AppendLine("| requests started | count | p50 | p99 | max |");
        report.AppendLine("|---|---:|---:|---:|---:|");
        report.AppendLine(Row("before the kill", before));
        report.AppendLine(Row("in the 0.5 s after the kill", justAfter));
        report.AppendLine(Row("after the kill (all)", after));
        report.AppendLine();
        stdout.WriteLine($"ai: failover: {all.Length} requests, {failedBefore} failed before streaming, {cut} cut mid-stream, {failovers:F0} failovers");
    }

    // ---- the client side ----------------------------------------------------------------------------------------
    private enum Result { Ok, FailedBeforeStream, CutMidStream }

    private readonly record struct Outcome(Result Kind, double FirstEventUs, long ContentEvents, bool EndedAsComplete = false);

    private static string GatewayBody(string model, int events, int gap, bool stream, int every = 10) =>
        "{\"model\":\"" + model + "\",\"stream\":" + (stream ? "true" : "false") + ",\"messages\":[{\"role\":\"user\",\"content\":\"events="
        + events.ToString(CultureInfo.InvariantCulture) + " gap=" + gap.ToString(CultureInfo.InvariantCulture) + " every=" + every.ToString(CultureInfo.InvariantCulture) + "\"}]}";

    private static string DirectBody(FakeWire wire, int events, int gap) => wire == FakeWire.OpenAi
        ? GatewayBody("fake", events, gap, true)
        : "{\"model\":\"claude-fake\",\"max_tokens\":4096,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"events="
          + events.ToString(CultureInfo.InvariantCulture) + " gap=" + gap.ToString(CultureInfo.InvariantCulture) + "\"}]}]}";

    private static async Task<Outcome> WholeAsync(HttpClient http, string url, string body)
    {
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            using var content = new StringContent(body, Encoding.UTF8, "application/json");
            using var response = await http.PostAsync(url, content).ConfigureAwait(false);
            var text = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
            double us = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
            return response.StatusCode == HttpStatusCode.OK && text.Contains("tok ", StringComparison.Ordinal)
                ? new Outcome(Result.Ok, us, 1) : new Outcome(Result.FailedBeforeStream, us, 0);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return new Outcome(Result.FailedBeforeStream, Stopwatch.GetElapsedTime(t0).TotalMicroseconds, 0);
        }
    }

    /// <summary>One streamed call: time to the first event carrying text, the count of such events, and whether the
    /// stream ended as it should ([DONE] or message_stop) with every expected event.</summary>
    private static async Task<Outcome> StreamAsync(HttpClient http, string url, string body, FakeWire wire, int expected = 0)
    {
        long t0 = Stopwatch.GetTimestamp();
        double first = 0;
        long count = 0;
        bool end = false;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
            if (response.StatusCode != HttpStatusCode.OK)
                return new Outcome(Result.FailedBeforeStream, Stopwatch.GetElapsedTime(t0).TotalMicroseconds, 0);
            using var s = await response.Content.ReadAsStreamAsync().ConfigureAwait(false);
            var buf = new byte[16384];
            int len = 0;
            var marker = wire == FakeWire.OpenAi ? "\"content\":\""u8.ToArray() : "\"text_delta\""u8.ToArray();
            var done = wire == FakeWire.OpenAi ? "data: [DONE]"u8.ToArray() : "message_stop"u8.ToArray();
            while (true)
            {
                if (len == buf.Length) Array.Resize(ref buf, buf.Length * 2);
                int n = await s.ReadAsync(buf.AsMemory(len)).ConfigureAwait(false);
                if (n == 0) break;
                len += n;
                int pos = 0, e;
                while ((e = buf.AsSpan(pos, len - pos).IndexOf("\n\n"u8)) >= 0)
                {
                    var ev = buf.AsSpan(pos, e);
                    if (ev.IndexOf(marker) >= 0)
                    {
                        if (count++ == 0) first = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
                    }
                    else if (ev.IndexOf(done) >= 0) end = true;
                    pos += e + 2;
                }
                buf.AsSpan(pos, len - pos).CopyTo(buf);
                len -= pos;
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return new Outcome(count == 0 ? Result.FailedBeforeStream : Result.CutMidStream, first, count);
        }
        if (count == 0) return new Outcome(Result.FailedBeforeStream, Stopwatch.GetElapsedTime(t0).TotalMicroseconds, 0);
        return new Outcome(end && count >= expected ? Result.Ok : Result.CutMidStream, first, count, end);
    }

    /// <summary>A latency table row: label, count, (failed,) p50, p99 and max of <paramref name="sorted"/> in µs.</summary>
    private static string Row(string label, List<double> sorted, string? failed = null) =>
        string.Create(CultureInfo.InvariantCulture,
            $"| {label} | {sorted.Count} |{(failed is null ? "" : $" {failed} |")} {Pct(sorted, 0.5):F0} | {Pct(sorted, 0.99):F0} | {Pct(sorted, 1):F0} |");

    private static double Pct(List<double> sorted, double p) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Count) - 1, 0, sorted.Count - 1)];

    private static string LoadAvg()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "unknown"; }
    }

    private static Options Parse(string[] args)
    {
        string? gateway = null, admin = null, report = null;
        int[]? ports = null;
        var duration = TimeSpan.FromSeconds(10);
        int concurrency = 16, latency = 1000, alloc = 10, events = 2000, warmup = -1;
        string[] phases = ["latency", "alloc", "kill", "failover"];
        int tlsPort = 0;
        string? tlsCert = null, tlsKey = null;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException(args[i] + " needs a value");
            switch (args[i])
            {
                case "--gateway": gateway = Next().TrimEnd('/'); break;
                case "--admin": admin = Next(); break;
                case "--ports": ports = [.. Next().Split(',').Select(p => int.Parse(p, CultureInfo.InvariantCulture))]; break;
                case "--duration": duration = TimeSpan.FromSeconds(int.Parse(Next().TrimEnd('s'), CultureInfo.InvariantCulture)); break;
                case "--concurrency": concurrency = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--latency-requests": latency = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--alloc-requests": alloc = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--events": events = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--report": report = Next(); break;
                case "--warmup": warmup = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--tls-port": tlsPort = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--tls-cert": tlsCert = Next(); break;
                case "--tls-key": tlsKey = Next(); break;
                case "--phases": phases = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
                default: throw new FormatException("unknown option " + args[i]);
            }
        }
        if (gateway is null || admin is null || ports is not { Length: 5 }) throw new FormatException("ai needs --gateway <url of the AI route> --admin <admin url> --ports a,b,c,d,e");
        if (duration <= TimeSpan.Zero || duration > TimeSpan.FromSeconds(120)) throw new FormatException("--duration must be 1..120 s");
        if (concurrency is < 1 or > 256 || latency is < 10 or > 100_000 || alloc is < 1 or > 1000 || events is < 20 or > 100_000)
            throw new FormatException("--concurrency 1..256, --latency-requests 10..100000, --alloc-requests 1..1000, --events 20..100000");
        if (warmup < 0) warmup = 4000; // a fresh JIT gateway is still tiering its code for thousands of calls (docs/ai-gateway.md, "Measured")
        if (warmup > 100_000) throw new FormatException("--warmup 0..100000");
        foreach (var phase in phases)
            if (phase is not ("latency" or "alloc" or "kill" or "failover")) throw new FormatException($"--phases: unknown phase '{phase}' (latency, alloc, kill, failover)");
        if ((tlsPort == 0) != (tlsCert is null) || (tlsCert is null) != (tlsKey is null))
            throw new FormatException("--tls-port, --tls-cert and --tls-key go together (provider t over TLS)");
        return new Options(gateway, admin, ports, duration, concurrency, latency, alloc, events, report, warmup, phases,
            tlsPort == 0 ? null : new TlsProvider(tlsPort, tlsCert!, tlsKey!));
    }
}
