using System.Buffers;
using System.Text;
using System.Text.Json;

namespace FastGate.Ai;

/// <summary>Usage a provider reported for one call.</summary>
internal struct AiUsage
{
    public long Prompt;
    public long Completion;
    public void Read(JsonElement usage)
    {
        long Get(string name) => usage.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
        Prompt = Math.Max(Prompt, Get("prompt_tokens") + Get("input_tokens") + Get("promptTokenCount"));
        Completion = Math.Max(Completion, Get("completion_tokens") + Get("output_tokens") + Get("candidatesTokenCount"));
    }
}

/// <summary>Provider responses (whole bodies) written as OpenAI ones; provider errors as OpenAI error bodies.</summary>
internal static class AiResponseWriter
{
    public static string FinishReason(string? reason) => reason switch
    {
        "end_turn" or "stop_sequence" or "STOP" or "stop" or "pause_turn" => "stop",
        "max_tokens" or "MAX_TOKENS" or "length" => "length",
        "tool_use" or "tool_calls" => "tool_calls",
        "SAFETY" or "RECITATION" or "BLOCKLIST" or "PROHIBITED_CONTENT" or "SPII" or "refusal" or "content_filter" => "content_filter",
        null => "stop",
        _ => "stop",
    };

    public static byte[] Chat(ProviderFamily family, JsonElement root, string model, string id, long created, Func<string, string> mask, ref AiUsage usage)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using var w = new Utf8JsonWriter(buffer);
        string text = "";
        var calls = new List<(string Id, string Name, string Args)>();
        string? finish = null;
        if (family == ProviderFamily.Anthropic)
        {
            if (root.TryGetProperty("id", out var pid) && pid.ValueKind == JsonValueKind.String) id = pid.GetString()!;
            var sb = new StringBuilder();
            if (root.TryGetProperty("content", out var blocks) && blocks.ValueKind == JsonValueKind.Array)
                foreach (var b in blocks.EnumerateArray())
                {
                    var type = b.GetProperty("type").GetString();
                    if (type == "text") sb.Append(b.GetProperty("text").GetString());
                    else if (type == "tool_use") calls.Add((b.GetProperty("id").GetString()!, b.GetProperty("name").GetString()!, b.GetProperty("input").GetRawText()));
                }
            text = sb.ToString();
            finish = root.TryGetProperty("stop_reason", out var sr) && sr.ValueKind == JsonValueKind.String ? sr.GetString() : null;
            if (root.TryGetProperty("usage", out var u)) usage.Read(u);
        }
        else
        {
            var sb = new StringBuilder();
            if (root.TryGetProperty("candidates", out var cands) && cands.ValueKind == JsonValueKind.Array && cands.GetArrayLength() > 0)
            {
                var cand = cands[0];
                if (cand.TryGetProperty("content", out var content) && content.TryGetProperty("parts", out var parts))
                    foreach (var part in parts.EnumerateArray())
                    {
                        if (part.TryGetProperty("text", out var t)) sb.Append(t.GetString());
                        else if (part.TryGetProperty("functionCall", out var fc))
                            calls.Add(("call_" + calls.Count, fc.GetProperty("name").GetString()!, fc.TryGetProperty("args", out var a) ? a.GetRawText() : "{}"));
                    }
                finish = cand.TryGetProperty("finishReason", out var fr) ? fr.GetString() : null;
            }
            text = sb.ToString();
            if (root.TryGetProperty("usageMetadata", out var u)) usage.Read(u);
        }
        var reason = calls.Count > 0 && family == ProviderFamily.Gemini ? "tool_calls" : FinishReason(finish);
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteString("object", "chat.completion");
        w.WriteNumber("created", created);
        w.WriteString("model", model);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("message");
        w.WriteString("role", "assistant");
        if (text.Length == 0 && calls.Count > 0) w.WriteNull("content");
        else w.WriteString("content", mask(text));
        if (calls.Count > 0)
        {
            w.WriteStartArray("tool_calls");
            foreach (var c in calls) WriteToolCall(w, -1, c.Id, c.Name, c.Args);
            w.WriteEndArray();
        }
        w.WriteEndObject();
        w.WriteString("finish_reason", reason);
        w.WriteEndObject();
        w.WriteEndArray();
        WriteUsage(w, usage);
        w.WriteEndObject();
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    public static void WriteToolCall(Utf8JsonWriter w, int index, string? id, string? name, string args)
    {
        w.WriteStartObject();
        if (index >= 0) w.WriteNumber("index", index);
        if (id is not null)
        {
            w.WriteString("id", id);
            w.WriteString("type", "function");
        }
        w.WriteStartObject("function");
        if (name is not null) w.WriteString("name", name);
        w.WriteString("arguments", args);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    public static void WriteUsage(Utf8JsonWriter w, AiUsage usage)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", usage.Prompt);
        w.WriteNumber("completion_tokens", usage.Completion);
        w.WriteNumber("total_tokens", usage.Prompt + usage.Completion);
        w.WriteEndObject();
    }

    /// <summary>Gemini batchEmbedContents → OpenAI embeddings list.</summary>
    public static byte[] Embeddings(JsonElement root, string model)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using var w = new Utf8JsonWriter(buffer);
        w.WriteStartObject();
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        int i = 0;
        if (root.TryGetProperty("embeddings", out var list))
            foreach (var e in list.EnumerateArray())
            {
                w.WriteStartObject();
                w.WriteString("object", "embedding");
                w.WriteNumber("index", i++);
                w.WritePropertyName("embedding");
                e.GetProperty("values").WriteTo(w);
                w.WriteEndObject();
            }
        w.WriteEndArray();
        w.WriteString("model", model);
        WriteUsage(w, default);
        w.WriteEndObject();
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>An OpenAI-compatible body copied with its message text masked.</summary>
    public static byte[] MaskCopy(JsonElement root, Func<string, string> mask)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using var w = new Utf8JsonWriter(buffer);
        Copy(w, root, mask, false);
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    private static void Copy(Utf8JsonWriter w, JsonElement e, Func<string, string> mask, bool text)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                w.WriteStartObject();
                foreach (var p in e.EnumerateObject())
                {
                    w.WritePropertyName(p.Name);
                    Copy(w, p.Value, mask, p.NameEquals("content"));
                }
                w.WriteEndObject();
                break;
            case JsonValueKind.Array:
                w.WriteStartArray();
                foreach (var x in e.EnumerateArray()) Copy(w, x, mask, false);
                w.WriteEndArray();
                break;
            case JsonValueKind.String when text:
                w.WriteStringValue(mask(e.GetString()!));
                break;
            default:
                e.WriteTo(w);
                break;
        }
    }

    /// <summary>{"error":{"message","type","param","code"}}.</summary>
    public static byte[] Error(string message, string type, string? code) => Error(message, type, code, null);

    /// <summary>An OpenAI-style error body; <paramref name="param"/>: the JSON path of the request it is about.</summary>
    public static byte[] Error(string message, string type, string? code, string? param)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using var w = new Utf8JsonWriter(buffer);
        w.WriteStartObject();
        w.WriteStartObject("error");
        w.WriteString("message", message);
        w.WriteString("type", type);
        if (param is null) w.WriteNull("param");
        else w.WriteString("param", param);
        if (code is null) w.WriteNull("code");
        else w.WriteString("code", code);
        w.WriteEndObject();
        w.WriteEndObject();
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>A provider's error body (Anthropic, Gemini or OpenAI shape) as an OpenAI error.</summary>
    public static byte[] ProviderError(int status, ReadOnlySpan<byte> body)
    {
        string message = $"provider answered {status}";
        string type = status switch { 400 or 404 or 413 or 422 => "invalid_request_error", 401 or 403 => "authentication_error", 429 => "rate_limit_error", _ => "api_error" };
        string? code = null;
        try
        {
            using var doc = JsonDocument.Parse(body.ToArray());
            if (doc.RootElement.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object)
            {
                if (e.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String) message = m.GetString()!;
                if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String) code = t.GetString();
                else if (e.TryGetProperty("status", out var s) && s.ValueKind == JsonValueKind.String) code = s.GetString();
                else if (e.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String) code = c.GetString();
            }
        }
        catch (JsonException)
        {
            // not JSON: the generic message
        }
        return Error(message, type, code);
    }
}
