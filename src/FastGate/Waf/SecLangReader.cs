using System.Text;

namespace FastGate.Waf;

/// <summary>One SecLang directive as written: its name, its arguments (quotes removed) and where it starts.</summary>
public sealed record SecDirective(string Name, IReadOnlyList<string> Args, string File, int Line)
{
    public string Where => $"{File}:{Line}";
}

/// <summary>A problem in a rule file, located by file:line.</summary>
public sealed record WafLoadIssue(string File, int Line, string Message)
{
    public override string ToString() => $"{File}:{Line}: {Message}";
}

/// <summary>
/// Reads SecLang text into directives: one per logical line (a trailing backslash continues it), comments (#) and
/// blank lines skipped, arguments split on whitespace outside double quotes (a backslash escapes the next
/// character inside quotes; the escape is kept except before a quote, as ModSecurity does). Include and
/// IncludeOptional are followed here (globs in the last path segment), relative to the including file's folder.
/// </summary>
public static class SecLangReader
{
    public static List<SecDirective> ReadFile(string path, List<WafLoadIssue> errors, int depth = 0)
    {
        var list = new List<SecDirective>();
        Read(Path.GetFullPath(path), list, errors, depth);
        return list;
    }

    public static List<SecDirective> ReadText(string text, string file, List<WafLoadIssue> errors)
    {
        var list = new List<SecDirective>();
        Parse(text, file, list, errors, 0);
        return list;
    }

    private static void Read(string path, List<SecDirective> list, List<WafLoadIssue> errors, int depth)
    {
        string text;
        try { text = File.ReadAllText(path, Encoding.Latin1); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            errors.Add(new WafLoadIssue(path, 0, $"cannot read: {e.Message}"));
            return;
        }
        Parse(text, path, list, errors, depth);
    }

    private static void Parse(string text, string file, List<SecDirective> list, List<WafLoadIssue> errors, int depth)
    {
        var lines = text.Split('\n');
        var logical = new StringBuilder();
        int start = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (logical.Length == 0)
            {
                var t = line.TrimStart();
                if (t.Length == 0 || t[0] == '#') continue;
                start = i + 1;
            }
            if (line.EndsWith('\\'))
            {
                logical.Append(line, 0, line.Length - 1);
                if (i + 1 < lines.Length) continue;
            }
            else logical.Append(line);
            var directive = Split(logical.ToString(), file, start, errors);
            logical.Clear();
            if (directive is null) continue;
            if (directive.Name.Equals("Include", StringComparison.OrdinalIgnoreCase)
                || directive.Name.Equals("IncludeOptional", StringComparison.OrdinalIgnoreCase))
            {
                Include(directive, list, errors, depth);
                continue;
            }
            list.Add(directive);
        }
    }

    private static void Include(SecDirective d, List<SecDirective> list, List<WafLoadIssue> errors, int depth)
    {
        bool optional = d.Name.Equals("IncludeOptional", StringComparison.OrdinalIgnoreCase);
        if (d.Args.Count != 1) { errors.Add(new WafLoadIssue(d.File, d.Line, $"{d.Name} takes one path")); return; }
        if (depth > 16) { errors.Add(new WafLoadIssue(d.File, d.Line, "includes nested too deeply")); return; }
        var target = d.Args[0];
        if (!Path.IsPathRooted(target)) target = Path.Combine(Path.GetDirectoryName(d.File) ?? ".", target);
        var dir = Path.GetDirectoryName(target) ?? ".";
        var pattern = Path.GetFileName(target);
        string[] files;
        if (pattern.Contains('*') || pattern.Contains('?'))
            files = Directory.Exists(dir) ? Directory.GetFiles(dir, pattern) : [];
        else files = File.Exists(target) ? [target] : [];
        Array.Sort(files, StringComparer.Ordinal);
        if (files.Length == 0 && !optional) { errors.Add(new WafLoadIssue(d.File, d.Line, $"Include: no file matches {target}")); return; }
        foreach (var f in files) Read(f, list, errors, depth + 1);
    }

    private static SecDirective? Split(string s, string file, int line, List<WafLoadIssue> errors)
    {
        var args = new List<string>();
        int i = 0;
        var sb = new StringBuilder();
        while (true)
        {
            while (i < s.Length && (s[i] == ' ' || s[i] == '\t')) i++;
            if (i >= s.Length) break;
            sb.Clear();
            if (s[i] == '"')
            {
                i++;
                bool closed = false;
                while (i < s.Length)
                {
                    char c = s[i];
                    if (c == '\\' && i + 1 < s.Length)
                    {
                        if (s[i + 1] == '"') sb.Append('"');
                        else { sb.Append('\\').Append(s[i + 1]); }
                        i += 2;
                        continue;
                    }
                    if (c == '"') { closed = true; i++; break; }
                    sb.Append(c);
                    i++;
                }
                if (!closed) { errors.Add(new WafLoadIssue(file, line, "unterminated quoted argument")); return null; }
            }
            else
            {
                while (i < s.Length && s[i] != ' ' && s[i] != '\t') sb.Append(s[i++]);
            }
            args.Add(sb.ToString());
        }
        if (args.Count == 0) return null;
        return new SecDirective(args[0], args.GetRange(1, args.Count - 1), file, line);
    }
}
