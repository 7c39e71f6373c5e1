using System.Globalization;
using System.Net;
using System.Text;
using FastGate.LoadTest.Metrics;

namespace FastGate.LoadTest.Reports;

/// <summary>Writes a run's report as Markdown, CSV (summary and per-second series) and one self-contained HTML page.</summary>
public static class ReportWriter
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    private static readonly string[] ErrorNames = ["connect", "timeout", "reset", "protocol", "unexpected status", "missing rate-limit headers"];

    public static IReadOnlyList<string> Write(RunResult r, string directory)
    {
        Directory.CreateDirectory(directory);
        string name = Safe(r.Scenario);
        var files = new List<string>
        {
            Save(Path.Combine(directory, name + ".md"), Markdown(r)),
            Save(Path.Combine(directory, name + "-summary.csv"), SummaryCsv(r)),
            Save(Path.Combine(directory, name + "-series.csv"), SeriesCsv(r)),
            Save(Path.Combine(directory, name + ".html"), Html(r)),
        };
        return files;
    }

    private static string Save(string path, string text)
    {
        File.WriteAllText(path, text, new UTF8Encoding(false));
        return path;
    }

    private static string Safe(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s) sb.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_');
        return sb.Length == 0 ? "scenario" : sb.ToString();
    }

    /// <summary>Summary rows: (metric, value, unit). Shared by every format.</summary>
    public static IEnumerable<(string Metric, string Value, string Unit)> SummaryRows(RunResult r)
    {
        var l = r.LatencySummary;
        var g = r.SendLagSummary;
        yield return ("requests", r.Counts.Requests.ToString(Inv), "");
        yield return ("responses", r.Counts.Responses.ToString(Inv), "");
        yield return ("measured time", Format.Num(r.MeasuredSeconds, "0.###"), "s");
        yield return ("throughput", Format.Num(r.Rps, "0.#"), "rps");
        yield return ("latency p50", Format.Ms(l.P50), "ms");
        yield return ("latency p90", Format.Ms(l.P90), "ms");
        yield return ("latency p99", Format.Ms(l.P99), "ms");
        yield return ("latency p99.9", Format.Ms(l.P999), "ms");
        yield return ("latency max", Format.Ms(l.Max), "ms");
        yield return ("latency mean", Format.Ms(l.Mean), "ms");
        yield return ("send lag p50", Format.Ms(g.P50), "ms");
        yield return ("send lag p99", Format.Ms(g.P99), "ms");
        yield return ("send lag max", Format.Ms(g.Max), "ms");
        yield return ("generator allocations per request", r.Counts.Requests == 0 ? "0" : Format.Num((double)r.ClientAllocatedBytes / r.Counts.Requests, "0.#"), "bytes");
        yield return ("errors", r.Counts.ErrorTotal.ToString(Inv), "");
        yield return ("error share", Format.Num(r.ErrorShare * 100, "0.####"), "%");
        for (int k = 0; k < ErrorNames.Length; k++) yield return ("errors: " + ErrorNames[k], r.Counts.Errors[k].ToString(Inv), "");
        for (int s = 100; s < 600; s++)
        {
            if (r.Counts.Status[s] > 0) yield return ("status " + s.ToString(Inv), r.Counts.Status[s].ToString(Inv), "");
        }
        foreach (var (k, v) in r.SideCounters) yield return ("side: " + k, v.ToString(Inv), "");
    }

    public static string Markdown(RunResult r)
    {
        var sb = new StringBuilder();
        sb.Append("# Load test: ").Append(r.Scenario).Append(r.Passed ? " (passed)" : " (FAILED)").Append("\n\n");
        sb.Append("- target: ").Append(r.Target).Append('\n');
        sb.Append("- started: ").Append(r.Started.ToString("u", Inv)).Append('\n');
        sb.Append("- connections: ").Append(r.Connections).Append('\n');
        sb.Append("- phases: ").Append(string.Join("; ", r.Phases)).Append("\n\n");
        sb.Append("Latency is measured from each request's scheduled send time (open model), so queueing at a slow\n");
        sb.Append("server is included; the generator's own lateness is reported separately as send lag.\n\n");
        sb.Append("## Thresholds\n\n");
        if (r.Thresholds.Count == 0) sb.Append("(none)\n");
        else
        {
            sb.Append("| threshold | actual | result |\n|---|---|---|\n");
            foreach (var t in r.Thresholds) sb.Append("| `").Append(t.Expression).Append("` | ").Append(t.Actual).Append(" | ").Append(t.Passed ? "pass" : "**BREACHED**").Append(" |\n");
        }
        sb.Append("\n## Summary\n\n| metric | value |\n|---|---:|\n");
        foreach (var (m, v, u) in SummaryRows(r)) sb.Append("| ").Append(m).Append(" | ").Append(v).Append(u.Length > 0 ? " " + u : "").Append(" |\n");
        sb.Append("\n## Per second\n\n| t (s) | rps | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | errors | send lag p99 (ms) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        foreach (var p in r.Series)
        {
            sb.Append("| ").Append(Format.Num(p.Second, "0.#")).Append(" | ").Append(Format.Num(p.Rps, "0")).Append(" | ")
              .Append(Format.Ms(p.P50Ns)).Append(" | ").Append(Format.Ms(p.P90Ns)).Append(" | ").Append(Format.Ms(p.P99Ns)).Append(" | ")
              .Append(Format.Ms(p.MaxNs)).Append(" | ").Append(p.Errors).Append(" | ").Append(Format.Ms(p.SendLagP99Ns)).Append(" |\n");
        }
        return sb.ToString();
    }

    public static string SummaryCsv(RunResult r)
    {
        var sb = new StringBuilder("metric,value,unit\n");
        foreach (var (m, v, u) in SummaryRows(r)) sb.Append(Csv(m)).Append(',').Append(v).Append(',').Append(u).Append('\n');
        foreach (var t in r.Thresholds) sb.Append(Csv("threshold " + t.Expression)).Append(',').Append(t.Passed ? "pass" : "breached").Append(',').Append(Csv(t.Actual)).Append('\n');
        return sb.ToString();
    }

    public static string SeriesCsv(RunResult r)
    {
        var sb = new StringBuilder("second,responses,errors,rps,p50_ms,p90_ms,p99_ms,max_ms,send_lag_p99_ms\n");
        foreach (var p in r.Series)
        {
            sb.Append(Format.Num(p.Second, "0.###")).Append(',').Append(p.Responses).Append(',').Append(p.Errors).Append(',')
              .Append(Format.Num(p.Rps, "0.#")).Append(',').Append(Format.Ms(p.P50Ns)).Append(',').Append(Format.Ms(p.P90Ns)).Append(',')
              .Append(Format.Ms(p.P99Ns)).Append(',').Append(Format.Ms(p.MaxNs)).Append(',').Append(Format.Ms(p.SendLagP99Ns)).Append('\n');
        }
        return sb.ToString();
    }

    private static string Csv(string s) => s.IndexOfAny([',', '"', '\n']) < 0 ? s : "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static string H(string s) => WebUtility.HtmlEncode(s);

    public static string Html(RunResult r)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Load test: ").Append(H(r.Scenario)).Append("</title>\n");
        sb.Append("<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}")
          .Append("td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}")
          .Append(".pass{color:#176f2c}.fail{color:#b00020;font-weight:bold}svg{background:#fafafa;border:1px solid #ddd;margin:.5em 0}")
          .Append(".legend span{margin-right:1.5em}</style></head><body>\n");
        sb.Append("<h1>Load test: ").Append(H(r.Scenario)).Append(r.Passed ? " <span class=\"pass\">passed</span>" : " <span class=\"fail\">FAILED</span>").Append("</h1>\n");
        sb.Append("<p>target ").Append(H(r.Target)).Append(" · started ").Append(H(r.Started.ToString("u", Inv))).Append(" · ")
          .Append(r.Connections).Append(" connections · ").Append(H(string.Join("; ", r.Phases))).Append("</p>\n");
        sb.Append("<p>Latency counts from each request's scheduled send time (open model, no coordinated omission); the generator's own lateness is shown as send lag.</p>\n");

        sb.Append("<h2>Thresholds</h2>\n");
        if (r.Thresholds.Count == 0) sb.Append("<p>(none)</p>\n");
        else
        {
            sb.Append("<table><tr><th>threshold</th><th>actual</th><th>result</th></tr>\n");
            foreach (var t in r.Thresholds)
            {
                sb.Append("<tr><td><code>").Append(H(t.Expression)).Append("</code></td><td>").Append(H(t.Actual)).Append("</td><td class=\"")
                  .Append(t.Passed ? "pass\">pass" : "fail\">BREACHED").Append("</td></tr>\n");
            }
            sb.Append("</table>\n");
        }

        sb.Append("<h2>Latency over time (ms)</h2>\n");
        sb.Append(Chart(r.Series, [("p50", "#1f77b4", p => p.P50Ns / 1e6), ("p90", "#2ca02c", p => p.P90Ns / 1e6), ("p99", "#ff7f0e", p => p.P99Ns / 1e6), ("max", "#d62728", p => p.MaxNs / 1e6)], "ms"));
        sb.Append("<h2>Throughput over time (responses/s)</h2>\n");
        sb.Append(Chart(r.Series, [("rps", "#1f77b4", p => p.Rps), ("errors/s", "#d62728", p => p.Errors)], "rps"));

        sb.Append("<h2>Summary</h2>\n<table><tr><th>metric</th><th>value</th></tr>\n");
        foreach (var (m, v, u) in SummaryRows(r)) sb.Append("<tr><td>").Append(H(m)).Append("</td><td>").Append(H(v)).Append(u.Length > 0 ? " " + H(u) : "").Append("</td></tr>\n");
        sb.Append("</table>\n</body></html>\n");
        return sb.ToString();
    }

    /// <summary>An inline SVG line chart; x is seconds into the measured run.</summary>
    public static string Chart(IReadOnlyList<TimePoint> series, (string Name, string Color, Func<TimePoint, double> Value)[] lines, string unit)
    {
        const int W = 760, Ht = 260, L = 60, R = 15, T = 15, B = 35;
        var sb = new StringBuilder();
        sb.Append(Inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{Ht}\" viewBox=\"0 0 {W} {Ht}\" role=\"img\">\n");
        if (series.Count == 0)
        {
            sb.Append(Inv, $"<text x=\"{W / 2}\" y=\"{Ht / 2}\" text-anchor=\"middle\">no data</text></svg>\n");
            return sb.ToString();
        }
        double xMax = Math.Max(1, series[^1].Second);
        double yMax = 0;
        foreach (var p in series) foreach (var l in lines) yMax = Math.Max(yMax, l.Value(p));
        yMax = NiceCeiling(yMax);
        double X(double s) => L + (s / xMax * (W - L - R));
        double Y(double v) => T + ((1 - (v / yMax)) * (Ht - T - B));
        sb.Append(Inv, $"<line x1=\"{L}\" y1=\"{Ht - B}\" x2=\"{W - R}\" y2=\"{Ht - B}\" stroke=\"#888\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{Ht - B}\" stroke=\"#888\"/>\n");
        for (int i = 0; i <= 4; i++)
        {
            double v = yMax * i / 4;
            sb.Append(Inv, $"<line x1=\"{L}\" y1=\"{Y(v):0.#}\" x2=\"{W - R}\" y2=\"{Y(v):0.#}\" stroke=\"#e4e4e4\"/>");
            sb.Append(Inv, $"<text x=\"{L - 5}\" y=\"{Y(v) + 4:0.#}\" font-size=\"11\" text-anchor=\"end\">{Format.Num(v, "0.###")}</text>\n");
        }
        for (int i = 0; i <= 5; i++)
        {
            double s = xMax * i / 5;
            sb.Append(Inv, $"<text x=\"{X(s):0.#}\" y=\"{Ht - B + 15}\" font-size=\"11\" text-anchor=\"middle\">{Format.Num(s, "0.#")}s</text>");
        }
        sb.Append(Inv, $"<text x=\"{L + 6}\" y=\"{T + 10}\" font-size=\"11\" fill=\"#555\">{H(unit)}</text>\n");
        int legendX = L + 10;
        foreach (var (name, color, value) in lines)
        {
            sb.Append("<polyline fill=\"none\" stroke-width=\"1.8\" stroke=\"").Append(color).Append("\" points=\"");
            foreach (var p in series) sb.Append(Inv, $"{X(p.Second):0.#},{Y(value(p)):0.#} ");
            sb.Append("\"><title>").Append(H(name)).Append("</title></polyline>\n");
            sb.Append(Inv, $"<rect x=\"{legendX}\" y=\"{Ht - 14}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{legendX + 14}\" y=\"{Ht - 5}\" font-size=\"11\">{H(name)}</text>\n");
            legendX += 90;
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    private static double NiceCeiling(double v)
    {
        if (v <= 0) return 1;
        double mag = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (double m in new[] { 1, 2, 2.5, 5, 10 })
        {
            if (v <= m * mag) return m * mag;
        }
        return 10 * mag;
    }
}
