using System.Text;
using System.Text.RegularExpressions;
using Prometheus;

namespace FastGate.Ai;

public enum GuardAction : byte { Mask, Block, Report }

/// <summary>
/// Personal data and secret detection over prompt (and response) text: emails, phone numbers, Luhn-checked card
/// numbers, IBANs (mod-97 checked), IPv4 addresses and API-key-looking secrets, plus deny patterns. Each finding is
/// counted by kind (fastgate_ai_guard_total{route,kind,action}); the value is never logged or kept.
/// </summary>
public sealed class PromptGuard
{
    private readonly (string Kind, Regex Pattern, Func<string, bool>? Check)[] _detectors;
    private readonly Regex[] _deny;
    private readonly Counter _counter;
    private readonly string _route;

    public PromptGuard(AiGuardConfig config, string route, Counter counter)
    {
        _route = route;
        _counter = counter;
        Action = config.Action switch { "block" => GuardAction.Block, "report" => GuardAction.Report, _ => GuardAction.Mask };
        MaskResponses = config.Responses;
        MaxPromptTokens = config.MaxPromptTokens;
        _detectors = config.Detect.Select(Detector).ToArray();
        _deny = config.Deny.Select(d => new Regex(d, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(100))).ToArray();
    }

    public GuardAction Action { get; }
    public bool MaskResponses { get; }
    public long MaxPromptTokens { get; }
    public bool HasDetectors => _detectors.Length > 0;

    private static (string, Regex, Func<string, bool>?) Detector(string kind) => kind switch
    {
        "email" => (kind, new Regex(@"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", RegexOptions.CultureInvariant), null),
        "phone" => (kind, new Regex(@"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?!\w)", RegexOptions.CultureInvariant), null),
        "card" => (kind, new Regex(@"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)", RegexOptions.CultureInvariant), Luhn),
        "iban" => (kind, new Regex(@"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", RegexOptions.CultureInvariant), IbanChecksum),
        "ipv4" => (kind, new Regex(@"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", RegexOptions.CultureInvariant), null),
        "secret" => (kind, new Regex(@"\b(?:sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35})\b|-----BEGIN [A-Z ]*PRIVATE KEY-----", RegexOptions.CultureInvariant), null),
        _ => throw new InvalidOperationException($"detector {kind} was not validated"),
    };

    /// <summary>The kind of the first deny pattern the text matches, or null.</summary>
    public bool IsDenied(string text)
    {
        foreach (var d in _deny)
        {
            if (!d.IsMatch(text)) continue;
            _counter.WithLabels(_route, "deny", "block").Inc();
            return true;
        }
        return false;
    }

    /// <summary>
    /// The text with every finding replaced by [KIND] (mask), or unchanged (report, block); <paramref name="found"/>
    /// tells whether anything was detected. Counted per finding under its kind.
    /// </summary>
    public string Scan(string text, out bool found)
    {
        found = false;
        if (text.Length == 0) return text;
        foreach (var (kind, pattern, check) in _detectors)
        {
            var hit = false;
            var replaced = pattern.Replace(text, m =>
            {
                if (check is not null && !check(m.Value)) return m.Value;
                hit = true;
                _counter.WithLabels(_route, kind, ActionName).Inc();
                return Action == GuardAction.Mask ? "[" + kind.ToUpperInvariant() + "]" : m.Value;
            });
            if (hit) found = true;
            text = replaced;
        }
        return text;
    }

    private string ActionName => Action switch { GuardAction.Block => "block", GuardAction.Report => "report", _ => "mask" };

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
