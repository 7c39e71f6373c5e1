using System.Text;

namespace FastGate.Waf;

/// <summary>
/// PCRE (ModSecurity's regex engine, without UTF mode: bytes) to .NET: \d \w \s are ASCII classes as in PCRE
/// (.NET's are Unicode, and values here are bytes as Latin-1 chars, so é would be a word character), \x{HH} becomes
/// \xHH, possessive quantifiers become greedy ones (.NET has none; the match result differs only on patterns that
/// depend on not backtracking).
/// </summary>
public static class PcreRegex
{
    public static string Translate(string p)
    {
        var sb = new StringBuilder(p.Length + 16);
        bool inClass = false;
        int classStart = 0;
        for (int i = 0; i < p.Length; i++)
        {
            char c = p[i];
            if (c == '\\' && i + 1 < p.Length)
            {
                char n = p[i + 1];
                string? cls = n switch { 'd' => "0-9", 'w' => "a-zA-Z0-9_", 's' => "\\t\\n\\v\\f\\r ", _ => null };
                if (cls is not null) { sb.Append(inClass ? cls : "[" + cls + "]"); i++; continue; }
                string? neg = n switch { 'D' => "0-9", 'W' => "a-zA-Z0-9_", 'S' => "\\t\\n\\v\\f\\r ", _ => null };
                if (neg is not null && !inClass) { sb.Append("[^" + neg + "]"); i++; continue; }
                if (n == 'x' && i + 2 < p.Length && p[i + 2] == '{')
                {
                    int close = p.IndexOf('}', i + 3);
                    if (close > 0)
                    {
                        var hex = p[(i + 3)..close];
                        sb.Append(hex.Length <= 2 ? "\\x" + hex.PadLeft(2, '0') : "\\u" + hex.PadLeft(4, '0'));
                        i = close;
                        continue;
                    }
                }
                sb.Append(c).Append(n);
                i++;
                continue;
            }
            if (inClass)
            {
                if (c == '^' && sb.Length == classStart) { sb.Append(c); classStart++; continue; }
                if (c == ']' && sb.Length > classStart) inClass = false; // a ']' first in the class is a literal
                sb.Append(c);
                continue;
            }
            if (c == '[') { inClass = true; sb.Append(c); classStart = sb.Length; continue; }
            if (c == '+' && i > 0 && (p[i - 1] is '*' or '+' or '?' or '}') && !(i > 1 && p[i - 2] == '\\')) continue; // possessive
            sb.Append(c);
        }
        return sb.ToString();
    }
}
