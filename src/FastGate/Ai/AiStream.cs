using System.Buffers;
using System.Text;
using System.Text.Json;

namespace FastGate.Ai;

/// <summary>
/// Server-sent events framing over bytes as they arrive: an event is complete at its blank line, wherever the reads
/// split it (inside a line, between CR and LF, inside a multi-byte character). Only "event" and "data" are kept.
/// </summary>
internal sealed class SseFramer
{
    private byte[] _pending = new byte[4096];
    private int _length;
    private readonly int _max;

    public SseFramer(int maxEventBytes) => _max = maxEventBytes;

    /// <summary>Adds bytes; false when one event grew past the bound.</summary>
    public bool Append(ReadOnlySpan<byte> bytes)
    {
        if (_length + bytes.Length > _pending.Length)
        {
            if (_length + bytes.Length > _max) return false;
            Array.Resize(ref _pending, Math.Max(_pending.Length * 2, _length + bytes.Length));
        }
        bytes.CopyTo(_pending.AsSpan(_length));
        _length += bytes.Length;
        return true;
    }

    /// <summary>The next complete event (its event name and joined data), or false when none is complete yet.</summary>
    public bool TryNext(out string? eventName, out string data)
    {
        eventName = null;
        data = "";
        var span = _pending.AsSpan(0, _length);
        int pos = 0;
        var sb = new StringBuilder();
        bool anyData = false;
        while (true)
        {
            int nl = span[pos..].IndexOf((byte)'\n');
            if (nl < 0) return false; // the event is not complete yet: keep every byte
            var line = span.Slice(pos, nl);
            if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
            pos += nl + 1;
            if (line.Length == 0)
            {
                if (!anyData && eventName is null) { Consume(pos); span = _pending.AsSpan(0, _length); pos = 0; continue; } // stray blank line
                Consume(pos);
                data = sb.ToString();
                return true;
            }
            if (line[0] == ':') continue; // comment
            int colon = line.IndexOf((byte)':');
            var field = colon < 0 ? line : line[..colon];
            var value = colon < 0 ? [] : line[(colon + 1)..];
            if (value.Length > 0 && value[0] == ' ') value = value[1..];
            if (field.SequenceEqual("data"u8))
            {
                if (anyData) sb.Append('\n');
                sb.Append(Encoding.UTF8.GetString(value));
                anyData = true;
            }
            else if (field.SequenceEqual("event"u8)) eventName = Encoding.UTF8.GetString(value);
        }
    }

    private void Consume(int count)
    {
        _pending.AsSpan(count, _length - count).CopyTo(_pending);
        _length -= count;
    }
}

/// <summary>
/// Translates one provider stream, event by event, into OpenAI chat.completion.chunk events. Response masking holds
/// back the text after the last whitespace so that a value split across events is still seen whole.
/// </summary>
internal sealed class AiStreamTranslator
{
    private readonly ProviderFamily _family;
    private readonly string _model;
    private readonly string _id;
    private readonly long _created;
    private readonly PromptGuard? _mask;
    private readonly StringBuilder _held = new();
    private readonly ArrayBufferWriter<byte> _out = new(1024);
    private readonly Dictionary<int, int> _anthropicToolIndex = [];
    private bool _started;
    private int _tools;
    private string? _finish;
    public AiUsage Usage;
    public bool Done { get; private set; }
    public string? Error { get; private set; }

    public AiStreamTranslator(ProviderFamily family, string model, string id, long created, PromptGuard? mask)
    {
        _family = family;
        _model = model;
        _id = id;
        _created = created;
        _mask = mask;
    }

    /// <summary>The translated events so far (cleared by <see cref="Take"/>).</summary>
    public ReadOnlySpan<byte> Pending => _out.WrittenSpan;
    public void Take() => _out.ResetWrittenCount();

    public void OnEvent(string? name, string data)
    {
        if (Done) return;
        if (data.Length == 0) return;
        if (data == "[DONE]") { Finish(); return; }
        using var doc = JsonDocument.Parse(data);
        var root = doc.RootElement;
        switch (_family)
        {
            case ProviderFamily.Anthropic: Anthropic(root); break;
            case ProviderFamily.Gemini: Gemini(root); break;
            default: OpenAi(root); break;
        }
    }

    private void OpenAi(JsonElement root)
    {
        if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) Usage.Read(u);
        if (!root.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() == 0) return;
        var c = choices[0];
        if (c.TryGetProperty("delta", out var delta))
        {
            if (delta.TryGetProperty("content", out var t) && t.ValueKind == JsonValueKind.String) Text(t.GetString()!);
            if (delta.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
            {
                Release();
                Chunk(w =>
                {
                    w.WritePropertyName("tool_calls");
                    calls.WriteTo(w);
                }, null);
            }
        }
        if (c.TryGetProperty("finish_reason", out var fr) && fr.ValueKind == JsonValueKind.String) _finish = fr.GetString();
    }

    private void Anthropic(JsonElement root)
    {
        var type = root.TryGetProperty("type", out var t) ? t.GetString() : null;
        switch (type)
        {
            case "message_start":
                if (root.GetProperty("message").TryGetProperty("usage", out var u0)) Usage.Read(u0);
                break;
            case "content_block_start":
                {
                    var block = root.GetProperty("content_block");
                    if (block.GetProperty("type").GetString() == "tool_use")
                    {
                        Release();
                        int index = _tools++;
                        _anthropicToolIndex[root.GetProperty("index").GetInt32()] = index;
                        var id = block.GetProperty("id").GetString();
                        var toolName = block.GetProperty("name").GetString();
                        Chunk(w => ToolCalls(w, index, id, toolName, ""), null);
                    }
                    break;
                }
            case "content_block_delta":
                {
                    var delta = root.GetProperty("delta");
                    var dt = delta.GetProperty("type").GetString();
                    if (dt == "text_delta") Text(delta.GetProperty("text").GetString()!);
                    else if (dt == "input_json_delta" && _anthropicToolIndex.TryGetValue(root.GetProperty("index").GetInt32(), out int index))
                    {
                        var part = delta.GetProperty("partial_json").GetString()!;
                        Chunk(w => ToolCalls(w, index, null, null, part), null);
                    }
                    break;
                }
            case "message_delta":
                if (root.TryGetProperty("delta", out var md) && md.TryGetProperty("stop_reason", out var sr) && sr.ValueKind == JsonValueKind.String) _finish = sr.GetString();
                if (root.TryGetProperty("usage", out var u1)) Usage.Read(u1);
                break;
            case "message_stop":
                Finish();
                break;
            case "error":
                Error = root.TryGetProperty("error", out var e) && e.TryGetProperty("message", out var m) ? m.GetString() : "provider stream error";
                break;
        }
    }

    private void Gemini(JsonElement root)
    {
        if (root.TryGetProperty("usageMetadata", out var u)) Usage.Read(u);
        if (!root.TryGetProperty("candidates", out var cands) || cands.ValueKind != JsonValueKind.Array || cands.GetArrayLength() == 0) return;
        var cand = cands[0];
        if (cand.TryGetProperty("content", out var content) && content.TryGetProperty("parts", out var parts))
            foreach (var part in parts.EnumerateArray())
            {
                if (part.TryGetProperty("text", out var text)) Text(text.GetString()!);
                else if (part.TryGetProperty("functionCall", out var fc))
                {
                    Release();
                    int index = _tools++;
                    var name = fc.GetProperty("name").GetString();
                    var args = fc.TryGetProperty("args", out var a) ? a.GetRawText() : "{}";
                    Chunk(w => ToolCalls(w, index, "call_" + index, name, args), null);
                }
            }
        if (cand.TryGetProperty("finishReason", out var fr) && fr.ValueKind == JsonValueKind.String) _finish = _tools > 0 ? "tool_calls" : fr.GetString();
    }

    private static void ToolCalls(Utf8JsonWriter w, int index, string? id, string? name, string args)
    {
        w.WriteStartArray("tool_calls");
        AiResponseWriter.WriteToolCall(w, index, id, name, args);
        w.WriteEndArray();
    }

    private void Text(string text)
    {
        if (text.Length == 0) return;
        if (_mask is null)
        {
            Chunk(w => w.WriteString("content", text), null);
            return;
        }
        _held.Append(text);
        int cut = -1;
        for (int i = _held.Length - 1; i >= 0; i--)
            if (char.IsWhiteSpace(_held[i])) { cut = i; break; }
        if (cut < 0 && _held.Length < 512) return;
        int take = cut < 0 ? _held.Length : cut + 1;
        var ready = _held.ToString(0, take);
        _held.Remove(0, take);
        var masked = _mask.Scan(ready, out _);
        Chunk(w => w.WriteString("content", masked), null);
    }

    /// <summary>Sends the held-back text (before a tool call or the end).</summary>
    private void Release()
    {
        if (_held.Length == 0 || _mask is null) return;
        var masked = _mask.Scan(_held.ToString(), out _);
        _held.Clear();
        Chunk(w => w.WriteString("content", masked), null);
    }

    /// <summary>The finish chunk, the usage chunk and [DONE] (once).</summary>
    public void Finish()
    {
        if (Done) return;
        Release();
        Chunk(_ => { }, AiResponseWriter.FinishReason(_finish));
        using (var w = new Utf8JsonWriter(_out))
        {
            _out.Write("data: "u8);
            w.WriteStartObject();
            Header(w);
            w.WriteStartArray("choices");
            w.WriteEndArray();
            AiResponseWriter.WriteUsage(w, Usage);
            w.WriteEndObject();
        }
        _out.Write("\n\ndata: [DONE]\n\n"u8);
        Done = true;
    }

    private void Header(Utf8JsonWriter w)
    {
        w.WriteString("id", _id);
        w.WriteString("object", "chat.completion.chunk");
        w.WriteNumber("created", _created);
        w.WriteString("model", _model);
    }

    private void Chunk(Action<Utf8JsonWriter> delta, string? finish)
    {
        _out.Write("data: "u8);
        using (var w = new Utf8JsonWriter(_out))
        {
            w.WriteStartObject();
            Header(w);
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            w.WriteStartObject("delta");
            if (!_started)
            {
                w.WriteString("role", "assistant");
                _started = true;
            }
            delta(w);
            w.WriteEndObject();
            if (finish is null) w.WriteNull("finish_reason");
            else w.WriteString("finish_reason", finish);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        _out.Write("\n\n"u8);
    }
}
