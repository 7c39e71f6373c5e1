using System.Globalization;
using System.Text.RegularExpressions;
using FastGate.LoadTest.Metrics;

namespace FastGate.LoadTest.Thresholds;

/// <summary>
/// A pass/fail rule over a run's results, parsed from text. Grammar (spaces optional, case-insensitive):
/// <code>
///   rule    := metric op value | metric [share] between value and value
///   op      := &lt; | &lt;= | &gt; | &gt;= | == | !=
///   metric  := pNN[.N] | max | mean            latency from the scheduled time; value has a unit ns|us|ms|s (default ms)
///            | lag.pNN | lag.max                 the generator's own send lag; same units
///            | rps                               responses per second over the measured time
///            | errors | errors.KIND              share of requests that failed (KIND: connect timeout reset protocol unexpected headers)
///            | statusNNN | statusNxx             share of requests answered with that status or class
///   share   := a fraction (0.4) or a percentage (40%)
///   relative:  a value with 'x' is a multiple of the same metric in a --baseline run's summary:
///              p50 p90 p99 p99.9 max mean, rps, errors (e.g. p99&lt;=1.2x, rps&gt;=0.8x)
/// </code>
/// Examples: <c>p99&lt;5ms</c>, <c>errors&lt;0.1%</c>, <c>rps&gt;=40000</c>, <c>status429 between 0.4 and 0.6</c>,
/// <c>status 429 share between 40% and 60%</c>, <c>errors==0</c>.
/// </summary>
public sealed partial class Threshold
{
    private enum Kind { Latency, Lag, Rps, ErrorShare, StatusShare }

    private readonly Kind _kind;
    private readonly double _percentile;   // 100 = max, -1 = mean
    private readonly int _errorKind = -1;  // -1 = all
    private readonly int _status;
    private readonly bool _statusClass;
    private readonly string _op;           // < <= > >= == != between
    private readonly double _a, _b;
    private readonly bool _relative;

    private Threshold(string text, Kind kind, double percentile, int errorKind, int status, bool statusClass, string op, double a, double b, bool relative)
    {
        _relative = relative;
        Expression = text;
        _kind = kind;
        _percentile = percentile;
        _errorKind = errorKind;
        _status = status;
        _statusClass = statusClass;
        _op = op;
        _a = a;
        _b = b;
    }

    public string Expression { get; }

    [GeneratedRegex(@"^\s*(?<metric>[a-z][a-z0-9.]*?)\s*(?<code>\d{3}|\dxx)?\s*(?:share\s*)?(?:(?<op><=|>=|==|!=|<|>|=)\s*(?<v>-?[0-9]*\.?[0-9]+)\s*(?<u>[a-zµ%]*)|between\s+(?<a>[0-9]*\.?[0-9]+)\s*(?<ua>[a-zµ%]*)\s+and\s+(?<b>[0-9]*\.?[0-9]+)\s*(?<ub>[a-zµ%]*))\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Grammar();

    public static Threshold Parse(string text)
        => TryParse(text, out var t, out string? error) ? t : throw new FormatException(error);

    public static bool TryParse(string text, out Threshold threshold, out string? error)
    {
        threshold = null!;
        var m = Grammar().Match(text);
        if (!m.Success)
        {
            error = $"threshold '{text}': expected e.g. 'p99<5ms', 'errors<0.1%', 'rps>=40000' or 'status429 between 0.4 and 0.6'";
            return false;
        }
        string metric = m.Groups["metric"].Value.ToLowerInvariant();
        string code = m.Groups["code"].Value.ToLowerInvariant();
        if (metric != "status" && code.Length > 0) { metric += code; code = ""; }
        bool between = m.Groups["a"].Success;
        string op = between ? "between" : (m.Groups["op"].Value == "=" ? "==" : m.Groups["op"].Value);
        string va = between ? m.Groups["a"].Value : m.Groups["v"].Value;
        string ua = (between ? m.Groups["ua"].Value : m.Groups["u"].Value).ToLowerInvariant();
        string vb = between ? m.Groups["b"].Value : "0";
        string ub = between ? m.Groups["ub"].Value.ToLowerInvariant() : "";
        double a = double.Parse(va, CultureInfo.InvariantCulture);
        double b = double.Parse(vb, CultureInfo.InvariantCulture);

        Kind kind;
        double percentile = 0;
        int errorKind = -1, status = 0;
        bool statusClass = false;
        if (metric == "status" && code.Length == 3)
        {
            kind = Kind.StatusShare;
            statusClass = code.EndsWith("xx", StringComparison.Ordinal);
            status = statusClass ? code[0] - '0' : int.Parse(code, CultureInfo.InvariantCulture);
            if (statusClass ? status is < 1 or > 5 : status is < 100 or > 599) { error = $"threshold '{text}': no such status {code}"; return false; }
        }
        else if (metric == "status")
        {
            error = $"threshold '{text}': 'status' needs a code such as 429 or 5xx";
            return false;
        }
        else if (metric == "rps") kind = Kind.Rps;
        else if (metric == "errors") kind = Kind.ErrorShare;
        else if (metric.StartsWith("errors.", StringComparison.Ordinal))
        {
            kind = Kind.ErrorShare;
            errorKind = metric[7..] switch
            {
                "connect" => (int)ErrorKind.Connect,
                "timeout" or "timeouts" => (int)ErrorKind.Timeout,
                "reset" => (int)ErrorKind.Reset,
                "protocol" => (int)ErrorKind.Protocol,
                "unexpected" or "status" => (int)ErrorKind.UnexpectedStatus,
                "headers" => (int)ErrorKind.MissingHeaders,
                _ => -1,
            };
            if (errorKind < 0) { error = $"threshold '{text}': unknown error kind '{metric[7..]}' (connect, timeout, reset, protocol, unexpected, headers)"; return false; }
        }
        else
        {
            bool lag = metric.StartsWith("lag.", StringComparison.Ordinal);
            string p = lag ? metric[4..] : metric;
            kind = lag ? Kind.Lag : Kind.Latency;
            if (p == "max") percentile = 100;
            else if (p == "mean" && !lag) percentile = -1;
            else if (p.Length > 1 && p[0] == 'p' && double.TryParse(p.AsSpan(1), NumberStyles.Float, CultureInfo.InvariantCulture, out double pct) && pct is > 0 and <= 100)
                percentile = pct;
            else { error = $"threshold '{text}': unknown metric '{metric}'"; return false; }
        }

        bool relative = ua == "x";
        if (relative || ub == "x")
        {
            if (!relative || (between && ub != "x")) { error = $"threshold '{text}': both bounds must be relative (x) or neither"; return false; }
            if (BaselineRow(kind, percentile, errorKind) is null) { error = $"threshold '{text}': relative values work for p50 p90 p99 p99.9 max mean rps errors"; return false; }
        }
        else if (!TryScale(kind, ref a, ua, text, out error) || (between && !TryScale(kind, ref b, ub, text, out error))) return false;
        if (between && b < a) { error = $"threshold '{text}': the lower bound comes first"; return false; }
        threshold = new Threshold(text.Trim(), kind, percentile, errorKind, status, statusClass, op, a, b, relative);
        error = null;
        return true;
    }

    private static bool TryScale(Kind kind, ref double value, string unit, string text, out string? error)
    {
        error = null;
        switch (kind)
        {
            case Kind.Latency or Kind.Lag:
                double? factor = unit switch
                {
                    "" or "ms" => 1e6,
                    "ns" => 1,
                    "us" or "µs" => 1e3,
                    "s" => 1e9,
                    _ => null,
                };
                if (factor is null) { error = $"threshold '{text}': latency unit must be ns, us, ms or s"; return false; }
                value *= factor.Value;
                return true;
            case Kind.Rps:
                if (unit.Length > 0) { error = $"threshold '{text}': rps takes a plain number"; return false; }
                return true;
            default:
                if (unit == "%") value /= 100;
                else if (unit.Length > 0) { error = $"threshold '{text}': a share is a fraction (0.4) or a percentage (40%)"; return false; }
                else if (value > 1) { error = $"threshold '{text}': a share without '%' is a fraction between 0 and 1"; return false; }
                return true;
        }
    }

    /// <summary>The metric's value in the run (ns for latency, fraction for shares, per second for rps).</summary>
    public double Measure(RunResult r)
    {
        switch (_kind)
        {
            case Kind.Latency or Kind.Lag:
                var h = _kind == Kind.Lag ? r.SendLag : r.Latency;
                if (h.TotalCount == 0) return double.NaN;
                if (_percentile < 0) return HdrHistogram.HistogramExtensions.GetMean(h);
                if (_percentile >= 100) return HdrHistogram.HistogramExtensions.GetMaxValue(h);
                return h.GetValueAtPercentile(_percentile);
            case Kind.Rps:
                return r.Rps;
            case Kind.ErrorShare:
                if (r.Counts.Requests == 0) return double.NaN;
                return _errorKind < 0 ? r.ErrorShare : (double)r.Counts.Errors[_errorKind] / r.Counts.Requests;
            default:
                return r.Counts.Requests == 0 ? double.NaN : r.StatusShare(_status, _statusClass);
        }
    }

    private static string? BaselineRow(Kind kind, double percentile, int errorKind) => kind switch
    {
        Kind.Latency => percentile switch
        {
            50 => "latency p50",
            90 => "latency p90",
            99 => "latency p99",
            99.9 => "latency p99.9",
            100 => "latency max",
            -1 => "latency mean",
            _ => null,
        },
        Kind.Rps => "throughput",
        Kind.ErrorShare when errorKind < 0 => "error share",
        _ => null,
    };

    /// <summary>Checks the rule; a run with nothing to measure fails (no data is no evidence).</summary>
    public ThresholdOutcome Evaluate(RunResult r, Baseline? baseline = null)
    {
        double v = Measure(r);
        double a = _a, b = _b;
        string suffix = "";
        if (_relative)
        {
            double? reference = baseline?.Get(BaselineRow(_kind, _percentile, _errorKind)!);
            if (reference is not double refValue) return new ThresholdOutcome(Expression, false, Describe(v) + ", no baseline");
            a *= refValue;
            b *= refValue;
            suffix = $" vs baseline {Describe(refValue)}" + (refValue > 0 && !double.IsNaN(v) ? $" = {Format.Num(v / refValue, "0.###")}x" : "");
        }
        bool ok = !double.IsNaN(v) && _op switch
        {
            "<" => v < a,
            "<=" => v <= a,
            ">" => v > a,
            ">=" => v >= a,
            "==" => v == a,
            "!=" => v != a,
            _ => v >= a && v <= b,
        };
        return new ThresholdOutcome(Expression, ok, Describe(v) + suffix);
    }

    private string Describe(double v)
    {
        if (double.IsNaN(v)) return "no data";
        return _kind switch
        {
            Kind.Latency or Kind.Lag => Format.Latency(v),
            Kind.Rps => Format.Num(v, "0.#") + " rps",
            _ => Format.Num(v * 100, "0.###") + "%",
        };
    }

    public override string ToString() => Expression;
}
