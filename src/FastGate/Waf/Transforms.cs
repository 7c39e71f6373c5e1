using System.Security.Cryptography;
using System.Text;

namespace FastGate.Waf;

/// <summary>
/// The transformations CRS uses. Values are byte strings held as Latin-1 text (one char per byte, 0–255), the way
/// ModSecurity works on bytes: every transformation reads and writes bytes.
/// </summary>
public static class Transforms
{
    public delegate string Fn(string s);

    /// <summary>The transformation called <paramref name="name"/> (case-insensitive), or null when unsupported.</summary>
    public static Fn? Get(string name) => name.ToLowerInvariant() switch
    {
        "lowercase" => Lower,
        "uppercase" => Upper,
        "urldecode" => s => UrlDecode(s, false),
        "urldecodeuni" => s => UrlDecode(s, true),
        "htmlentitydecode" => HtmlEntityDecode,
        "jsdecode" => JsDecode,
        "cssdecode" => CssDecode,
        "removenulls" => s => s.Contains('\0') ? s.Replace("\0", "") : s,
        "removewhitespace" => RemoveWhitespace,
        "compresswhitespace" => CompressWhitespace,
        "replacecomments" => ReplaceComments,
        "cmdline" => CmdLine,
        "normalisepath" or "normalizepath" => s => NormalizePath(s, false),
        "normalisepathwin" or "normalizepathwin" => s => NormalizePath(s, true),
        "utf8tounicode" => Utf8ToUnicode,
        "base64decode" => Base64Decode,
        "hexencode" => HexEncode,
        "hexdecode" => HexDecode,
        "length" => s => s.Length.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "sha1" => s => Latin1(SHA1.HashData(Encoding.Latin1.GetBytes(s))),
        "md5" => s => Latin1(MD5.HashData(Encoding.Latin1.GetBytes(s))),
        "trim" => s => s.Trim(WhitespaceChars),
        "trimleft" => s => s.TrimStart(WhitespaceChars),
        "trimright" => s => s.TrimEnd(WhitespaceChars),
        _ => null,
    };

    private static readonly char[] WhitespaceChars = [' ', '\t', '\n', '\r', '\f', '\v'];

    private static string Latin1(byte[] b) => Encoding.Latin1.GetString(b);

    public static string Lower(string s)
    {
        int i = 0;
        while (i < s.Length && !(s[i] >= 'A' && s[i] <= 'Z')) i++;
        if (i == s.Length) return s;
        var c = s.ToCharArray();
        for (; i < c.Length; i++) if (c[i] >= 'A' && c[i] <= 'Z') c[i] = (char)(c[i] + 32);
        return new string(c);
    }

    public static string Upper(string s)
    {
        var c = s.ToCharArray();
        for (int i = 0; i < c.Length; i++) if (c[i] >= 'a' && c[i] <= 'z') c[i] = (char)(c[i] - 32);
        return new string(c);
    }

    private static int Hex(char c) => c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

    /// <summary>urlDecode (and urlDecodeUni: %uHHHH too, the low byte, with full-width ASCII mapped to ASCII). Invalid escapes stay as written; '+' is a space.</summary>
    public static string UrlDecode(string s, bool uni)
    {
        if (s.IndexOf('%') < 0 && s.IndexOf('+') < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '+') { sb.Append(' '); continue; }
            if (c == '%')
            {
                if (uni && i + 5 < s.Length && (s[i + 1] == 'u' || s[i + 1] == 'U'))
                {
                    int a = Hex(s[i + 2]), b = Hex(s[i + 3]), d = Hex(s[i + 4]), e = Hex(s[i + 5]);
                    if (a >= 0 && b >= 0 && d >= 0 && e >= 0)
                    {
                        int code = (a << 12) | (b << 8) | (d << 4) | e;
                        int low = code & 0xFF;
                        // full-width forms U+FF01..U+FF5E are ASCII + 0x20 in their low byte
                        if (code >= 0xFF01 && code <= 0xFF5E) low = (code - 0xFEE0) & 0xFF;
                        sb.Append((char)low);
                        i += 5;
                        continue;
                    }
                }
                if (i + 2 < s.Length)
                {
                    int h = Hex(s[i + 1]), l = Hex(s[i + 2]);
                    if (h >= 0 && l >= 0) { sb.Append((char)((h << 4) | l)); i += 2; continue; }
                }
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    private static readonly Dictionary<string, char> Entities = new(StringComparer.OrdinalIgnoreCase)
    {
        ["quot"] = '"', ["amp"] = '&', ["lt"] = '<', ["gt"] = '>', ["nbsp"] = (char)0xA0,
    };

    /// <summary>&amp;#DDD; &amp;#xHH; and the named entities quot, amp, lt, gt, nbsp (the semicolon is optional); the low byte is kept.</summary>
    public static string HtmlEntityDecode(string s)
    {
        if (s.IndexOf('&') < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '&' || i + 1 >= s.Length) { sb.Append(c); continue; }
            int j = i + 1;
            if (s[j] == '#')
            {
                j++;
                bool hex = j < s.Length && (s[j] == 'x' || s[j] == 'X');
                if (hex) j++;
                int startDigits = j, value = 0;
                while (j < s.Length && (hex ? Hex(s[j]) >= 0 : s[j] >= '0' && s[j] <= '9'))
                {
                    value = hex ? value * 16 + Hex(s[j]) : value * 10 + (s[j] - '0');
                    if (value > 0x10FFFF) value = 0x10FFFF;
                    j++;
                }
                if (j == startDigits) { sb.Append(c); continue; }
                sb.Append((char)(value & 0xFF));
                if (j < s.Length && s[j] == ';') j++;
                i = j - 1;
                continue;
            }
            int k = j;
            while (k < s.Length && k - j < 8 && char.IsAsciiLetter(s[k])) k++;
            if (k > j && Entities.TryGetValue(s[j..k], out var ch))
            {
                sb.Append(ch);
                if (k < s.Length && s[k] == ';') k++;
                i = k - 1;
                continue;
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>JavaScript escapes: \xHH, \uHHHH (low byte, full-width ASCII mapped), \OOO octal, \n \t ... and \c → c.</summary>
    public static string JsDecode(string s)
    {
        if (s.IndexOf('\\') < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '\\' || i + 1 >= s.Length) { sb.Append(c); continue; }
            char n = s[i + 1];
            if ((n == 'u' || n == 'U') && i + 5 < s.Length && Hex(s[i + 2]) >= 0 && Hex(s[i + 3]) >= 0 && Hex(s[i + 4]) >= 0 && Hex(s[i + 5]) >= 0)
            {
                int code = (Hex(s[i + 2]) << 12) | (Hex(s[i + 3]) << 8) | (Hex(s[i + 4]) << 4) | Hex(s[i + 5]);
                int low = code & 0xFF;
                if (code >= 0xFF01 && code <= 0xFF5E) low = (code - 0xFEE0) & 0xFF;
                sb.Append((char)low);
                i += 5;
                continue;
            }
            if ((n == 'x' || n == 'X') && i + 3 < s.Length && Hex(s[i + 2]) >= 0 && Hex(s[i + 3]) >= 0)
            {
                sb.Append((char)((Hex(s[i + 2]) << 4) | Hex(s[i + 3])));
                i += 3;
                continue;
            }
            if (n >= '0' && n <= '7')
            {
                int j = i + 1, v = 0, count = 0;
                while (j < s.Length && count < 3 && s[j] >= '0' && s[j] <= '7') { v = v * 8 + (s[j] - '0'); j++; count++; }
                sb.Append((char)(v & 0xFF));
                i = j - 1;
                continue;
            }
            sb.Append(n switch { 'a' => '\a', 'b' => '\b', 'f' => '\f', 'n' => '\n', 'r' => '\r', 't' => '\t', 'v' => '\v', _ => n });
            i++;
        }
        return sb.ToString();
    }

    /// <summary>CSS escapes: \ then 1–6 hex digits (low byte; one following whitespace consumed), a backslash-newline removed, \c → c.</summary>
    public static string CssDecode(string s)
    {
        if (s.IndexOf('\\') < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '\\') { sb.Append(c); continue; }
            if (i + 1 >= s.Length) break;
            int j = i + 1, v = 0, count = 0;
            while (j < s.Length && count < 6 && Hex(s[j]) >= 0) { v = (v << 4) | Hex(s[j]); j++; count++; }
            if (count > 0)
            {
                int low = v & 0xFF;
                if (v >= 0xFF01 && v <= 0xFF5E) low = (v - 0xFEE0) & 0xFF;
                sb.Append((char)low);
                if (j < s.Length && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r' || s[j] == '\f')) j++;
                i = j - 1;
                continue;
            }
            if (s[j] == '\n') { i = j; continue; }
            sb.Append(s[j]);
            i = j;
        }
        return sb.ToString();
    }

    private static bool IsSpace(char c) => c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == (char)0xA0;

    public static string RemoveWhitespace(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var c in s) if (!IsSpace(c)) sb.Append(c);
        return sb.Length == s.Length ? s : sb.ToString();
    }

    public static string CompressWhitespace(string s)
    {
        // nothing to do (the common value): the value itself, so later steps and the cache see the same reference
        bool change = false;
        for (int i = 0; i < s.Length && !change; i++)
            change = IsSpace(s[i]) && (s[i] != ' ' || (i + 1 < s.Length && IsSpace(s[i + 1])));
        if (!change) return s;
        var sb = new StringBuilder(s.Length);
        bool space = false;
        foreach (var c in s)
        {
            if (IsSpace(c)) { if (!space) sb.Append(' '); space = true; }
            else { sb.Append(c); space = false; }
        }
        return sb.ToString();
    }

    /// <summary>C-style comments become one space (an unterminated one too); a lone "*/" is removed.</summary>
    public static string ReplaceComments(string s)
    {
        if (!s.Contains("/*", StringComparison.Ordinal) && !s.Contains("*/", StringComparison.Ordinal)) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '/' && i + 1 < s.Length && s[i + 1] == '*')
            {
                int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                sb.Append(' ');
                if (end < 0) return sb.ToString();
                i = end + 1;
                continue;
            }
            if (s[i] == '*' && i + 1 < s.Length && s[i + 1] == '/') { i++; continue; }
            sb.Append(s[i]);
        }
        return sb.ToString();
    }

    /// <summary>
    /// cmdLine: delete \ " ' ^; delete spaces before / and (; replace , ; and whitespace runs with one space;
    /// lower-case.
    /// </summary>
    public static string CmdLine(string s)
    {
        if (!CmdLineChanges(s)) return s;
        var sb = new StringBuilder(s.Length);
        bool space = false;
        foreach (var ch in s)
        {
            char c = ch;
            switch (c)
            {
                case '"': case '\'': case '\\': case '^':
                    break;
                case ' ': case ',': case ';': case '\t': case '\r': case '\n':
                    if (!space) { sb.Append(' '); space = true; }
                    break;
                case '/': case '(':
                    if (space && sb.Length > 0 && sb[^1] == ' ') sb.Length--;
                    space = false;
                    sb.Append(c);
                    break;
                default:
                    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
                    sb.Append(c);
                    space = false;
                    break;
            }
        }
        return sb.ToString();
    }

    /// <summary>Whether cmdLine would change the value: a deleted or replaced character, an upper-case letter, a space
    /// after a space, or a space before '/' or '('.</summary>
    private static bool CmdLineChanges(string s)
    {
        char prev = '\0';
        foreach (var c in s)
        {
            if (c is '"' or '\'' or '\\' or '^' or ',' or ';' or '\t' or '\r' or '\n' || (c >= 'A' && c <= 'Z')) return true;
            if (prev == ' ' && c is ' ' or '/' or '(') return true;
            prev = c;
        }
        return false;
    }

    /// <summary>Removes "./" segments and resolves "x/../", collapses repeated slashes (Win: backslashes become slashes first).</summary>
    public static string NormalizePath(string s, bool win)
    {
        if (win) s = s.Replace('\\', '/');
        if (s.Length == 0) return s;
        if (!s.Contains("//", StringComparison.Ordinal) && !s.Contains("/./", StringComparison.Ordinal) && !s.Contains("/../", StringComparison.Ordinal)
            && !s.StartsWith("./", StringComparison.Ordinal) && !s.StartsWith("../", StringComparison.Ordinal)
            && !s.EndsWith("/.", StringComparison.Ordinal) && !s.EndsWith("/..", StringComparison.Ordinal) && s is not ("." or ".."))
            return s; // already normal
        bool absolute = s[0] == '/';
        bool trailing = s.EndsWith('/') || s.EndsWith("/.") || s.EndsWith("/..") || s == "." || s == "..";
        var parts = s.Split('/');
        var stack = new List<string>();
        foreach (var p in parts)
        {
            if (p.Length == 0 || p == ".") continue;
            if (p == "..")
            {
                if (stack.Count > 0 && stack[^1] != "..") stack.RemoveAt(stack.Count - 1);
                else if (!absolute) stack.Add("..");
                continue;
            }
            stack.Add(p);
        }
        var result = (absolute ? "/" : "") + string.Join('/', stack);
        if (trailing && stack.Count > 0) result += "/";
        return result;
    }

    /// <summary>Multi-byte UTF-8 sequences become %uHHHH (as ModSecurity writes them); invalid bytes stay.</summary>
    public static string Utf8ToUnicode(string s)
    {
        int i = 0;
        while (i < s.Length && s[i] < 0x80) i++;
        if (i == s.Length) return s;
        var sb = new StringBuilder(s.Length + 16);
        sb.Append(s, 0, i);
        while (i < s.Length)
        {
            int c = s[i];
            int need = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xC0 && c < 0xE0 ? 1 : 0;
            if (need > 0 && Continuations(s, i + 1, need))
            {
                int code = c & (need == 1 ? 0x1F : need == 2 ? 0x0F : 0x07);
                for (int k = 1; k <= need; k++) code = (code << 6) | (s[i + k] & 0x3F);
                sb.Append("%u").Append((code & 0xFFFF).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
                i += need + 1;
                continue;
            }
            sb.Append((char)c);
            i++;
        }
        return sb.ToString();
    }

    private static bool Continuations(string s, int from, int count)
    {
        if (from + count > s.Length) return false;
        for (int k = 0; k < count; k++) if ((s[from + k] & 0xC0) != 0x80) return false;
        return true;
    }

    /// <summary>Decodes base64 up to the first character outside the alphabet (ModSecurity's forgiving decode).</summary>
    public static string Base64Decode(string s)
    {
        var bytes = new List<byte>(s.Length * 3 / 4);
        int acc = 0, bits = 0;
        foreach (var c in s)
        {
            int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : -1;
            if (v < 0) break;
            acc = (acc << 6) | v;
            bits += 6;
            if (bits >= 8) { bits -= 8; bytes.Add((byte)(acc >> bits)); acc &= (1 << bits) - 1; }
        }
        return Latin1(bytes.ToArray());
    }

    public static string HexEncode(string s)
    {
        var sb = new StringBuilder(s.Length * 2);
        foreach (var c in s) sb.Append(((int)c & 0xFF).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        return sb.ToString();
    }

    public static string HexDecode(string s)
    {
        var sb = new StringBuilder(s.Length / 2);
        for (int i = 0; i + 1 < s.Length; i += 2)
        {
            int h = Hex(s[i]), l = Hex(s[i + 1]);
            if (h < 0 || l < 0) break;
            sb.Append((char)((h << 4) | l));
        }
        return sb.ToString();
    }
}
