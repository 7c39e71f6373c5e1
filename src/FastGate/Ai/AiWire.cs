using System.Buffers;
using System.Text;
using System.Text.Json;

namespace FastGate.Ai;

/// <summary>
/// Request translation: an OpenAI chat/embeddings request (parsed) written in each provider family's wire format.
/// Text of messages passes through <see cref="Filter"/> (the prompt guard's masking) on the way.
/// </summary>
internal static class AiRequestWriter
{
    public delegate string Filter(string text);

    private static readonly JsonWriterOptions s_options = new() { Indented = false, SkipValidation = false };

    public static byte[] Chat(ProviderFamily family, JsonElement root, string model, bool stream, Filter filter)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer, s_options))
        {
            switch (family)
            {
                case ProviderFamily.Anthropic: Anthropic(w, root, model, stream, filter); break;
                case ProviderFamily.Gemini: Gemini(w, root, filter); break;
                default: OpenAi(w, root, model, stream, filter); break;
            }
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>OpenAI-compatible providers: the request as sent, "model" replaced, text filtered, usage asked for on streams.</summary>
    private static void OpenAi(Utf8JsonWriter w, JsonElement root, string model, bool stream, Filter filter)
    {
        w.WriteStartObject();
        foreach (var p in root.EnumerateObject())
        {
            if (p.NameEquals("model")) continue;
            if (p.NameEquals("stream_options") && stream) continue;
            if (p.NameEquals("messages") && p.Value.ValueKind == JsonValueKind.Array)
            {
                w.WritePropertyName("messages");
                w.WriteStartArray();
                foreach (var m in p.Value.EnumerateArray()) CopyFiltered(w, m, filter, inContent: false);
                w.WriteEndArray();
                continue;
            }
            p.WriteTo(w);
        }
        w.WriteString("model", model);
        if (stream)
        {
            w.WriteStartObject("stream_options");
            w.WriteBoolean("include_usage", true);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    /// <summary>Copies a JSON value, filtering strings under "content" and "text".</summary>
    private static void CopyFiltered(Utf8JsonWriter w, JsonElement e, Filter filter, bool inContent)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                w.WriteStartObject();
                foreach (var p in e.EnumerateObject())
                {
                    w.WritePropertyName(p.Name);
                    CopyFiltered(w, p.Value, filter, p.NameEquals("content") || p.NameEquals("text") || (inContent && e.ValueKind == JsonValueKind.Array));
                }
                w.WriteEndObject();
                break;
            case JsonValueKind.Array:
                w.WriteStartArray();
                foreach (var x in e.EnumerateArray()) CopyFiltered(w, x, filter, false);
                w.WriteEndArray();
                break;
            case JsonValueKind.String when inContent:
                w.WriteStringValue(filter(e.GetString()!));
                break;
            default:
                e.WriteTo(w);
                break;
        }
    }

    /// <summary>The text of a message's content (string, or the text parts of an array).</summary>
    public static string Text(JsonElement content)
    {
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) return "";
        var sb = new StringBuilder();
        foreach (var part in content.EnumerateArray())
            if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
            {
                if (sb.Length > 0) sb.Append('\n');
                sb.Append(t.GetString());
            }
        return sb.ToString();
    }

    private static string Role(JsonElement m) => m.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "";

    private static bool TryNumber(JsonElement root, string name, out JsonElement value) =>
        root.TryGetProperty(name, out value) && value.ValueKind == JsonValueKind.Number;

    /// <summary>"data:image/png;base64,AAAA" → (image/png, AAAA).</summary>
    private static bool TryDataUrl(string url, out string mediaType, out string data)
    {
        mediaType = data = "";
        if (!url.StartsWith("data:", StringComparison.Ordinal)) return false;
        int semi = url.IndexOf(";base64,", StringComparison.Ordinal);
        if (semi < 0) return false;
        mediaType = url[5..semi];
        data = url[(semi + 8)..];
        return true;
    }

    private static void WriteStops(Utf8JsonWriter w, JsonElement root, string name)
    {
        if (!root.TryGetProperty("stop", out var stop)) return;
        if (stop.ValueKind == JsonValueKind.String)
        {
            w.WriteStartArray(name);
            w.WriteStringValue(stop.GetString());
            w.WriteEndArray();
        }
        else if (stop.ValueKind == JsonValueKind.Array)
        {
            w.WritePropertyName(name);
            stop.WriteTo(w);
        }
    }

    // ---- Anthropic Messages ----

    private static void Anthropic(Utf8JsonWriter w, JsonElement root, string model, bool stream, Filter filter)
    {
        w.WriteStartObject();
        w.WriteString("model", model);
        long maxTokens = 4096;
        if (TryNumber(root, "max_completion_tokens", out var mt) || TryNumber(root, "max_tokens", out mt)) maxTokens = mt.GetInt64();
        w.WriteNumber("max_tokens", maxTokens);
        var system = new StringBuilder();
        var messages = root.TryGetProperty("messages", out var ms) && ms.ValueKind == JsonValueKind.Array ? ms : default;
        if (messages.ValueKind == JsonValueKind.Array)
            foreach (var m in messages.EnumerateArray())
                if (Role(m) is "system" or "developer" && m.TryGetProperty("content", out var c))
                {
                    if (system.Length > 0) system.Append("\n\n");
                    system.Append(filter(Text(c)));
                }
        if (system.Length > 0) w.WriteString("system", system.ToString());
        w.WriteStartArray("messages");
        bool openToolResults = false;
        if (messages.ValueKind == JsonValueKind.Array)
            foreach (var m in messages.EnumerateArray())
            {
                var role = Role(m);
                if (role is "system" or "developer") continue;
                if (role == "tool")
                {
                    if (!openToolResults)
                    {
                        w.WriteStartObject();
                        w.WriteString("role", "user");
                        w.WriteStartArray("content");
                        openToolResults = true;
                    }
                    w.WriteStartObject();
                    w.WriteString("type", "tool_result");
                    w.WriteString("tool_use_id", m.TryGetProperty("tool_call_id", out var id) ? id.GetString() : "");
                    w.WriteString("content", filter(m.TryGetProperty("content", out var tc) ? Text(tc) : ""));
                    w.WriteEndObject();
                    continue;
                }
                if (openToolResults)
                {
                    w.WriteEndArray();
                    w.WriteEndObject();
                    openToolResults = false;
                }
                w.WriteStartObject();
                w.WriteString("role", role == "assistant" ? "assistant" : "user");
                w.WriteStartArray("content");
                if (m.TryGetProperty("content", out var content))
                {
                    if (content.ValueKind == JsonValueKind.String)
                    {
                        var text = content.GetString()!;
                        if (text.Length > 0) AnthropicText(w, filter(text));
                    }
                    else if (content.ValueKind == JsonValueKind.Array)
                        foreach (var part in content.EnumerateArray()) AnthropicPart(w, part, filter);
                }
                if (m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
                    foreach (var call in calls.EnumerateArray())
                    {
                        var fn = call.GetProperty("function");
                        w.WriteStartObject();
                        w.WriteString("type", "tool_use");
                        w.WriteString("id", call.TryGetProperty("id", out var cid) ? cid.GetString() : "");
                        w.WriteString("name", fn.GetProperty("name").GetString());
                        w.WritePropertyName("input");
                        WriteArguments(w, fn);
                        w.WriteEndObject();
                    }
                w.WriteEndArray();
                w.WriteEndObject();
            }
        if (openToolResults)
        {
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (TryNumber(root, "temperature", out var temp)) w.WriteNumber("temperature", temp.GetDouble());
        if (TryNumber(root, "top_p", out var topP)) w.WriteNumber("top_p", topP.GetDouble());
        WriteStops(w, root, "stop_sequences");
        if (stream) w.WriteBoolean("stream", true);
        if (root.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array)
        {
            w.WriteStartArray("tools");
            foreach (var t in tools.EnumerateArray())
            {
                if (!t.TryGetProperty("function", out var fn)) continue;
                w.WriteStartObject();
                w.WriteString("name", fn.GetProperty("name").GetString());
                if (fn.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String) w.WriteString("description", d.GetString());
                w.WritePropertyName("input_schema");
                if (fn.TryGetProperty("parameters", out var ps) && ps.ValueKind == JsonValueKind.Object) ps.WriteTo(w);
                else { w.WriteStartObject(); w.WriteString("type", "object"); w.WriteEndObject(); }
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        if (root.TryGetProperty("tool_choice", out var choice))
        {
            w.WriteStartObject("tool_choice");
            if (choice.ValueKind == JsonValueKind.String)
                w.WriteString("type", choice.GetString() switch { "required" => "any", "none" => "none", _ => "auto" });
            else if (choice.ValueKind == JsonValueKind.Object && choice.TryGetProperty("function", out var cf))
            {
                w.WriteString("type", "tool");
                w.WriteString("name", cf.GetProperty("name").GetString());
            }
            else w.WriteString("type", "auto");
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    private static void AnthropicText(Utf8JsonWriter w, string text)
    {
        w.WriteStartObject();
        w.WriteString("type", "text");
        w.WriteString("text", text);
        w.WriteEndObject();
    }

    private static void AnthropicPart(Utf8JsonWriter w, JsonElement part, Filter filter)
    {
        var type = part.TryGetProperty("type", out var t) ? t.GetString() : "text";
        if (type == "text")
        {
            AnthropicText(w, filter(part.GetProperty("text").GetString() ?? ""));
            return;
        }
        if (type != "image_url") throw new AiRequestException($"content part type '{type}' is not supported by this provider");
        var url = part.GetProperty("image_url").GetProperty("url").GetString() ?? "";
        w.WriteStartObject();
        w.WriteString("type", "image");
        w.WriteStartObject("source");
        if (TryDataUrl(url, out var media, out var data))
        {
            w.WriteString("type", "base64");
            w.WriteString("media_type", media);
            w.WriteString("data", data);
        }
        else
        {
            w.WriteString("type", "url");
            w.WriteString("url", url);
        }
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>A tool call's "arguments" (a JSON text) as a JSON object value.</summary>
    private static void WriteArguments(Utf8JsonWriter w, JsonElement fn)
    {
        var args = fn.TryGetProperty("arguments", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString()! : "{}";
        try
        {
            using var doc = JsonDocument.Parse(args.Length == 0 ? "{}" : args);
            doc.RootElement.WriteTo(w);
        }
        catch (JsonException)
        {
            throw new AiRequestException("a tool call's arguments are not valid JSON");
        }
    }

    // ---- Google Gemini generateContent ----

    private static void Gemini(Utf8JsonWriter w, JsonElement root, Filter filter)
    {
        w.WriteStartObject();
        var messages = root.TryGetProperty("messages", out var ms) && ms.ValueKind == JsonValueKind.Array ? ms : default;
        var system = new StringBuilder();
        var toolNames = new Dictionary<string, string>(StringComparer.Ordinal);
        if (messages.ValueKind == JsonValueKind.Array)
            foreach (var m in messages.EnumerateArray())
            {
                if (Role(m) is "system" or "developer" && m.TryGetProperty("content", out var c))
                {
                    if (system.Length > 0) system.Append("\n\n");
                    system.Append(filter(Text(c)));
                }
                if (m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
                    foreach (var call in calls.EnumerateArray())
                        if (call.TryGetProperty("id", out var id)) toolNames[id.GetString() ?? ""] = call.GetProperty("function").GetProperty("name").GetString() ?? "";
            }
        if (system.Length > 0)
        {
            w.WriteStartObject("systemInstruction");
            w.WriteStartArray("parts");
            w.WriteStartObject();
            w.WriteString("text", system.ToString());
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteStartArray("contents");
        bool openTool = false;
        if (messages.ValueKind == JsonValueKind.Array)
            foreach (var m in messages.EnumerateArray())
            {
                var role = Role(m);
                if (role is "system" or "developer") continue;
                if (role == "tool")
                {
                    if (!openTool)
                    {
                        w.WriteStartObject();
                        w.WriteString("role", "user");
                        w.WriteStartArray("parts");
                        openTool = true;
                    }
                    var id = m.TryGetProperty("tool_call_id", out var tid) ? tid.GetString() ?? "" : "";
                    w.WriteStartObject();
                    w.WriteStartObject("functionResponse");
                    w.WriteString("name", toolNames.TryGetValue(id, out var name) ? name : id);
                    w.WriteStartObject("response");
                    w.WriteString("content", filter(m.TryGetProperty("content", out var tc) ? Text(tc) : ""));
                    w.WriteEndObject();
                    w.WriteEndObject();
                    w.WriteEndObject();
                    continue;
                }
                if (openTool)
                {
                    w.WriteEndArray();
                    w.WriteEndObject();
                    openTool = false;
                }
                w.WriteStartObject();
                w.WriteString("role", role == "assistant" ? "model" : "user");
                w.WriteStartArray("parts");
                if (m.TryGetProperty("content", out var content))
                {
                    if (content.ValueKind == JsonValueKind.String)
                    {
                        if (content.GetString()!.Length > 0) { w.WriteStartObject(); w.WriteString("text", filter(content.GetString()!)); w.WriteEndObject(); }
                    }
                    else if (content.ValueKind == JsonValueKind.Array)
                        foreach (var part in content.EnumerateArray()) GeminiPart(w, part, filter);
                }
                if (m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
                    foreach (var call in calls.EnumerateArray())
                    {
                        var fn = call.GetProperty("function");
                        w.WriteStartObject();
                        w.WriteStartObject("functionCall");
                        w.WriteString("name", fn.GetProperty("name").GetString());
                        w.WritePropertyName("args");
                        WriteArguments(w, fn);
                        w.WriteEndObject();
                        w.WriteEndObject();
                    }
                w.WriteEndArray();
                w.WriteEndObject();
            }
        if (openTool)
        {
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartObject("generationConfig");
        if (TryNumber(root, "temperature", out var temp)) w.WriteNumber("temperature", temp.GetDouble());
        if (TryNumber(root, "top_p", out var topP)) w.WriteNumber("topP", topP.GetDouble());
        if (TryNumber(root, "max_completion_tokens", out var mt) || TryNumber(root, "max_tokens", out mt)) w.WriteNumber("maxOutputTokens", mt.GetInt64());
        WriteStops(w, root, "stopSequences");
        w.WriteEndObject();
        if (root.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array)
        {
            w.WriteStartArray("tools");
            w.WriteStartObject();
            w.WriteStartArray("functionDeclarations");
            foreach (var t in tools.EnumerateArray())
            {
                if (!t.TryGetProperty("function", out var fn)) continue;
                w.WriteStartObject();
                w.WriteString("name", fn.GetProperty("name").GetString());
                if (fn.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String) w.WriteString("description", d.GetString());
                if (fn.TryGetProperty("parameters", out var ps) && ps.ValueKind == JsonValueKind.Object)
                {
                    w.WritePropertyName("parameters");
                    CopySchema(w, ps);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndArray();
        }
        if (root.TryGetProperty("tool_choice", out var choice))
        {
            w.WriteStartObject("toolConfig");
            w.WriteStartObject("functionCallingConfig");
            if (choice.ValueKind == JsonValueKind.Object && choice.TryGetProperty("function", out var cf))
            {
                w.WriteString("mode", "ANY");
                w.WriteStartArray("allowedFunctionNames");
                w.WriteStringValue(cf.GetProperty("name").GetString());
                w.WriteEndArray();
            }
            else w.WriteString("mode", choice.GetString() switch { "required" => "ANY", "none" => "NONE", _ => "AUTO" });
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    /// <summary>A JSON schema without the keywords Gemini's OpenAPI subset refuses ($schema, additionalProperties).</summary>
    private static void CopySchema(Utf8JsonWriter w, JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            w.WriteStartObject();
            foreach (var p in e.EnumerateObject())
            {
                if (p.NameEquals("$schema") || p.NameEquals("additionalProperties")) continue;
                w.WritePropertyName(p.Name);
                CopySchema(w, p.Value);
            }
            w.WriteEndObject();
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            w.WriteStartArray();
            foreach (var x in e.EnumerateArray()) CopySchema(w, x);
            w.WriteEndArray();
        }
        else e.WriteTo(w);
    }

    private static void GeminiPart(Utf8JsonWriter w, JsonElement part, Filter filter)
    {
        var type = part.TryGetProperty("type", out var t) ? t.GetString() : "text";
        if (type == "text")
        {
            w.WriteStartObject();
            w.WriteString("text", filter(part.GetProperty("text").GetString() ?? ""));
            w.WriteEndObject();
            return;
        }
        var url = type == "image_url" ? part.GetProperty("image_url").GetProperty("url").GetString() ?? "" : "";
        if (!TryDataUrl(url, out var media, out var data))
            throw new AiRequestException("this provider takes images as data: URLs only (base64)");
        w.WriteStartObject();
        w.WriteStartObject("inlineData");
        w.WriteString("mimeType", media);
        w.WriteString("data", data);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    // ---- embeddings ----

    public static byte[] Embeddings(ProviderFamily family, JsonElement root, string model, Filter filter)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer, s_options))
        {
            var input = root.TryGetProperty("input", out var i) ? i : default;
            var texts = new List<string>();
            if (input.ValueKind == JsonValueKind.String) texts.Add(input.GetString()!);
            else if (input.ValueKind == JsonValueKind.Array)
                foreach (var x in input.EnumerateArray())
                {
                    if (x.ValueKind != JsonValueKind.String) throw new AiRequestException("input must be a string or an array of strings");
                    texts.Add(x.GetString()!);
                }
            else throw new AiRequestException("input is required");
            if (family == ProviderFamily.Gemini)
            {
                w.WriteStartObject();
                w.WriteStartArray("requests");
                foreach (var text in texts)
                {
                    w.WriteStartObject();
                    w.WriteString("model", "models/" + model);
                    w.WriteStartObject("content");
                    w.WriteStartArray("parts");
                    w.WriteStartObject();
                    w.WriteString("text", filter(text));
                    w.WriteEndObject();
                    w.WriteEndArray();
                    w.WriteEndObject();
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            else
            {
                w.WriteStartObject();
                foreach (var p in root.EnumerateObject())
                    if (!p.NameEquals("model") && !p.NameEquals("input")) p.WriteTo(w);
                w.WriteString("model", model);
                w.WriteStartArray("input");
                foreach (var text in texts) w.WriteStringValue(filter(text));
                w.WriteEndArray();
                w.WriteEndObject();
            }
        }
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>A request the gateway cannot translate: 400 with an OpenAI-style error body.</summary>
internal sealed class AiRequestException(string message) : Exception(message);
