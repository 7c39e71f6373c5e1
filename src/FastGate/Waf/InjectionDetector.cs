using System.Text;

namespace FastGate.Waf;

/// <summary>
/// FastGate's own @detectSQLi / @detectXSS, after the published tokenise-and-fingerprint idea (not another
/// project's code or fingerprint list). SQL: the value is tokenised as SQL three times — as written, as if it
/// followed an opening single quote and an opening double quote (the value closes a string the application
/// opened) — into one-letter token classes (s string, 1 number, n name, k keyword, U union, E statement verb,
/// f function, v variable, o operator, &amp; logic, c comment, ; ( ) ,); the first tokens form a fingerprint that
/// is SQL injection when it has one of a small set of shapes written here (a closed string followed by logic or a
/// comment, UNION SELECT, a stacked statement, logic comparing literals, ...). HTML: the value is parsed as HTML
/// from four starting states (text, and inside an unquoted, a double-quoted and a single-quoted attribute value);
/// script-capable tags, event-handler and style attributes, and script URLs in URL attributes are XSS.
/// </summary>
public static class InjectionDetector
{
    private static readonly HashSet<string> Verbs = new(StringComparer.Ordinal)
    { "select", "insert", "update", "delete", "drop", "exec", "execute", "declare", "create", "alter", "truncate", "replace", "shutdown", "grant", "revoke", "merge", "call", "handler", "load_file" };
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    { "from", "where", "having", "limit", "order", "group", "by", "into", "like", "rlike", "regexp", "between", "is", "null", "case", "when", "then", "else", "end", "waitfor", "delay", "values", "set", "table", "database", "procedure", "offset", "top", "as", "in", "outfile", "dumpfile", "information_schema", "sounds", "collate", "escape", "div", "mod", "distinct", "join", "on" };
    private static readonly HashSet<string> Logic = new(StringComparer.Ordinal) { "and", "or", "xor", "not", "&&", "||" };
    private static readonly HashSet<string> Functions = new(StringComparer.Ordinal)
    { "sleep", "benchmark", "char", "chr", "concat", "concat_ws", "version", "user", "database", "substring", "substr", "mid", "ascii", "ord", "count", "load_file", "extractvalue", "updatexml", "if", "ifnull", "cast", "convert", "hex", "unhex", "md5", "sha1", "pg_sleep", "length", "group_concat", "current_user", "system_user", "session_user", "schema", "exp", "floor", "rand", "now", "elt", "make_set", "name_const", "row", "exists", "isnull", "nullif", "coalesce", "lower", "upper", "char_length", "dbms_pipe", "utl_inaddr", "xp_cmdshell", "sys_eval", "sys_exec" };

    /// <summary>The fingerprint of an injection found in <paramref name="s"/>, or null.</summary>
    public static string? SqliFingerprint(string s)
    {
        if (s.Length == 0) return null;
        foreach (var quote in (ReadOnlySpan<char>)['\0', '\'', '"'])
        {
            if (quote != '\0' && s.IndexOf(quote) < 0) continue;
            var fp = Fingerprint(s, quote);
            if (IsSqli(fp, quote != '\0')) return fp;
        }
        return null;
    }

    private static string Fingerprint(string s, char openQuote)
    {
        var sb = new StringBuilder(8);
        int i = 0;
        if (openQuote != '\0')
        {
            // the value continues a string the application opened: up to the first closing quote is that string
            int close = s.IndexOf(openQuote);
            sb.Append('s');
            i = close + 1;
        }
        char last = '\0';
        while (i < s.Length && sb.Length < 6)
        {
            char c = s[i];
            if (c <= ' ' || c == (char)0xA0) { i++; continue; }
            char t;
            if (c == '\'' || c == '"' || c == '`')
            {
                int end = s.IndexOf(c, i + 1);
                i = end < 0 ? s.Length : end + 1;
                t = c == '`' ? 'n' : 's';
            }
            else if (c == '-' && i + 1 < s.Length && s[i + 1] == '-' || c == '#')
            {
                t = 'c';
                i = s.Length;
            }
            else if (c == '/' && i + 1 < s.Length && s[i + 1] == '*')
            {
                int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                // MySQL's /*! ... */ runs its content: skip the marker, tokenise the inside
                if (i + 2 < s.Length && s[i + 2] == '!') { i += 3; while (i < s.Length && char.IsAsciiDigit(s[i])) i++; continue; }
                i = end < 0 ? s.Length : end + 2;
                t = 'c';
                if (end < 0) { Add(sb, ref last, t); break; }
                continue; // an inline comment separates tokens and is not itself one
            }
            else if (char.IsAsciiDigit(c) || (c == '.' && i + 1 < s.Length && char.IsAsciiDigit(s[i + 1])))
            {
                i++;
                while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] == '.')) i++;
                t = '1';
            }
            else if (c == '@')
            {
                i++;
                if (i < s.Length && s[i] == '@') i++;
                while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '$')) i++;
                t = 'v';
            }
            else if (char.IsAsciiLetter(c) || c == '_' || c == '$' || c > 0x7F)
            {
                int start = i;
                while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] == '_' || s[i] == '$' || s[i] == '.' || s[i] > 0x7F)) i++;
                var word = s[start..i].ToLowerInvariant();
                int j = i;
                while (j < s.Length && s[j] <= ' ') j++;
                bool call = j < s.Length && s[j] == '(';
                if (word == "union") t = 'U';
                else if (word == "all" && last == 'U') continue;
                else if (Verbs.Contains(word)) t = 'E';
                else if (Logic.Contains(word)) t = '&';
                else if (call && Functions.Contains(word)) t = 'f';
                else if (Keywords.Contains(word)) t = 'k';
                else t = 'n';
            }
            else if (c == '&' && i + 1 < s.Length && s[i + 1] == '&' || c == '|' && i + 1 < s.Length && s[i + 1] == '|')
            {
                i += 2;
                t = '&';
            }
            else if (c == ';' || c == '(' || c == ')' || c == ',')
            {
                i++;
                t = c;
            }
            else if ("=<>!+-*/%^|&~:".Contains(c))
            {
                i++;
                while (i < s.Length && "=<>!|&".Contains(s[i])) i++;
                t = 'o';
            }
            else { i++; continue; }
            Add(sb, ref last, t);
        }
        return sb.ToString();
    }

    private static void Add(StringBuilder sb, ref char last, char t)
    {
        // fold: consecutive names (a two-word identifier) and consecutive operators count once
        if ((t == 'n' || t == 'o') && last == t) return;
        sb.Append(t);
        last = t;
    }

    private static bool IsSqli(string fp, bool closedString)
    {
        if (fp.Length < 2) return false;
        if (fp.Contains("UE", StringComparison.Ordinal) || fp.Contains("U(E", StringComparison.Ordinal)) return true;
        if (fp.Contains(";E", StringComparison.Ordinal)) return fp[0] is 's' or '1' or 'n' or ')' or ';';
        if (closedString)
        {
            // 'x' or 1=1 … / admin'-- / ') or ('1'='1 / ' and sleep(5)
            var rest = fp.AsSpan(1).TrimStart(')');
            if (rest.Length == 0) return false;
            if (rest[0] == 'c') return fp.Length == 2 || fp[1] == 'c';
            if (rest[0] == '&' && rest.Length >= 2 && rest[1] is 's' or '1' or 'f' or 'v' or '(' or 'n' or 'E') return rest.Length >= 3 || rest[1] is '1' or 'f' or 'E';
            if (rest[0] == 'o' && rest.Length >= 2 && rest[1] is 's' or '1' or 'v' or 'f') return rest.Length >= 3 && rest[2] is '&' or 'c' or 'o' or 'k';
            if (rest[0] == 'k' && rest.Length >= 2 && rest[1] is '1' or 's' or 'n') return rest.Length >= 3 && rest[2] is 'c' or '&' or 'o';
            if (rest[0] == 'E') return true;
            return false;
        }
        // 1 or 1=1 / 1 and sleep(5) / -1 union / 1) or (1=1
        var f = fp.AsSpan().TrimStart('(');
        if (f.Length >= 4 && f[0] is '1' or 'n' && f[1] == ')' && f[2] == '&') f = f[1..];
        if (f.Length >= 3 && f[0] == '1' && f[1] == '&' && f[2] is '1' or 'f' or 'v' or 's' or '(' or 'E')
            return f.Length >= 4 && f[3] is 'o' or 'c' or '(' or 'k' || f[2] is 'f' or 'E';
        if (f.Length >= 3 && f[0] == 'n' && f[1] == '&' && f[2] is '1' or 's' or 'v' && f.Length >= 4 && f[3] == 'o') return true;
        if (f.Length >= 3 && f[0] == 'E' && (f.IndexOf('k') > 0) && f[1] is 'n' or 'o' or 'f' or '1' or 'v') return true;
        if (f.Length >= 3 && f[0] == 'f' && f[1] == '(' && f[2] is 'E' or 'v') return true;
        if (f.Length >= 4 && f[0] == 'f' && f[1] == '(' && f[2] is '1' or 's' && f[3] == ',') return true; // benchmark(1e7,md5(1))
        return false;
    }

    // ---------------- XSS ----------------

    private static readonly HashSet<string> BadTags = new(StringComparer.Ordinal)
    { "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math", "meta", "link", "style", "base", "form", "xml", "import", "isindex", "vmlframe", "template", "noscript", "xss" };
    private static readonly HashSet<string> UrlAttributes = new(StringComparer.Ordinal)
    { "href", "src", "action", "formaction", "data", "xlink:href", "background", "dynsrc", "lowsrc", "poster", "codebase", "code", "values", "from", "to", "by", "folder", "srcdoc" };

    public static bool IsXss(string s)
    {
        if (s.Length == 0) return false;
        var lower = Transforms.Lower(s.Replace("\0", ""));
        return Html(lower, 0) || (lower.Contains('=') || lower.Contains(' ') || lower.Contains('>')) && (Html("<x a=" + lower, 0) || Html("<x a=\"" + lower, 0) || Html("<x a='" + lower, 0));
    }

    private static bool IsScriptUrl(string v)
    {
        var sb = new StringBuilder(16);
        foreach (var c in v)
        {
            if (c <= ' ' || c == (char)0x7F) continue;
            sb.Append(c);
            if (sb.Length >= 11) break;
        }
        var t = sb.ToString();
        return t.StartsWith("javascript:", StringComparison.Ordinal) || t.StartsWith("vbscript:", StringComparison.Ordinal)
            || t.StartsWith("data:text/ht", StringComparison.Ordinal) || t.StartsWith("livescript:", StringComparison.Ordinal);
    }

    /// <summary>Scans tags from <paramref name="i"/>: true at the first dangerous tag or attribute.</summary>
    private static bool Html(string s, int i)
    {
        while (i < s.Length)
        {
            int lt = s.IndexOf('<', i);
            if (lt < 0 || lt + 1 >= s.Length) return false;
            i = lt + 1;
            if (s[i] == '/') i++;
            if (i < s.Length && (s[i] == '!' || s[i] == '?'))
            {
                // <!-- ... -->, <!DOCTYPE, <? ... : conditional comments and processing instructions are suspicious only with "[if" / "import"
                if (s.AsSpan(i).StartsWith("![if") || s.AsSpan(i).StartsWith("!--[if") || s.AsSpan(i).StartsWith("?import")) return true;
                continue;
            }
            int start = i;
            while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] == ':' || s[i] == '-' || s[i] == '_')) i++;
            if (i == start) continue;
            var tag = s[start..i];
            var colon = tag.IndexOf(':');
            if (BadTags.Contains(colon >= 0 ? tag[(colon + 1)..] : tag)) return true;
            if (Attributes(s, ref i)) return true;
        }
        return false;
    }

    private static bool Attributes(string s, ref int i)
    {
        while (i < s.Length)
        {
            while (i < s.Length && (s[i] <= ' ' || s[i] == '/' || s[i] == '"' || s[i] == '\'' || s[i] == '`')) i++;
            if (i >= s.Length) return false;
            if (s[i] == '>') { i++; return false; }
            int start = i;
            while (i < s.Length && s[i] > ' ' && s[i] != '=' && s[i] != '>' && s[i] != '/') i++;
            var name = s[start..i];
            while (i < s.Length && s[i] <= ' ') i++;
            string value = "";
            if (i < s.Length && s[i] == '=')
            {
                i++;
                while (i < s.Length && s[i] <= ' ') i++;
                if (i < s.Length && (s[i] == '"' || s[i] == '\'' || s[i] == '`'))
                {
                    char q = s[i];
                    int end = s.IndexOf(q, i + 1);
                    value = end < 0 ? s[(i + 1)..] : s[(i + 1)..end];
                    i = end < 0 ? s.Length : end + 1;
                }
                else
                {
                    int vs = i;
                    while (i < s.Length && s[i] > ' ' && s[i] != '>') i++;
                    value = s[vs..i];
                }
            }
            if (name.Length > 2 && name.StartsWith("on", StringComparison.Ordinal) && char.IsAsciiLetter(name[2])) return true;
            if (name == "style" && value.Length > 0 && (value.Contains("expression") || value.Contains("url(") || value.Contains("behavior") || value.Contains("javascript"))) return true;
            if (UrlAttributes.Contains(name) && IsScriptUrl(Transforms.HtmlEntityDecode(value))) return true;
        }
        return false;
    }
}
