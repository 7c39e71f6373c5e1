using System.Buffers;
using System.Text;
using System.Text.Json;

namespace FastGate.Ai;

/// <summary>
/// Server-sent events framing over bytes as they arrive: an event is complete at its blank line, wherever the reads
/// split it (inside a line, between CR and LF, inside a multi-byte character). Only "data" is kept (the providers'
/// "event" names repeat the JSON's "type"). Allocation-free once its two buffers have grown to the largest event.
/// </summary>
internal sealed class SseFramer : IDisposable
{
    // both buffers come from the shared ArrayPool and go back on Dispose (a stream's relay would otherwise allocate
    // 8 KB for them on every call)
    private byte[] _pending = ArrayPool<byte>.Shared.Rent(4096);
    private int _length;
    private int _start; // bytes before this belong to events already returned
    private byte[] _data = ArrayPool<byte>.Shared.Rent(4096);
    private int _dataLength;
    private readonly int _max;

    public SseFramer(int maxEventBytes) => _max = maxEventBytes;

    /// <summary>Gives the buffers back; the data of the last event returned is invalid after this.</summary>
    public void Dispose()
    {
        var pending = Interlocked.Exchange(ref _pending, []);
        var data = Interlocked.Exchange(ref _data, []);
        if (pending.Length > 0) ArrayPool<byte>.Shared.Return(pending);
        if (data.Length > 0) ArrayPool<byte>.Shared.Return(data);
        _length = _start = _dataLength = 0;
    }

    private static void Grow(ref byte[] buffer, int used, int need)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(buffer.Length * 2, need));
        buffer.AsSpan(0, used).CopyTo(bigger);
        var old = buffer;
        buffer = bigger;
        if (old.Length > 0) ArrayPool<byte>.Shared.Return(old);
    }

    /// <summary>Adds bytes; false when one event grew past the bound.</summary>
    public bool Append(ReadOnlySpan<byte> bytes)
    {
        if (_start > 0)
        {
            _pending.AsSpan(_start, _length - _start).CopyTo(_pending);
            _length -= _start;
            _start = 0;
        }
        if (_length + bytes.Length > _pending.Length)
        {
            if (_length + bytes.Length > _max) return false;
            Grow(ref _pending, _length, _length + bytes.Length);
        }
        bytes.CopyTo(_pending.AsSpan(_length));
        _length += bytes.Length;
        return true;
    }

    /// <summary>The next complete event's joined data lines (valid until the next call), or false when none is complete
    /// yet. An event with no data line (only "event:") gives empty data.</summary>
    public bool TryNext(out ReadOnlyMemory<byte> data)
    {
        data = default;
        int pos = _start;
        _dataLength = 0;
        bool anyData = false, anyField = false;
        while (true)
        {
            var span = _pending.AsSpan(pos, _length - pos);
            int nl = span.IndexOf((byte)'\n');
            if (nl < 0) return false; // the event is not complete yet: keep every byte
            var line = span[..nl];
            if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
            pos += nl + 1;
            if (line.Length == 0)
            {
                _start = pos;
                if (!anyData && !anyField) continue; // stray blank line
                data = _data.AsMemory(0, _dataLength);
                return true;
            }
            if (line[0] == ':') continue; // comment
            int colon = line.IndexOf((byte)':');
            var field = colon < 0 ? line : line[..colon];
            var value = colon < 0 ? [] : line[(colon + 1)..];
            if (value.Length > 0 && value[0] == ' ') value = value[1..];
            if (field.SequenceEqual("data"u8))
            {
                if (anyData) AppendData("\n"u8);
                AppendData(value);
                anyData = true;
            }
            else if (field.SequenceEqual("event"u8)) anyField = true;
        }
    }

    private void AppendData(ReadOnlySpan<byte> bytes)
    {
        if (_dataLength + bytes.Length > _data.Length) Grow(ref _data, _dataLength, _dataLength + bytes.Length);
        bytes.CopyTo(_data.AsSpan(_dataLength));
        _dataLength += bytes.Length;
    }
}

/// <summary>
/// Translates one provider stream, event by event, into OpenAI chat.completion.chunk events. Response masking holds
/// back the text after the last whitespace so that a value split across events is still seen whole. Without masking,
/// a text delta is copied from the provider's JSON into the chunk (no string made) with one reused writer.
/// </summary>
internal sealed class AiStreamTranslator : IDisposable
{
    private readonly ProviderFamily _family;
    private readonly string _model;
    private readonly string _id;
    private readonly long _created;
    private readonly PromptGuard? _mask;
    private readonly GuardFindings? _findings;
    private readonly StringBuilder _held = new();
    // the chunks of one read's events (a fast provider's 4 KB read holds dozens): a pooled buffer, so a call whose
    // reads carry many events does not grow a new array for them (14 KB per call in perf/ai.sh before)
    private readonly PooledBufferWriter _out = new(1024);
    private readonly Utf8JsonWriter _w;
    private Dictionary<int, int>? _anthropicToolIndex; // made by the first Anthropic tool_use block
    private bool _started;
    private int _tools;
    private string? _finish;
    public AiUsage Usage;
    public bool Done { get; private set; }
    public string? Error { get; private set; }

    public AiStreamTranslator(ProviderFamily family, string model, string id, long created, PromptGuard? mask, GuardFindings? findings = null)
    {
        _family = family;
        _model = model;
        _id = id;
        _created = created;
        _mask = mask;
        _findings = findings;
        _w = new Utf8JsonWriter(_out);
    }

    /// <summary>The translated events so far (cleared by <see cref="Take"/>).</summary>
    public ReadOnlySpan<byte> Pending => _out.WrittenSpan;
    public void Take() => _out.ResetWrittenCount();

    /// <summary>Gives the output buffer back to the pool; <see cref="Pending"/> is invalid after this.</summary>
    public void Dispose() => _out.Dispose();

    /// <summary>One event's data (UTF-8 JSON, or [DONE]).</summary>
    public void OnEvent(ReadOnlyMemory<byte> data)
    {
        if (Done) return;
        if (data.Length == 0) return;
        if (data.Span.SequenceEqual("[DONE]"u8)) { Finish(); return; }
        if (TryTextDelta(data.Span)) return;
        using var doc = JsonDocument.Parse(data);
        var root = doc.RootElement;
        switch (_family)
        {
            case ProviderFamily.Anthropic: Anthropic(root); break;
            case ProviderFamily.Gemini: Gemini(root); break;
            default: OpenAi(root); break;
        }
    }

    private byte[] _text = new byte[256];

    /// <summary>
    /// The common event, a text delta and nothing else (OpenAI-style: <c>choices[0].delta.content</c> with no tool
    /// calls, no finish reason, no usage; Anthropic: <c>content_block_delta</c> / <c>text_delta</c>), read with a
    /// <see cref="Utf8JsonReader"/> and written as its chunk without a JsonDocument or a string: no allocation.
    /// False (nothing written) for any other event, left to the document path. Not used when responses are masked.
    /// </summary>
    private bool TryTextDelta(ReadOnlySpan<byte> json)
    {
        if (_mask is not null || _family == ProviderFamily.Gemini) return false;
        var r = new Utf8JsonReader(json);
        int textLength = -1;
        if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
        if (_family == ProviderFamily.Anthropic)
        {
            bool blockDelta = false;
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueTextEquals("type"u8))
                {
                    if (!r.Read() || r.TokenType != JsonTokenType.String || !r.ValueTextEquals("content_block_delta"u8)) return false;
                    blockDelta = true;
                }
                else if (r.ValueTextEquals("delta"u8))
                {
                    if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
                    bool textType = false;
                    while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                    {
                        if (r.ValueTextEquals("type"u8))
                        {
                            if (!r.Read() || r.TokenType != JsonTokenType.String || !r.ValueTextEquals("text_delta"u8)) return false;
                            textType = true;
                        }
                        else if (r.ValueTextEquals("text"u8))
                        {
                            if (!r.Read() || r.TokenType != JsonTokenType.String) return false;
                            textLength = CopyText(ref r);
                        }
                        else return false;
                    }
                    if (!textType) return false;
                }
                else { r.Read(); r.Skip(); }
            }
            if (!blockDelta || textLength < 0) return false;
        }
        else
        {
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueTextEquals("choices"u8))
                {
                    if (!r.Read() || r.TokenType != JsonTokenType.StartArray) return false;
                    if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
                    while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                    {
                        if (r.ValueTextEquals("delta"u8))
                        {
                            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
                            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                            {
                                if (r.ValueTextEquals("content"u8))
                                {
                                    if (!r.Read()) return false;
                                    if (r.TokenType == JsonTokenType.String) textLength = CopyText(ref r);
                                    else if (r.TokenType != JsonTokenType.Null) return false;
                                }
                                else if (r.ValueTextEquals("tool_calls"u8)) return false;
                                else { r.Read(); r.Skip(); }
                            }
                        }
                        else if (r.ValueTextEquals("finish_reason"u8))
                        {
                            if (!r.Read() || r.TokenType != JsonTokenType.Null) return false;
                        }
                        else { r.Read(); r.Skip(); }
                    }
                    if (!r.Read() || r.TokenType != JsonTokenType.EndArray) return false; // one choice only
                }
                else if (r.ValueTextEquals("usage"u8))
                {
                    if (!r.Read() || r.TokenType != JsonTokenType.Null) return false;
                }
                else { r.Read(); r.Skip(); }
            }
            if (textLength < 0) return false;
        }
        if (r.TokenType != JsonTokenType.EndObject || textLength == -2) return false;
        if (textLength == 0) return true;
        BeginChunk();
        _w.WriteString("content"u8, _text.AsSpan(0, textLength));
        EndChunk(null);
        return true;
    }

    /// <summary>The reader's string, unescaped into the reused buffer: its length, or -2 when it is not valid UTF-8.</summary>
    private int CopyText(ref Utf8JsonReader r)
    {
        int max = r.HasValueSequence ? checked((int)r.ValueSequence.Length) : r.ValueSpan.Length;
        if (_text.Length < max) _text = new byte[Math.Max(max, _text.Length * 2)];
        int n = r.CopyString(_text);
        return System.Text.Unicode.Utf8.IsValid(_text.AsSpan(0, n)) ? n : -2;
    }

    private void OpenAi(JsonElement root)
    {
        if (root.TryGetProperty("usage"u8, out var u) && u.ValueKind == JsonValueKind.Object) Usage.Read(u);
        if (!root.TryGetProperty("choices"u8, out var choices) || choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() == 0) return;
        var c = choices[0];
        if (c.TryGetProperty("delta"u8, out var delta))
        {
            if (delta.TryGetProperty("content"u8, out var t) && t.ValueKind == JsonValueKind.String) Text(t);
            if (delta.TryGetProperty("tool_calls"u8, out var calls) && calls.ValueKind == JsonValueKind.Array)
            {
                Release();
                BeginChunk();
                _w.WritePropertyName("tool_calls"u8);
                calls.WriteTo(_w);
                EndChunk(null);
            }
        }
        if (c.TryGetProperty("finish_reason"u8, out var fr) && fr.ValueKind == JsonValueKind.String) _finish = fr.GetString();
    }

    private void Anthropic(JsonElement root)
    {
        if (!root.TryGetProperty("type"u8, out var type) || type.ValueKind != JsonValueKind.String) return;
        if (type.ValueEquals("content_block_delta"u8))
        {
            var delta = root.GetProperty("delta"u8);
            var dt = delta.GetProperty("type"u8);
            if (dt.ValueEquals("text_delta"u8)) Text(delta.GetProperty("text"u8));
            else if (dt.ValueEquals("input_json_delta"u8) && _anthropicToolIndex is not null && _anthropicToolIndex.TryGetValue(root.GetProperty("index"u8).GetInt32(), out int index))
            {
                var part = delta.GetProperty("partial_json"u8).GetString()!;
                BeginChunk();
                ToolCalls(_w, index, null, null, part);
                EndChunk(null);
            }
        }
        else if (type.ValueEquals("message_start"u8))
        {
            if (root.GetProperty("message"u8).TryGetProperty("usage"u8, out var u0)) Usage.Read(u0);
        }
        else if (type.ValueEquals("content_block_start"u8))
        {
            var block = root.GetProperty("content_block"u8);
            if (block.GetProperty("type"u8).ValueEquals("tool_use"u8))
            {
                Release();
                int index = _tools++;
                (_anthropicToolIndex ??= [])[root.GetProperty("index"u8).GetInt32()] = index;
                var id = block.GetProperty("id"u8).GetString();
                var toolName = block.GetProperty("name"u8).GetString();
                BeginChunk();
                ToolCalls(_w, index, id, toolName, "");
                EndChunk(null);
            }
        }
        else if (type.ValueEquals("message_delta"u8))
        {
            if (root.TryGetProperty("delta"u8, out var md) && md.TryGetProperty("stop_reason"u8, out var sr) && sr.ValueKind == JsonValueKind.String) _finish = sr.GetString();
            if (root.TryGetProperty("usage"u8, out var u1)) Usage.Read(u1);
        }
        else if (type.ValueEquals("message_stop"u8)) Finish();
        else if (type.ValueEquals("error"u8))
            Error = root.TryGetProperty("error"u8, out var e) && e.TryGetProperty("message"u8, out var m) ? m.GetString() : "provider stream error";
    }

    private void Gemini(JsonElement root)
    {
        if (root.TryGetProperty("usageMetadata"u8, out var u)) Usage.Read(u);
        if (!root.TryGetProperty("candidates"u8, out var cands) || cands.ValueKind != JsonValueKind.Array || cands.GetArrayLength() == 0) return;
        var cand = cands[0];
        if (cand.TryGetProperty("content"u8, out var content) && content.TryGetProperty("parts"u8, out var parts))
            foreach (var part in parts.EnumerateArray())
            {
                if (part.TryGetProperty("text"u8, out var text)) Text(text);
                else if (part.TryGetProperty("functionCall"u8, out var fc))
                {
                    Release();
                    int index = _tools++;
                    var name = fc.GetProperty("name"u8).GetString();
                    var args = fc.TryGetProperty("args"u8, out var a) ? a.GetRawText() : "{}";
                    BeginChunk();
                    ToolCalls(_w, index, "call_" + index, name, args);
                    EndChunk(null);
                }
            }
        if (cand.TryGetProperty("finishReason"u8, out var fr) && fr.ValueKind == JsonValueKind.String) _finish = _tools > 0 ? "tool_calls" : fr.GetString();
    }

    private static void ToolCalls(Utf8JsonWriter w, int index, string? id, string? name, string args)
    {
        w.WriteStartArray("tool_calls"u8);
        AiResponseWriter.WriteToolCall(w, index, id, name, args);
        w.WriteEndArray();
    }

    /// <summary>A text delta (a JSON string): copied as it is without masking, else through the held-back text.</summary>
    private void Text(JsonElement text)
    {
        if (_mask is null)
        {
            if (text.ValueEquals(""u8)) return;
            BeginChunk();
            _w.WritePropertyName("content"u8);
            text.WriteTo(_w);
            EndChunk(null);
            return;
        }
        Text(text.GetString()!);
    }

    private void Text(string text)
    {
        if (text.Length == 0) return;
        if (_mask is null)
        {
            Content(text);
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
        Content(_mask.Scan(ready, out _, _findings));
    }

    private void Content(string text)
    {
        BeginChunk();
        _w.WriteString("content"u8, text);
        EndChunk(null);
    }

    /// <summary>Sends the held-back text (before a tool call or the end).</summary>
    private void Release()
    {
        if (_held.Length == 0 || _mask is null) return;
        var masked = _mask.Scan(_held.ToString(), out _, _findings);
        _held.Clear();
        Content(masked);
    }

    /// <summary>
    /// The provider broke off mid-stream: an error event in OpenAI's stream shape instead of the finish chunk and
    /// [DONE], so the caller can tell the answer was cut short (a normal finish would read as a complete answer).
    /// </summary>
    public void Abort()
    {
        if (Done) return;
        Release();
        _out.Write("data: {\"error\":{\"message\":\"the provider broke off the stream\",\"type\":\"server_error\",\"code\":\"provider_stream_interrupted\"}}\n\n"u8);
        Done = true;
    }

    /// <summary>The finish chunk, the usage chunk and [DONE] (once).</summary>
    public void Finish()
    {
        if (Done) return;
        Release();
        BeginChunk();
        EndChunk(AiResponseWriter.FinishReason(_finish));
        _out.Write("data: "u8);
        _w.Reset(_out);
        _w.WriteStartObject();
        Header(_w);
        _w.WriteStartArray("choices"u8);
        _w.WriteEndArray();
        AiResponseWriter.WriteUsage(_w, Usage);
        _w.WriteEndObject();
        _w.Flush();
        _out.Write("\n\ndata: [DONE]\n\n"u8);
        Done = true;
    }

    private void Header(Utf8JsonWriter w)
    {
        w.WriteString("id"u8, _id);
        w.WriteString("object"u8, "chat.completion.chunk"u8);
        w.WriteNumber("created"u8, _created);
        w.WriteString("model"u8, _model);
    }

    /// <summary>"data: " and a chunk up to the inside of its delta object (with the role on the first chunk).</summary>
    private void BeginChunk()
    {
        _out.Write("data: "u8);
        _w.Reset(_out);
        _w.WriteStartObject();
        Header(_w);
        _w.WriteStartArray("choices"u8);
        _w.WriteStartObject();
        _w.WriteNumber("index"u8, 0);
        _w.WriteStartObject("delta"u8);
        if (!_started)
        {
            _w.WriteString("role"u8, "assistant"u8);
            _started = true;
        }
    }

    private void EndChunk(string? finish)
    {
        _w.WriteEndObject();
        if (finish is null) _w.WriteNull("finish_reason"u8);
        else _w.WriteString("finish_reason"u8, finish);
        _w.WriteEndObject();
        _w.WriteEndArray();
        _w.WriteEndObject();
        _w.Flush();
        _out.Write("\n\n"u8);
    }
}

/// <summary>An <see cref="IBufferWriter{T}"/> over arrays rented from <see cref="ArrayPool{T}.Shared"/> (grown by renting a
/// larger one and returning the old), given back on <see cref="Dispose"/>.</summary>
internal sealed class PooledBufferWriter : IBufferWriter<byte>, IDisposable
{
    private byte[] _buffer;
    private int _written;

    public PooledBufferWriter(int initialCapacity) => _buffer = ArrayPool<byte>.Shared.Rent(initialCapacity);

    public ReadOnlySpan<byte> WrittenSpan => _buffer.AsSpan(0, _written);
    public void ResetWrittenCount() => _written = 0;

    public void Advance(int count)
    {
        if ((uint)count > (uint)(_buffer.Length - _written)) throw new ArgumentOutOfRangeException(nameof(count));
        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsSpan(_written);
    }

    private void Ensure(int sizeHint)
    {
        int need = Math.Max(sizeHint, 1);
        if (_buffer.Length - _written >= need) return;
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _written + need));
        _buffer.AsSpan(0, _written).CopyTo(bigger);
        var old = _buffer;
        _buffer = bigger;
        if (old.Length > 0) ArrayPool<byte>.Shared.Return(old);
    }

    public void Dispose()
    {
        var old = _buffer;
        _buffer = [];
        _written = 0;
        if (old.Length > 0) ArrayPool<byte>.Shared.Return(old);
    }
}
