using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Ai;

// routes[].ai.templates: prompt templates as APIs. A caller POSTs { "input": ... } to the template's path; the gateway
// fills the stored prompt and calls the template's model alias as a chat completion. The caller never sees the prompt.

public sealed record AiTemplateConfig
{
    /// <summary>The path after the route's stripPrefix that calls the template (POST), e.g. "/summarize".</summary>
    public string Path { get; init; } = "";
    /// <summary>The model alias called (one of the route's models).</summary>
    public string Model { get; init; } = "";
    /// <summary>The system message (optional), with {{variable}} placeholders.</summary>
    public string? System { get; init; }
    /// <summary>The user message, with {{variable}} placeholders; {{input}} is the input when it is a string.</summary>
    public string Prompt { get; init; } = "";
    /// <summary>Few-shot examples: user/assistant turns sent between the system message and the prompt, in order.</summary>
    public IReadOnlyList<AiTemplateExample> Examples { get; init; } = [];
    public long? MaxTokens { get; init; }
    public double? Temperature { get; init; }
}

/// <summary>One few-shot turn of a template: what a user said and what the assistant answered (placeholders allowed).</summary>
public sealed record AiTemplateExample
{
    public string User { get; init; } = "";
    public string Assistant { get; init; } = "";
}

/// <summary>A compiled template: its text cut into literal pieces and variable names, filled in one pass.</summary>
public sealed class AiTemplate
{
    private readonly Part[] _system, _prompt;
    private readonly (Part[] User, Part[] Assistant)[] _examples;
    private readonly HashSet<string> _variables;

    internal readonly record struct Part(string Text, bool IsVariable);

    private AiTemplate(AiTemplateConfig c, Part[] system, (Part[] User, Part[] Assistant)[] examples, Part[] prompt)
    {
        Path = c.Path;
        Model = c.Model;
        MaxTokens = c.MaxTokens;
        Temperature = c.Temperature;
        _system = system;
        _examples = examples;
        _prompt = prompt;
        _variables = system.Concat(examples.SelectMany(e => e.User.Concat(e.Assistant))).Concat(prompt)
            .Where(p => p.IsVariable).Select(p => p.Text).ToHashSet(StringComparer.Ordinal);
        Variables = _variables.Order(StringComparer.Ordinal).ToArray();
    }

    public string Path { get; }
    public string Model { get; }
    public long? MaxTokens { get; }
    public double? Temperature { get; }
    /// <summary>The variables the template uses, sorted.</summary>
    public string[] Variables { get; }

    public static AiTemplate Compile(AiTemplateConfig c) =>
        new(c, c.System is null ? [] : Parse(c.System, out _) ?? [],
            c.Examples.Select(e => (Parse(e.User, out _) ?? [], Parse(e.Assistant, out _) ?? [])).ToArray(),
            Parse(c.Prompt, out _) ?? []);

    /// <summary>Cuts a template text at its {{name}} placeholders; null and <paramref name="error"/> when one is malformed.</summary>
    internal static Part[]? Parse(string text, out string? error)
    {
        var parts = new List<Part>();
        error = null;
        int i = 0;
        while (i < text.Length)
        {
            int open = text.IndexOf("{{", i, StringComparison.Ordinal);
            if (open < 0)
            {
                parts.Add(new Part(text[i..], false));
                break;
            }
            if (open > i) parts.Add(new Part(text[i..open], false));
            int close = text.IndexOf("}}", open + 2, StringComparison.Ordinal);
            if (close < 0)
            {
                error = $"'{{{{' at character {open} is not closed by '}}}}'";
                return null;
            }
            var name = text[(open + 2)..close].Trim();
            if (!IsName(name))
            {
                error = $"'{{{{{text[(open + 2)..close]}}}}}' at character {open}: a variable name is a letter or '_' followed by letters, digits or '_'";
                return null;
            }
            parts.Add(new Part(name, true));
            i = close + 2;
        }
        return parts.ToArray();
    }

    private static bool IsName(string s)
    {
        if (s.Length == 0 || s.Length > 64 || !(char.IsAsciiLetter(s[0]) || s[0] == '_')) return false;
        foreach (char ch in s) if (!(char.IsAsciiLetterOrDigit(ch) || ch == '_')) return false;
        return true;
    }

    /// <summary>
    /// The chat completion request the caller's <c>{ "input": ..., "stream": bool }</c> makes, or null with the error
    /// and the JSON path of the caller's body it is about. Values are inserted as text (strings as they are, other
    /// values as JSON), in one pass: a value holding "{{x}}" is never expanded.
    /// </summary>
    public byte[]? Fill(ReadOnlySpan<byte> body, out string? error, out string? param)
    {
        error = null;
        param = null;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(body.ToArray());
        }
        catch (JsonException)
        {
            error = "the request body is not valid JSON";
            return null;
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                error = "the request body is a JSON object: { \"input\": ... }";
                return null;
            }
            bool stream = false;
            JsonElement input = default;
            bool hasInput = false;
            foreach (var p in root.EnumerateObject())
            {
                switch (p.Name)
                {
                    case "input": input = p.Value; hasInput = true; break;
                    case "stream":
                        if (p.Value.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) { error = "\"stream\" is true or false"; param = "stream"; return null; }
                        stream = p.Value.ValueKind == JsonValueKind.True;
                        break;
                    default: error = $"unknown property '{p.Name}' (send \"input\" and optionally \"stream\")"; param = p.Name; return null;
                }
            }
            if (!hasInput) { error = "\"input\" is required"; param = "input"; return null; }
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            if (input.ValueKind == JsonValueKind.String) values["input"] = input.GetString()!;
            else if (input.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in input.EnumerateObject())
                {
                    if (!_variables.Contains(p.Name)) { error = $"the template has no variable '{p.Name}'"; param = "input." + p.Name; return null; }
                    values[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
                }
            }
            else { error = "\"input\" is a string or an object of variables"; param = "input"; return null; }
            foreach (var v in Variables)
                if (!values.ContainsKey(v))
                {
                    error = input.ValueKind == JsonValueKind.String ? $"the template needs the variable '{v}': send \"input\" as an object" : $"the variable '{v}' is required";
                    param = "input." + v;
                    return null;
                }
            if (input.ValueKind == JsonValueKind.String && !_variables.Contains("input"))
            {
                error = "the template takes an object of variables: " + string.Join(", ", Variables);
                param = "input";
                return null;
            }
            var buffer = new ArrayBufferWriter<byte>(512);
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("model", Model);
                w.WriteStartArray("messages");
                if (_system.Length > 0) Message(w, "system", _system, values);
                foreach (var (user, assistant) in _examples)
                {
                    Message(w, "user", user, values);
                    Message(w, "assistant", assistant, values);
                }
                Message(w, "user", _prompt, values);
                w.WriteEndArray();
                if (MaxTokens is { } max) w.WriteNumber("max_tokens", max);
                if (Temperature is { } t) w.WriteNumber("temperature", t);
                if (stream) w.WriteBoolean("stream", true);
                w.WriteEndObject();
            }
            return buffer.WrittenSpan.ToArray();
        }
    }

    private static void Message(Utf8JsonWriter w, string role, Part[] parts, Dictionary<string, string> values)
    {
        var sb = new StringBuilder();
        foreach (var p in parts) sb.Append(p.IsVariable ? values[p.Text] : p.Text);
        w.WriteStartObject();
        w.WriteString("role", role);
        w.WriteString("content", sb.ToString());
        w.WriteEndObject();
    }
}

internal static class AiTemplateConfigBinder
{
    internal static readonly string[] Properties = ConfigReader.Names(nameof(AiTemplateConfig.Path), nameof(AiTemplateConfig.Model),
        nameof(AiTemplateConfig.System), nameof(AiTemplateConfig.Prompt), nameof(AiTemplateConfig.Examples), nameof(AiTemplateConfig.MaxTokens),
        nameof(AiTemplateConfig.Temperature));
    private static readonly string[] ExampleProperties = ConfigReader.Names(nameof(AiTemplateExample.User), nameof(AiTemplateExample.Assistant));

    public static AiTemplateConfig Bind(JsonElement x, string xp, ConfigReader r)
    {
        r.CheckUnknown(x, xp, Properties);
        return new AiTemplateConfig
        {
            Path = r.String(x, xp, nameof(AiTemplateConfig.Path), required: true) ?? "",
            Model = r.String(x, xp, nameof(AiTemplateConfig.Model), required: true) ?? "",
            System = r.String(x, xp, nameof(AiTemplateConfig.System)),
            Prompt = r.String(x, xp, nameof(AiTemplateConfig.Prompt), required: true) ?? "",
            Examples = r.Objects(x, xp, nameof(AiTemplateConfig.Examples), false, (e, ep) =>
            {
                r.CheckUnknown(e, ep, ExampleProperties);
                return new AiTemplateExample
                {
                    User = r.String(e, ep, nameof(AiTemplateExample.User), required: true) ?? "",
                    Assistant = r.String(e, ep, nameof(AiTemplateExample.Assistant), required: true) ?? "",
                };
            }),
            MaxTokens = r.Integer(x, xp, nameof(AiTemplateConfig.MaxTokens), 1, 10_000_000),
            Temperature = r.Number(x, xp, nameof(AiTemplateConfig.Temperature), 0, 2),
        };
    }

    public static void Validate(IReadOnlyList<AiTemplateConfig> templates, string p, HashSet<string> models, List<ConfigError> errors)
    {
        var paths = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < templates.Count; i++)
        {
            var t = templates[i];
            string tp = ConfigReader.Index(p + ".templates", i);
            if (t.Path.Length > 0)
            {
                if (!t.Path.StartsWith('/') || t.Path.Contains('?') || t.Path.Contains('#'))
                    errors.Add(new ConfigError(tp + ".path", $"'{t.Path}' is not a path: it starts with '/' and has no query"));
                else if (!paths.Add(t.Path)) errors.Add(new ConfigError(tp + ".path", $"duplicate template path '{t.Path}'"));
            }
            if (t.Model.Length > 0 && !models.Contains(t.Model)) errors.Add(new ConfigError(tp + ".model", $"unknown model '{t.Model}'"));
            if (t.System is { } system && AiTemplate.Parse(system, out var se) is null) errors.Add(new ConfigError(tp + ".system", se!));
            if (t.Prompt.Length > 0 && AiTemplate.Parse(t.Prompt, out var pe) is null) errors.Add(new ConfigError(tp + ".prompt", pe!));
            for (int k = 0; k < t.Examples.Count; k++)
            {
                string ep = ConfigReader.Index(tp + ".examples", k);
                if (AiTemplate.Parse(t.Examples[k].User, out var ue) is null) errors.Add(new ConfigError(ep + ".user", ue!));
                if (AiTemplate.Parse(t.Examples[k].Assistant, out var ae) is null) errors.Add(new ConfigError(ep + ".assistant", ae!));
            }
        }
    }
}
