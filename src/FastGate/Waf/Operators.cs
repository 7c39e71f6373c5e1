using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace FastGate.Waf;

/// <summary>A compiled operator: tests one (transformed) value. Parameters with macros are expanded per request.</summary>
public abstract class WafOperator
{
    public required string Name { get; init; }
    /// <summary>True when the value matches; <paramref name="tx"/> receives captures when the rule captures.</summary>
    public abstract bool Match(string value, WafTransaction tx, bool capture);
    /// <summary>The macros of the parameter (bound to the rule set's TX slots at load).</summary>
    internal virtual Macro? ParamMacro => null;
    /// <summary>Whether <see cref="Match"/>'s result depends on the value alone (no macro in the parameter, nothing
    /// read from the transaction): a transaction may then keep the result for the value (WafTransaction.Op). Captures
    /// are the only effect such an operator has, and only when it matches.</summary>
    internal virtual bool Pure => true;
}

internal sealed class RxOperator : WafOperator
{
    private readonly Regex _regex = null!;
    private readonly bool _onlyWholeMatch;
    public required Regex Regex
    {
        get => _regex;
        init { _regex = value; _onlyWholeMatch = value.GetGroupNumbers().Length == 1; }
    }

    /// <summary>A pattern with macros (CRS 920480: <c>^%{tx.allowed_request_content_type_charset}$</c>): expanded per
    /// request as ModSecurity v3 does, the regex compiled again only when the expansion changes (the last one is kept).</summary>
    public Macro? Pattern { get; init; }
    internal override Macro? ParamMacro => Pattern;
    internal override bool Pure => Pattern is null;
    private sealed record Compiled(string Source, Regex? Regex, bool OnlyWholeMatch);
    private Compiled? _last;

    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        if (Pattern is not null) return MatchExpanded(value, tx, capture);
        return Match(_regex, _onlyWholeMatch, value, tx, capture);
    }

    private bool MatchExpanded(string value, WafTransaction tx, bool capture)
    {
        var source = Pattern!.Expand(tx);
        var last = Volatile.Read(ref _last);
        if (last is null || last.Source != source)
        {
            Regex? rx;
            try { rx = WafRuleSet.CompileRx(PcreRegex.Translate(source)); }
            catch (ArgumentException) { rx = null; } // an expansion that is no regex matches nothing
            last = new Compiled(source, rx, rx is not null && rx.GetGroupNumbers().Length == 1);
            Volatile.Write(ref _last, last);
        }
        return last.Regex is not null && Match(last.Regex, last.OnlyWholeMatch, value, tx, capture);
    }

    private static bool Match(Regex regex, bool onlyWholeMatch, string value, WafTransaction tx, bool capture)
    {
        if (!capture) return regex.IsMatch(value);
        if (onlyWholeMatch)
        {
            // no groups: TX:0 is the match, found without a Match object (and the value itself when it all matched)
            foreach (var whole in regex.EnumerateMatches(value))
            {
                tx.SetCapture(0, whole.Index == 0 && whole.Length == value.Length ? value : value.Substring(whole.Index, whole.Length));
                return true;
            }
            return false;
        }
        var m = regex.Match(value);
        if (!m.Success) return false;
        for (int g = 0; g < 10; g++)
            if (g < m.Groups.Count && m.Groups[g].Success) tx.SetCapture(g, m.Groups[g].Value);
        return true;
    }
}

internal sealed class PmOperator : WafOperator
{
    public required AhoCorasick Phrases { get; init; }
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        var hit = Phrases.FindFirst(value);
        if (hit is null) return false;
        if (capture) tx.SetCapture(0, hit);
        return true;
    }
}

internal enum StringOp : byte { Contains, BeginsWith, EndsWith, StrEq, Within }

internal sealed class StringOperator : WafOperator
{
    public required StringOp Op { get; init; }
    public required Macro Param { get; init; }
    internal override Macro? ParamMacro => Param;
    internal override bool Pure => Param.IsConstant;
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        var p = Param.Expand(tx);
        bool ok = Op switch
        {
            StringOp.Contains => value.Contains(p, StringComparison.Ordinal),
            StringOp.BeginsWith => value.StartsWith(p, StringComparison.Ordinal),
            StringOp.EndsWith => value.EndsWith(p, StringComparison.Ordinal),
            StringOp.StrEq => value == p,
            _ => p.Contains(value, StringComparison.Ordinal),
        };
        if (ok && capture) tx.SetCapture(0, Op == StringOp.Within ? value : p);
        return ok;
    }
}

internal enum NumOp : byte { Eq, Ge, Gt, Le, Lt }

internal sealed class NumericOperator : WafOperator
{
    public required NumOp Op { get; init; }
    private readonly Macro _param = null!;
    private readonly long? _constant;
    /// <summary>The parameter; a constant one is read as a number once, here.</summary>
    public required Macro Param
    {
        get => _param;
        init { _param = value; _constant = value.IsConstant ? ToNumber(value.Expand(null!)) : null; }
    }

    internal override Macro? ParamMacro => _param;
    internal override bool Pure => _constant is not null;

    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        long a = ToNumber(value), b = _constant ?? ToNumber(Param.Expand(tx));
        return Op switch { NumOp.Eq => a == b, NumOp.Ge => a >= b, NumOp.Gt => a > b, NumOp.Le => a <= b, _ => a < b };
    }

    /// <summary>atoi: optional sign and leading digits, anything else 0.</summary>
    public static long ToNumber(string s)
    {
        int i = 0;
        while (i < s.Length && (s[i] == ' ' || s[i] == '\t')) i++;
        bool neg = false;
        if (i < s.Length && (s[i] == '-' || s[i] == '+')) { neg = s[i] == '-'; i++; }
        long v = 0;
        while (i < s.Length && s[i] >= '0' && s[i] <= '9' && v < long.MaxValue / 10) { v = v * 10 + (s[i] - '0'); i++; }
        return neg ? -v : v;
    }
}

internal sealed class ByteRangeOperator : WafOperator
{
    public required bool[] Allowed { get; init; }
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        foreach (var c in value) if (c > 255 || !Allowed[c]) return true;
        return false;
    }

    public static bool[]? Parse(string p)
    {
        var allowed = new bool[256];
        foreach (var part in p.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var dash = part.IndexOf('-');
            if (dash < 0) { if (!int.TryParse(part, out var one) || one is < 0 or > 255) return null; allowed[one] = true; continue; }
            if (!int.TryParse(part[..dash], out var lo) || !int.TryParse(part[(dash + 1)..], out var hi) || lo < 0 || hi > 255 || lo > hi) return null;
            for (int b = lo; b <= hi; b++) allowed[b] = true;
        }
        return allowed;
    }
}

internal sealed class UrlEncodingOperator : WafOperator
{
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        for (int i = 0; i < value.Length; i++)
        {
            if (value[i] != '%') continue;
            if (i + 2 >= value.Length || !Uri.IsHexDigit(value[i + 1]) || !Uri.IsHexDigit(value[i + 2])) return true;
            i += 2;
        }
        return false;
    }
}

internal sealed class Utf8EncodingOperator : WafOperator
{
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        for (int i = 0; i < value.Length;)
        {
            int c = value[i];
            if (c < 0x80) { i++; continue; }
            int need; int min;
            if ((c & 0xE0) == 0xC0) { need = 1; min = 0x80; }
            else if ((c & 0xF0) == 0xE0) { need = 2; min = 0x800; }
            else if ((c & 0xF8) == 0xF0) { need = 3; min = 0x10000; }
            else return true;
            if (i + need >= value.Length) return true;
            int code = c & (0x3F >> need);
            for (int k = 1; k <= need; k++)
            {
                int b = value[i + k];
                if ((b & 0xC0) != 0x80) return true;
                code = (code << 6) | (b & 0x3F);
            }
            if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return true;
            i += need + 1;
        }
        return false;
    }
}

internal sealed class IpMatchOperator : WafOperator
{
    public required Policy.CidrSet Set { get; init; }
    public override bool Match(string value, WafTransaction tx, bool capture) =>
        IPAddress.TryParse(value, out var ip) && Set.Contains(Policy.Cidr.ToUInt128(ip));
}

internal sealed class UnconditionalOperator : WafOperator
{
    public bool Result { get; init; } = true;
    public override bool Match(string value, WafTransaction tx, bool capture) => Result;
}

internal sealed class SqliOperator : WafOperator
{
    public override bool Match(string value, WafTransaction tx, bool capture)
    {
        var fp = InjectionDetector.SqliFingerprint(value);
        if (fp is null) return false;
        if (capture) tx.SetCapture(0, fp);
        return true;
    }
}

internal sealed class XssOperator : WafOperator
{
    public override bool Match(string value, WafTransaction tx, bool capture) => InjectionDetector.IsXss(value);
}

/// <summary>Case-insensitive (ASCII) multi-phrase search: one pass over the value whatever the number of phrases.</summary>
public sealed class AhoCorasick
{
    private readonly List<int[]> _next = [];
    private readonly List<int> _fail = [];
    private readonly List<string?> _output = [];

    public AhoCorasick(IEnumerable<string> phrases)
    {
        NewNode();
        foreach (var raw in phrases)
        {
            if (raw.Length == 0) continue;
            int node = 0;
            foreach (var ch in raw)
            {
                int c = Fold(ch);
                if (_next[node][c] == 0) { _next[node][c] = NewNode(); }
                node = _next[node][c];
            }
            _output[node] ??= raw;
        }
        var queue = new Queue<int>();
        for (int c = 0; c < 256; c++) if (_next[0][c] != 0) { _fail[_next[0][c]] = 0; queue.Enqueue(_next[0][c]); }
        while (queue.Count > 0)
        {
            int u = queue.Dequeue();
            _output[u] ??= _output[_fail[u]];
            for (int c = 0; c < 256; c++)
            {
                int v = _next[u][c];
                if (v == 0) { _next[u][c] = _next[_fail[u]][c]; continue; }
                _fail[v] = _next[_fail[u]][c];
                queue.Enqueue(v);
            }
        }
    }

    public int Count { get; private set; }

    private int NewNode()
    {
        _next.Add(new int[256]);
        _fail.Add(0);
        _output.Add(null);
        return Count++;
    }

    private static int Fold(char ch) { int c = ch & 0xFF; return c >= 'A' && c <= 'Z' ? c + 32 : c; }

    /// <summary>The first phrase found (by end position), or null.</summary>
    public string? FindFirst(string text)
    {
        int node = 0;
        foreach (var ch in text)
        {
            node = _next[node][Fold(ch)];
            if (_output[node] is { } hit) return hit;
        }
        return null;
    }
}

/// <summary>One %{collection.key} expansion or literal text (rule parameters, setvar values, msg, logdata).</summary>
public sealed class Macro
{
    private readonly (string Text, string? Collection, string? Key)[] _parts;
    public string Source { get; }

    private Macro(string source, (string, string?, string?)[] parts) { Source = source; _parts = parts; }

    // per part: its TX slot (%{tx.name}) or -1, and its collection's WafCollections id; bound once at load
    private int[] _txSlots = [];
    private int[] _collectionIds = [];

    /// <summary>Binds each %{tx.name} to its slot in the rule set's TX table (WafRuleSet.TxSlotOf), at load.</summary>
    internal void Bind(Func<string, int> txSlot)
    {
        var slots = new int[_parts.Length];
        var ids = new int[_parts.Length];
        for (int i = 0; i < _parts.Length; i++)
        {
            var (_, collection, key) = _parts[i];
            slots[i] = collection == "TX" && key is not null ? txSlot(key) : -1;
            ids[i] = collection is null ? -1 : WafCollections.Id(collection);
        }
        _txSlots = slots;
        _collectionIds = ids;
    }

    private string Part(int i, WafTransaction tx)
    {
        var (text, collection, key) = _parts[i];
        if (collection is null) return text;
        if ((uint)i < (uint)_txSlots.Length) return tx.MacroValue(collection, key, _txSlots[i], _collectionIds[i]);
        return tx.MacroValue(collection, key, -1, -1);
    }

    public bool IsConstant => _parts.Length == 0 || (_parts.Length == 1 && _parts[0].Collection is null);

    /// <summary>How many parts (literals and %{...}) the macro has: with two or more, Expand builds a new string.</summary>
    internal int PartCount => _parts.Length;

    /// <summary>Whether an expansion could be <paramref name="name"/> (lower-cased): false when a literal part does not
    /// occur in it (CRS's 'tx.%{rule.id}-OWASP_CRS/...' can never be 'executing_paranoia_level').</summary>
    internal bool CouldExpandTo(string name)
    {
        foreach (var (text, collection, _) in _parts)
            if (collection is null && !name.Contains(text.ToLowerInvariant(), StringComparison.Ordinal)) return false;
        return true;
    }

    public static Macro Parse(string s)
    {
        var parts = new List<(string, string?, string?)>();
        int i = 0;
        var lit = new StringBuilder();
        while (i < s.Length)
        {
            int open = s.IndexOf("%{", i, StringComparison.Ordinal);
            if (open < 0) { lit.Append(s, i, s.Length - i); break; }
            int close = s.IndexOf('}', open + 2);
            if (close < 0) { lit.Append(s, i, s.Length - i); break; }
            lit.Append(s, i, open - i);
            if (lit.Length > 0) { parts.Add((lit.ToString(), null, null)); lit.Clear(); }
            var name = s[(open + 2)..close];
            var dot = name.IndexOfAny(['.', ':']);
            parts.Add(("", dot < 0 ? name.ToUpperInvariant() : name[..dot].ToUpperInvariant(), dot < 0 ? null : name[(dot + 1)..].ToLowerInvariant()));
            i = close + 1;
        }
        if (lit.Length > 0) parts.Add((lit.ToString(), null, null));
        return new Macro(s, parts.ToArray());
    }

    /// <summary>
    /// Whether each part expands to the very string it did last time (<paramref name="last"/>, updated): a macro whose
    /// parts are the same strings expands to the same text, so the caller's earlier result still holds.
    /// </summary>
    internal bool SameParts(WafTransaction tx, ref string[]? last)
    {
        bool same = last is not null && last.Length == _parts.Length;
        if (!same) last = new string[_parts.Length];
        for (int i = 0; i < _parts.Length; i++)
        {
            var p = Part(i, tx);
            if (!ReferenceEquals(last![i], p)) { last[i] = p; same = false; }
        }
        return same;
    }

    public string Expand(WafTransaction tx)
    {
        if (_parts.Length == 0) return "";
        if (_parts.Length == 1) return Part(0, tx);
        // the parts are strings that exist already (literals, collection values): one concatenation, no builder
        if (_parts.Length == 2) return string.Concat(Part(0, tx), Part(1, tx));
        if (_parts.Length == 3) return string.Concat(Part(0, tx), Part(1, tx), Part(2, tx));
        if (_parts.Length == 4) return string.Concat(Part(0, tx), Part(1, tx), Part(2, tx), Part(3, tx));
        var sb = new StringBuilder();
        for (int i = 0; i < _parts.Length; i++) sb.Append(Part(i, tx));
        return sb.ToString();
    }
}
