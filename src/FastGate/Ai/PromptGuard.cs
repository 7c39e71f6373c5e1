using System.Text;
using System.Text.RegularExpressions;
using Prometheus;

namespace FastGate.Ai;

public enum GuardAction : byte { Mask, Block, Report }

/// <summary>
/// Personal data and secret detection over prompt (and response) text: emails, phone numbers, Luhn-checked card
/// numbers, IBANs (mod-97 checked), IPv4 addresses, API-key-looking secrets, US social security numbers and UK
/// national insurance numbers (both checked against their issuing rules), custom patterns from the config, plus deny
/// patterns. Each finding is counted by kind (fastgate_ai_guard_total{route,kind,action}) and tallied for the call's
/// access log line (<see cref="GuardFindings"/>); the value is never logged or kept.
/// </summary>
public sealed class PromptGuard
{
    private readonly Detector[] _detectors;
    private readonly Regex[] _deny;
    private readonly Counter _counter;
    private readonly string _route;

    private sealed record Detector(string Kind, Regex Pattern, Func<string, bool>? Check, string Mask, Counter.Child Count);

    public PromptGuard(AiGuardConfig config, string route, Counter counter)
    {
        _route = route;
        _counter = counter;
        Action = config.Action switch { "block" => GuardAction.Block, "report" => GuardAction.Report, _ => GuardAction.Mask };
        MaskResponses = config.Responses;
        MaxPromptTokens = config.MaxPromptTokens;
        _detectors = config.Detect.Select(kind => Builtin(kind))
            .Concat(config.Patterns.Select(p => (p.Kind, new Regex(p.Pattern,
                RegexOptions.CultureInvariant | (p.IgnoreCase ? RegexOptions.IgnoreCase : RegexOptions.None), TimeSpan.FromMilliseconds(100)),
                (Func<string, bool>?)null)))
            .Select(d => new Detector(d.Item1, d.Item2, d.Item3, "[" + d.Item1.ToUpperInvariant() + "]", counter.WithLabels(route, d.Item1, ActionName)))
            .ToArray();
        _deny = config.Deny.Select(d => new Regex(d, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(100))).ToArray();
    }

    public GuardAction Action { get; }
    public bool MaskResponses { get; }
    public long MaxPromptTokens { get; }
    public bool HasDetectors => _detectors.Length > 0;

    private static (string, Regex, Func<string, bool>?) Builtin(string kind) => kind switch
    {
        "email" => (kind, new Regex(@"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", RegexOptions.CultureInvariant), null),
        "phone" => (kind, new Regex(@"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?!\w)", RegexOptions.CultureInvariant), null),
        "card" => (kind, new Regex(@"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)", RegexOptions.CultureInvariant), Luhn),
        "iban" => (kind, new Regex(@"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", RegexOptions.CultureInvariant), IbanChecksum),
        "ipv4" => (kind, new Regex(@"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", RegexOptions.CultureInvariant), null),
        "secret" => (kind, new Regex(@"\b(?:sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35})\b|-----BEGIN [A-Z ]*PRIVATE KEY-----", RegexOptions.CultureInvariant), null),
        // AAA-GG-SSSS (or with spaces, the same separator twice); the digits must be issuable (UsSsn)
        "ssn" => (kind, new Regex(@"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])", RegexOptions.CultureInvariant), UsSsn),
        // two prefix letters, three pairs of digits, the suffix A-D (spaces between the groups allowed); the prefix
        // must be one HMRC can issue (UkNino)
        "nino" => (kind, new Regex(@"(?<![A-Za-z0-9])[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d](?![A-Za-z0-9])", RegexOptions.CultureInvariant), UkNino),
        _ => throw new InvalidOperationException($"detector {kind} was not validated"),
    };

    /// <summary>Whether the text matches a deny pattern (counted as kind "deny", action "block").</summary>
    public bool IsDenied(string text, GuardFindings? findings = null)
    {
        foreach (var d in _deny)
        {
            if (!d.IsMatch(text)) continue;
            _counter.WithLabels(_route, "deny", "block").Inc();
            findings?.Deny();
            return true;
        }
        return false;
    }

    /// <summary>A tally of one call's findings (for its access log line).</summary>
    public GuardFindings NewFindings() => new(this);

    /// <summary>
    /// The text with every finding replaced by [KIND] (mask), or unchanged (report, block); <paramref name="found"/>
    /// tells whether anything was detected. Counted per finding under its kind, and tallied in <paramref name="findings"/>.
    /// A custom pattern that runs out of its time (100 ms) counts as a finding of the whole text: masked whole, or
    /// blocked — the guard fails closed, never open.
    /// </summary>
    public string Scan(string text, out bool found, GuardFindings? findings = null)
    {
        found = false;
        if (text.Length == 0) return text;
        for (int i = 0; i < _detectors.Length; i++)
        {
            var d = _detectors[i];
            var hit = false;
            string replaced;
            try
            {
                replaced = d.Pattern.Replace(text, m =>
                {
                    if (d.Check is not null && !d.Check(m.Value)) return m.Value;
                    hit = true;
                    d.Count.Inc();
                    findings?.Add(i);
                    return Action == GuardAction.Mask ? d.Mask : m.Value;
                });
            }
            catch (RegexMatchTimeoutException)
            {
                hit = true;
                d.Count.Inc();
                findings?.Add(i);
                replaced = Action == GuardAction.Mask ? d.Mask : text;
            }
            if (hit) found = true;
            text = replaced;
        }
        return text;
    }

    internal string KindAt(int index) => _detectors[index].Kind;
    internal int DetectorCount => _detectors.Length;

    internal string ActionName => Action switch { GuardAction.Block => "block", GuardAction.Report => "report", _ => "mask" };

    internal static bool Luhn(string s)
    {
        int sum = 0, n = 0;
        for (int i = s.Length - 1; i >= 0; i--)
        {
            if (!char.IsAsciiDigit(s[i])) continue;
            int d = s[i] - '0';
            if ((n++ & 1) == 1) { d *= 2; if (d > 9) d -= 9; }
            sum += d;
        }
        return n >= 13 && sum % 10 == 0;
    }

    /// <summary>
    /// A US social security number the SSA can issue: area (first three digits) not 000, 666 or 900-999, group (next
    /// two) not 00, serial (last four) not 0000; and not one of the two numbers the SSA voided after they were printed
    /// in advertising (078-05-1120, 219-09-9999).
    /// </summary>
    internal static bool UsSsn(string s)
    {
        int area = 0, group = 0, serial = 0, n = 0;
        foreach (char c in s)
        {
            if (!char.IsAsciiDigit(c)) continue;
            int d = c - '0';
            if (n < 3) area = area * 10 + d;
            else if (n < 5) group = group * 10 + d;
            else serial = serial * 10 + d;
            n++;
        }
        if (n != 9 || area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return false;
        return !(area == 78 && group == 5 && serial == 1120) && !(area == 219 && group == 9 && serial == 9999);
    }

    /// <summary>
    /// A UK national insurance number HMRC can issue: the first prefix letter not D, F, I, Q, U or V; the second not D,
    /// F, I, O, Q, U or V; the prefix not BG, GB, KN, NK, NT, TN or ZZ (administrative or never issued); suffix A-D.
    /// </summary>
    internal static bool UkNino(string s)
    {
        char a = char.ToUpperInvariant(s[0]), b = char.ToUpperInvariant(s[1]);
        if ("DFIQUV".Contains(a) || "DFIOQUV".Contains(b)) return false;
        return Array.IndexOf(s_unissuedPrefixes, string.Concat(a, b)) < 0;
    }

    private static readonly string[] s_unissuedPrefixes = ["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

    internal static bool IbanChecksum(string s)
    {
        var compact = new StringBuilder();
        foreach (char c in s) if (c != ' ') compact.Append(c);
        if (compact.Length < 15) return false;
        var rearranged = compact.ToString(4, compact.Length - 4) + compact.ToString(0, 4);
        int mod = 0;
        foreach (char c in rearranged)
        {
            int v = char.IsAsciiDigit(c) ? c - '0' : c - 'A' + 10;
            mod = v >= 10 ? (mod * 100 + v) % 97 : (mod * 10 + v) % 97;
        }
        return mod == 1;
    }
}

/// <summary>
/// One call's guard findings, by kind (prompt and response together), for its access log line: for example
/// <c>mask email:1,ssn:2</c>, <c>block nino:1</c>, <c>block deny:1</c>. Kinds and counts only, never a value.
/// </summary>
public sealed class GuardFindings
{
    private readonly PromptGuard _guard;
    private readonly int[] _counts;
    private int _denied;

    internal GuardFindings(PromptGuard guard)
    {
        _guard = guard;
        _counts = new int[guard.DetectorCount];
    }

    internal void Add(int detector) => Interlocked.Increment(ref _counts[detector]);
    internal void Deny() => Interlocked.Increment(ref _denied);

    /// <summary>The access log's <c>guard</c> value, or null when nothing was found.</summary>
    public string? Summary
    {
        get
        {
            StringBuilder? sb = null;
            if (_denied > 0) sb = new StringBuilder("block deny:").Append(_denied);
            for (int i = 0; i < _counts.Length; i++)
            {
                if (_counts[i] == 0) continue;
                if (sb is null) sb = new StringBuilder(_guard.ActionName).Append(' ');
                else sb.Append(',');
                sb.Append(_guard.KindAt(i)).Append(':').Append(_counts[i]);
            }
            return sb?.ToString();
        }
    }
}
