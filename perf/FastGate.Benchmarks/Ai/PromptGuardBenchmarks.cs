using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Ai;
using Prometheus;

namespace FastGate.Benchmarks.Ai;

/// <summary>
/// The AI route's prompt guard (issue 15: "masking cost per KB of prompt"): every built-in detector on (national ids
/// included) plus one custom pattern, mask mode, over 1 KB and 16 KB of ordinary prose with no finding (the common
/// case), over 1 KB holding one email, one card number and one API key (three replacements), and over 1 KB holding a
/// US SSN, a UK NINO and an employee id matched by the custom pattern. Divide the mean by the KB for the cost per KB.
/// </summary>
[MemoryDiagnoser]
public class PromptGuardBenchmarks
{
    private PromptGuard _guard = null!, _sixDetectors = null!;
    private string _clean1K = "", _clean16K = "", _dirty1K = "", _ids1K = "";

    [GlobalSetup]
    public void Setup()
    {
        var registry = Metrics.NewCustomRegistry();
        var counter = Metrics.WithCustomRegistry(registry).CreateCounter("bench_guard_total", "", "route", "kind", "action");
        _guard = new PromptGuard(new AiGuardConfig
        {
            Detect = ["email", "phone", "card", "iban", "ipv4", "secret", "ssn", "nino"],
            Patterns = [new AiGuardPatternConfig { Kind = "employee-id", Pattern = @"EMP-\d{6}" }],
            Action = "mask",
        }, "bench", counter);
        _sixDetectors = new PromptGuard(new AiGuardConfig { Detect = ["email", "phone", "card", "iban", "ipv4", "secret"], Action = "mask" }, "bench", counter);
        _clean1K = Prose(1024);
        _clean16K = Prose(16 * 1024);
        var dirty = new StringBuilder(Prose(1024 - 120));
        dirty.Insert(200, " write to jane.doe@example.com ");
        dirty.Insert(500, " card 4111 1111 1111 1111 ");
        dirty.Insert(800, " key sk-abcdefghijklmnopqrstuvwx ");
        _dirty1K = dirty.ToString();
        var ids = new StringBuilder(Prose(1024 - 90));
        ids.Insert(200, " SSN 123-45-6789 ");
        ids.Insert(500, " NI AB 12 34 56 C ");
        ids.Insert(800, " badge EMP-004211 ");
        _ids1K = ids.ToString();
    }

    private static string Prose(int length) =>
        PromptGuardDetectorBenchmarks.Repeat("Summarise the quarterly report in three bullet points, keeping the figures for revenue and costs. ", length);

    [Benchmark(Baseline = true)]
    public string Clean1K() => _guard.Scan(_clean1K, out _);

    /// <summary>The six detectors of before the national ids and custom patterns, on the same text (the cost they add).</summary>
    [Benchmark]
    public string Clean1KSixDetectors() => _sixDetectors.Scan(_clean1K, out _);

    [Benchmark]
    public string Clean16K() => _guard.Scan(_clean16K, out _);

    [Benchmark]
    public string ThreeFindings1K() => _guard.Scan(_dirty1K, out _);

    [Benchmark]
    public string NationalIdsAndCustom1K() => _guard.Scan(_ids1K, out _);
}

/// <summary>
/// Each detector on its own (mask mode) over the same 1 KB of prose with no finding, and over 1 KB of prose with
/// digits in it (figures, a date, a time, an order number: what real prompts hold, none of them a finding), so a slow
/// detector is named instead of guessed. <c>employee-id</c> is the custom pattern <c>EMP-\d{6}</c>.
/// </summary>
[MemoryDiagnoser]
public class PromptGuardDetectorBenchmarks
{
    private PromptGuard _guard = null!;
    private string _clean1K = "", _figures1K = "";

    [Params("email", "phone", "card", "iban", "ipv4", "secret", "ssn", "nino", "employee-id")]
    public string Kind { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        var counter = Metrics.WithCustomRegistry(Metrics.NewCustomRegistry()).CreateCounter("bench_guard_total", "", "route", "kind", "action");
        _guard = new PromptGuard(Kind == "employee-id"
            ? new AiGuardConfig { Patterns = [new AiGuardPatternConfig { Kind = "employee-id", Pattern = @"EMP-\d{6}" }], Action = "mask" }
            : new AiGuardConfig { Detect = [Kind], Action = "mask" }, "bench", counter);
        _clean1K = Repeat("Summarise the quarterly report in three bullet points, keeping the figures for revenue and costs. ", 1024);
        _figures1K = Repeat("Revenue rose 12.5% to 4,210 in Q3 2026 (order 88172, 14:30 on 03/12); costs were 3 900 and 17 staff left. ", 1024);
    }

    internal static string Repeat(string text, int length)
    {
        var sb = new StringBuilder(length + text.Length);
        while (sb.Length < length) sb.Append(text);
        return sb.ToString(0, length);
    }

    [Benchmark(Baseline = true)]
    public string Clean1K() => _guard.Scan(_clean1K, out _);

    [Benchmark]
    public string Figures1K() => _guard.Scan(_figures1K, out _);
}
