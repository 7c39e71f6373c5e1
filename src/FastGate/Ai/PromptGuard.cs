using System.Buffers;
using System.Globalization;
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
/// <remarks>
/// Cost: the detectors run one after another, each over the text the previous one left. The built-in regexes are
/// source-generated (no interpreter, the same code under Native AOT), so each starts with a vectorised search for
/// what its match must begin with; the national ids are not regexes but scanners that jump from one ASCII digit run
/// to the next (<see cref="SsnScanner"/>, <see cref="NinoScanner"/>): prose without digits costs them one vectorised
/// search. Matches are enumerated as spans and checked in place: a scan that finds nothing allocates nothing; a mask
/// writes the new text once into a pooled buffer.
/// </remarks>
public sealed partial class PromptGuard
{
    private readonly Detector[] _detectors;
    private readonly Regex[] _deny;
    private readonly Counter _counter;
    private readonly string _route;

    internal delegate bool SpanCheck(ReadOnlySpan<char> candidate);

    /// <summary>One detector: its kind, its mask, its counter, and how it finds candidates.</summary>
    private abstract class Detector(string kind, Counter.Child count)
    {
        public string Kind { get; } = kind;
        public string Mask { get; } = "[" + kind.ToUpperInvariant() + "]";
        public Counter.Child Count { get; } = count;

        /// <summary>Finds every finding in <paramref name="text"/>, left to right, and hands each to <paramref name="sink"/>.</summary>
        public abstract void Find(string text, ref FindingSink sink);
    }

    /// <summary>A regular expression, its matches optionally checked (Luhn, mod 97).</summary>
    private sealed class RegexDetector(string kind, Counter.Child count, Regex pattern, SpanCheck? check) : Detector(kind, count)
    {
        public override void Find(string text, ref FindingSink sink)
        {
            foreach (var m in pattern.EnumerateMatches(text))
            {
                if (check is not null && !check(text.AsSpan(m.Index, m.Length))) continue;
                sink.Add(m.Index, m.Length);
            }
        }
    }

    /// <summary>A scanner written by hand (the national ids).</summary>
    private sealed class ScannerDetector(string kind, Counter.Child count, ScanFunc scan) : Detector(kind, count)
    {
        public override void Find(string text, ref FindingSink sink) => scan(text, ref sink);
    }

    private delegate void ScanFunc(string text, ref FindingSink sink);

    public PromptGuard(AiGuardConfig config, string route, Counter counter)
    {
        _route = route;
        _counter = counter;
        Action = config.Action switch { "block" => GuardAction.Block, "report" => GuardAction.Report, _ => GuardAction.Mask };
        MaskResponses = config.Responses;
        MaxPromptTokens = config.MaxPromptTokens;
        var detectors = new List<Detector>();
        foreach (var kind in config.Detect) detectors.Add(Builtin(kind, counter.WithLabels(route, kind, ActionName)));
        foreach (var p in config.Patterns)
            detectors.Add(new RegexDetector(p.Kind, counter.WithLabels(route, p.Kind, ActionName), new Regex(p.Pattern,
                RegexOptions.CultureInvariant | (p.IgnoreCase ? RegexOptions.IgnoreCase : RegexOptions.None), TimeSpan.FromMilliseconds(100)), null));
        _detectors = [.. detectors];
        _deny = config.Deny.Select(d => new Regex(d, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(100))).ToArray();
    }

    public GuardAction Action { get; }
    public bool MaskResponses { get; }
    public long MaxPromptTokens { get; }
    public bool HasDetectors => _detectors.Length > 0;

    [GeneratedRegex(@"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", RegexOptions.CultureInvariant)]
    private static partial Regex EmailPattern();

    [GeneratedRegex(@"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?!\w)", RegexOptions.CultureInvariant)]
    private static partial Regex PhonePattern();

    [GeneratedRegex(@"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)", RegexOptions.CultureInvariant)]
    private static partial Regex CardPattern();

    [GeneratedRegex(@"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", RegexOptions.CultureInvariant)]
    private static partial Regex IbanPattern();

    [GeneratedRegex(@"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", RegexOptions.CultureInvariant)]
    private static partial Regex Ipv4Pattern();

    [GeneratedRegex(@"\b(?:sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35})\b|-----BEGIN [A-Z ]*PRIVATE KEY-----", RegexOptions.CultureInvariant)]
    private static partial Regex SecretPattern();

    private static Detector Builtin(string kind, Counter.Child count) => kind switch
    {
        "email" => new RegexDetector(kind, count, EmailPattern(), null),
        "phone" => new RegexDetector(kind, count, PhonePattern(), null),
        "card" => new RegexDetector(kind, count, CardPattern(), Luhn),
        "iban" => new RegexDetector(kind, count, IbanPattern(), IbanChecksum),
        "ipv4" => new RegexDetector(kind, count, Ipv4Pattern(), null),
        "secret" => new RegexDetector(kind, count, SecretPattern(), null),
        "ssn" => new ScannerDetector(kind, count, SsnScanner),
        "nino" => new ScannerDetector(kind, count, NinoScanner),
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
            var sink = new FindingSink(d, i, Action == GuardAction.Mask, findings, text);
            try
            {
                d.Find(text, ref sink);
                if (sink.Hit)
                {
                    found = true;
                    text = sink.Result();
                }
            }
            catch (RegexMatchTimeoutException)
            {
                found = true;
                d.Count.Inc();
                findings?.Add(i);
                if (Action == GuardAction.Mask) text = d.Mask;
            }
            finally
            {
                sink.Dispose();
            }
        }
        return text;
    }

    /// <summary>
    /// Where one detector's findings go, left to right: counted, tallied, and (mask) the text copied into a pooled
    /// buffer with each finding replaced by the mask. Nothing is rented until the first finding.
    /// </summary>
    private ref struct FindingSink(Detector detector, int index, bool mask, GuardFindings? findings, string text)
    {
        private char[]? _buffer;
        private int _written, _copied;

        public bool Hit { get; private set; }

        /// <summary>A finding at [start, start + length); findings come in order and never overlap.</summary>
        public void Add(int start, int length)
        {
            Hit = true;
            detector.Count.Inc();
            findings?.Add(index);
            if (!mask) return;
            Append(text.AsSpan(_copied, start - _copied));
            Append(detector.Mask);
            _copied = start + length;
        }

        public string Result()
        {
            if (_buffer is null) return text;
            Append(text.AsSpan(_copied));
            _copied = text.Length;
            return new string(_buffer, 0, _written);
        }

        private void Append(ReadOnlySpan<char> part)
        {
            if (_buffer is null || _written + part.Length > _buffer.Length)
            {
                var bigger = ArrayPool<char>.Shared.Rent(Math.Max(text.Length + 64, 2 * (_written + part.Length)));
                if (_buffer is not null)
                {
                    _buffer.AsSpan(0, _written).CopyTo(bigger);
                    ArrayPool<char>.Shared.Return(_buffer);
                }
                _buffer = bigger;
            }
            part.CopyTo(_buffer.AsSpan(_written));
            _written += part.Length;
        }

        public void Dispose()
        {
            if (_buffer is not null) ArrayPool<char>.Shared.Return(_buffer);
            _buffer = null;
        }
    }

    internal string KindAt(int index) => _detectors[index].Kind;
    internal int DetectorCount => _detectors.Length;

    internal string ActionName => Action switch { GuardAction.Block => "block", GuardAction.Report => "report", _ => "mask" };

    /// <summary>
    /// US social security numbers: <c>AAA-GG-SSSS</c> or <c>AAA GG SSSS</c> (one separator, used twice), not inside a
    /// longer number or word (the character before and after is not a word character of .NET's <c>\w</c> or <c>-</c>),
    /// then <see cref="UsSsn"/>. What the regex <c>(?&lt;![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])</c> found, without
    /// a regex: an SSN starts a run of ASCII digits, so the scan jumps from run to run with a vectorised search and
    /// looks at the shape only there.
    /// </summary>
    private static void SsnScanner(string text, ref FindingSink sink)
    {
        var s = text.AsSpan();
        int i = 0;
        while (i <= s.Length - 11)
        {
            int rel = s[i..].IndexOfAnyInRange('0', '9');
            if (rel < 0) return;
            int p = i + rel;
            if ((p == 0 || (s[p - 1] != '-' && !IsWordChar(s[p - 1]))) && IsSsnShape(s, p))
            {
                if (UsSsn(s.Slice(p, 11))) sink.Add(p, 11);
                i = p + 11;
                continue;
            }
            i = EndOfDigits(s, p + 1); // the rest of this run follows a digit: no SSN starts there
        }
    }

    private static bool IsSsnShape(ReadOnlySpan<char> s, int p)
    {
        if (p + 11 > s.Length) return false;
        char sep = s[p + 3];
        if ((sep != '-' && sep != ' ') || s[p + 6] != sep) return false;
        if (!char.IsAsciiDigit(s[p]) || !char.IsAsciiDigit(s[p + 1]) || !char.IsAsciiDigit(s[p + 2])
            || !char.IsAsciiDigit(s[p + 4]) || !char.IsAsciiDigit(s[p + 5])
            || !char.IsAsciiDigit(s[p + 7]) || !char.IsAsciiDigit(s[p + 8]) || !char.IsAsciiDigit(s[p + 9]) || !char.IsAsciiDigit(s[p + 10]))
            return false;
        return p + 11 == s.Length || (s[p + 11] != '-' && !IsWordChar(s[p + 11]));
    }

    /// <summary>
    /// UK national insurance numbers: two ASCII letters, three pairs of ASCII digits and a suffix A-D (any case), a
    /// space allowed between the groups, not inside a longer run of ASCII letters and digits; then <see cref="UkNino"/>
    /// on the prefix. What the regex <c>(?&lt;![A-Za-z0-9])[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d](?![A-Za-z0-9])</c>
    /// found (except that its <c>\d</c> also took other scripts' digits, which HMRC never issues), without its cost:
    /// that regex began with two letters, so it tried nearly every position of prose. The first digit pair starts a
    /// run of ASCII digits, so the scan jumps from run to run and looks back for the prefix.
    /// </summary>
    private static void NinoScanner(string text, ref FindingSink sink)
    {
        var s = text.AsSpan();
        int i = 0;
        while (i < s.Length)
        {
            int rel = s[i..].IndexOfAnyInRange('0', '9');
            if (rel < 0) return;
            int q = i + rel; // starts a run of digits: i is 0, the end of a run, or the end of a match
            int start = q >= 1 && s[q - 1] == ' ' ? q - 3 : q - 2;
            if (start >= 0 && char.IsAsciiLetter(s[start]) && char.IsAsciiLetter(s[start + 1])
                && (start == 0 || !char.IsAsciiLetterOrDigit(s[start - 1])))
            {
                int end = NinoEnd(s, q);
                if (end > 0)
                {
                    if (UkNino(s.Slice(start, 2))) sink.Add(start, end - start);
                    i = end;
                    continue;
                }
            }
            i = EndOfDigits(s, q + 1);
        }
    }

    /// <summary>The end of <c>\d{2} ?\d{2} ?\d{2} ?[A-Da-d](?![A-Za-z0-9])</c> from <paramref name="q"/>, or -1.</summary>
    private static int NinoEnd(ReadOnlySpan<char> s, int q)
    {
        int k = q;
        for (int pair = 0; pair < 3; pair++)
        {
            if (pair > 0 && k < s.Length && s[k] == ' ') k++;
            if (k + 1 >= s.Length || !char.IsAsciiDigit(s[k]) || !char.IsAsciiDigit(s[k + 1])) return -1;
            k += 2;
        }
        if (k < s.Length && s[k] == ' ') k++;
        if (k >= s.Length || (s[k] | 0x20) is < 'a' or > 'd') return -1;
        k++;
        return k < s.Length && char.IsAsciiLetterOrDigit(s[k]) ? -1 : k;
    }

    private static int EndOfDigits(ReadOnlySpan<char> s, int from)
    {
        if (from >= s.Length) return s.Length;
        int rel = s[from..].IndexOfAnyExceptInRange('0', '9');
        return rel < 0 ? s.Length : from + rel;
    }

    private const int WordCategories =
        1 << (int)UnicodeCategory.UppercaseLetter | 1 << (int)UnicodeCategory.LowercaseLetter |
        1 << (int)UnicodeCategory.TitlecaseLetter | 1 << (int)UnicodeCategory.ModifierLetter |
        1 << (int)UnicodeCategory.OtherLetter | 1 << (int)UnicodeCategory.NonSpacingMark |
        1 << (int)UnicodeCategory.DecimalDigitNumber | 1 << (int)UnicodeCategory.ConnectorPunctuation;

    /// <summary>A character of .NET's <c>\w</c> (PromptGuardTests holds it to <c>\w</c> for every UTF-16 value).</summary>
    internal static bool IsWordChar(char c) =>
        c < 128 ? char.IsAsciiLetterOrDigit(c) || c == '_' : ((1 << (int)CharUnicodeInfo.GetUnicodeCategory(c)) & WordCategories) != 0;

    internal static bool Luhn(ReadOnlySpan<char> s)
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
    internal static bool UsSsn(ReadOnlySpan<char> s)
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
    /// A UK national insurance number HMRC can issue (its first two characters, the prefix): the first letter not D, F,
    /// I, Q, U or V; the second not D, F, I, O, Q, U or V; the prefix not BG, GB, KN, NK, NT, TN or ZZ (administrative
    /// or never issued).
    /// </summary>
    internal static bool UkNino(ReadOnlySpan<char> s)
    {
        char a = char.ToUpperInvariant(s[0]), b = char.ToUpperInvariant(s[1]);
        if ("DFIQUV".Contains(a) || "DFIOQUV".Contains(b)) return false;
        return (a, b) is not (('B', 'G') or ('G', 'B') or ('K', 'N') or ('N', 'K') or ('N', 'T') or ('T', 'N') or ('Z', 'Z'));
    }

    internal static bool IbanChecksum(ReadOnlySpan<char> s)
    {
        int length = 0;
        foreach (char c in s) if (c != ' ') length++;
        if (length < 15) return false;
        // mod 97 of the IBAN with its first four characters moved to the end, letters as 10-35
        int mod = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            int k = 0;
            foreach (char c in s)
            {
                if (c == ' ') continue;
                if ((k++ >= 4) != (pass == 0)) continue;
                int v = char.IsAsciiDigit(c) ? c - '0' : c - 'A' + 10;
                mod = v >= 10 ? (mod * 100 + v) % 97 : (mod * 10 + v) % 97;
            }
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
