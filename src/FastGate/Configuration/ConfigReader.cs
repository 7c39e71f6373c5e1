using System.Globalization;
using System.Text.Json;

namespace FastGate.Configuration;

/// <summary>
/// Reads typed values out of a <see cref="JsonElement"/> tree and records every problem with its JSON path
/// instead of stopping at the first. Unknown properties are errors, with a did-you-mean suggestion.
/// </summary>
internal sealed class ConfigReader
{
    private readonly List<ConfigError> _errors;
    private readonly BindingTrace? _trace;

    public ConfigReader(List<ConfigError> errors, BindingTrace? trace = null)
    {
        _errors = errors;
        _trace = trace;
    }

    /// <summary>What a binding looked at (for the schema test): each object checked with its known names, each property read.</summary>
    internal sealed class BindingTrace
    {
        public List<(string Path, string[] Known)> Objects { get; } = [];
        public HashSet<(string Path, string Name)> Reads { get; } = [];
    }

    public void Error(string path, string message) => _errors.Add(new ConfigError(path, message));

    public static string Child(string path, string name) => path + "." + JsonName(name);

    /// <summary>
    /// A property's JSON name: binders name properties with <c>nameof</c> on their records (PathPrefix → pathPrefix);
    /// a name already in JSON form passes through.
    /// </summary>
    public static string JsonName(string name) =>
        name.Length > 0 && char.IsAsciiLetterUpper(name[0]) ? string.Concat(char.ToLowerInvariant(name[0]).ToString(), name.AsSpan(1)) : name;
    public static string Index(string path, int i) => path + "[" + i.ToString(CultureInfo.InvariantCulture) + "]";

    public bool IsObject(JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Object) return true;
        Error(path, $"expected an object, found {Describe(e)}");
        return false;
    }

    /// <summary>
    /// JSON property names from the records' C# names (give them with <c>nameof</c>): the first letter lower-cased,
    /// MaxBodyBytes → maxBodyBytes. Each binder keeps one such list per object, for <see cref="CheckUnknown"/> and for
    /// the test that holds config/fastgate.schema.json to the binders.
    /// </summary>
    public static string[] Names(params string[] properties)
    {
        var names = new string[properties.Length];
        for (int i = 0; i < properties.Length; i++) names[i] = JsonName(properties[i]);
        return names;
    }

    public void CheckUnknown(JsonElement obj, string path, params string[] known)
    {
        _trace?.Objects.Add((path, known));
        foreach (var p in obj.EnumerateObject())
        {
            if (Array.IndexOf(known, p.Name) >= 0) continue;
            var suggestion = Suggest(p.Name, known);
            Error(Child(path, p.Name), suggestion is null
                ? $"unknown property '{p.Name}' (known: {string.Join(", ", known)})"
                : $"unknown property '{p.Name}'; did you mean '{suggestion}'?");
        }
    }

    public bool TryGet(JsonElement obj, string path, string name, bool required, out JsonElement value)
    {
        name = JsonName(name);
        _trace?.Reads.Add((path, name));
        if (obj.TryGetProperty(name, out value) && value.ValueKind != JsonValueKind.Null) return true;
        if (required) Error(Child(path, name), "is required");
        return false;
    }

    public string? String(JsonElement obj, string path, string name, bool required = false)
    {
        name = JsonName(name);
        if (!TryGet(obj, path, name, required, out var v)) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        Error(Child(path, name), $"expected a string, found {Describe(v)}");
        return null;
    }

    public bool? Bool(JsonElement obj, string path, string name)
    {
        name = JsonName(name);
        if (!TryGet(obj, path, name, false, out var v)) return null;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        Error(Child(path, name), $"expected true or false, found {Describe(v)}");
        return null;
    }

    public long? Integer(JsonElement obj, string path, string name, long min, long max)
    {
        name = JsonName(name);
        if (!TryGet(obj, path, name, false, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long n))
        {
            Error(Child(path, name), $"expected an integer, found {Describe(v)}");
            return null;
        }
        if (n < min || n > max)
        {
            Error(Child(path, name), n <= 0 && min > 0
                ? $"must be greater than 0 (found {n})"
                : $"must be between {min} and {max} (found {n})");
            return null;
        }
        return n;
    }

    /// <summary>A finite number between <paramref name="min"/> and <paramref name="max"/> (inclusive).</summary>
    public double? Number(JsonElement obj, string path, string name, double min, double max)
    {
        name = JsonName(name);
        if (!TryGet(obj, path, name, false, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double x) || !double.IsFinite(x))
        {
            Error(Child(path, name), $"expected a number, found {Describe(v)}");
            return null;
        }
        if (x < min || x > max)
        {
            Error(Child(path, name), $"must be between {min} and {max} (found {x})");
            return null;
        }
        return x;
    }

    public TimeSpan? Duration(JsonElement obj, string path, string name)
    {
        name = JsonName(name);
        if (!TryGet(obj, path, name, false, out var v)) return null;
        if (v.ValueKind == JsonValueKind.String && TryParseDuration(v.GetString()!, out var d))
        {
            if (d > TimeSpan.Zero) return d;
            Error(Child(path, name), $"must be greater than 0 (found '{v.GetString()}')");
            return null;
        }
        Error(Child(path, name), $"expected a duration such as \"500ms\", \"10s\", \"5m\" or \"1h\", found {Describe(v)}");
        return null;
    }

    public List<string> Strings(JsonElement obj, string path, string name)
    {
        name = JsonName(name);
        var list = new List<string>();
        if (!TryGet(obj, path, name, false, out var v)) return list;
        if (v.ValueKind != JsonValueKind.Array)
        {
            Error(Child(path, name), $"expected an array of strings, found {Describe(v)}");
            return list;
        }
        int i = 0;
        foreach (var item in v.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.String) list.Add(item.GetString()!);
            else Error(Index(Child(path, name), i), $"expected a string, found {Describe(item)}");
            i++;
        }
        return list;
    }

    public List<T> Objects<T>(JsonElement obj, string path, string name, bool required, Func<JsonElement, string, T?> read) where T : class
    {
        name = JsonName(name);
        var list = new List<T>();
        if (!TryGet(obj, path, name, required, out var v)) return list;
        if (v.ValueKind != JsonValueKind.Array)
        {
            Error(Child(path, name), $"expected an array, found {Describe(v)}");
            return list;
        }
        int i = 0;
        foreach (var item in v.EnumerateArray())
        {
            var itemPath = Index(Child(path, name), i++);
            if (!IsObject(item, itemPath)) continue;
            var t = read(item, itemPath);
            if (t is not null) list.Add(t);
        }
        return list;
    }

    public static bool TryParseDuration(string s, out TimeSpan value)
    {
        value = default;
        s = s.Trim();
        (string unit, double factor) = s.EndsWith("ms", StringComparison.Ordinal) ? ("ms", 1.0)
            : s.EndsWith('s') ? ("s", 1000.0)
            : s.EndsWith('m') ? ("m", 60_000.0)
            : s.EndsWith('h') ? ("h", 3_600_000.0)
            : ("", 0);
        if (factor == 0) return false;
        if (!double.TryParse(s.AsSpan(0, s.Length - unit.Length), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double n))
            return false;
        value = TimeSpan.FromMilliseconds(n * factor);
        return true;
    }

    private static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{e.GetString()}\"",
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => $"{e.GetRawText()}",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    internal static string? Suggest(string name, string[] known)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var k in known)
        {
            int d = Distance(name.ToLowerInvariant(), k.ToLowerInvariant());
            if (d < bestDistance) { bestDistance = d; best = k; }
        }
        return bestDistance <= Math.Max(2, name.Length / 3) ? best : null;
    }

    private static int Distance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }
}
