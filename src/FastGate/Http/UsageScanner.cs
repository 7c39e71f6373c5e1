namespace FastGate.Http;

/// <summary>
/// Finds the token counts an LLM API reports in a response body (a JSON document, or server-sent events), fed in
/// pieces as the body is relayed: <c>"total_tokens"</c> / <c>"totalTokenCount"</c> (OpenAI, Gemini), else input
/// (<c>"prompt_tokens"</c>, <c>"input_tokens"</c>, <c>"promptTokenCount"</c>) plus output (<c>"completion_tokens"</c>,
/// <c>"output_tokens"</c>, <c>"candidatesTokenCount"</c>). The largest value seen of each counts, so a stream that
/// repeats cumulative counts (Anthropic's message_start and message_delta) is not added up twice.
/// <para>
/// A byte-level state machine, no allocation, any split of the body gives the same result. Keys are recognised only
/// between unescaped quotes, so model output (where quotes are escaped) cannot fake a count.
/// </para>
/// </summary>
public struct UsageScanner
{
    private enum State : byte { Scan, Key, KeyEscape, AfterKey, Colon, Number }
    private enum Field : byte { None, Total, Input, Output }

    private const int MaxKey = 24;

    private State _state;
    private Field _field;
    private int _keyLength;
    private ulong _keyHash;
    private long _number;

    public long Total { get; private set; }
    public long Input { get; private set; }
    public long Output { get; private set; }

    /// <summary>The tokens the response used: the total when one was reported, else input + output.</summary>
    public readonly long Tokens => Total > 0 ? Total : Input + Output;

    public void Reset() => this = default;

    public void Feed(ReadOnlySpan<byte> data)
    {
        for (int i = 0; i < data.Length; i++)
        {
            byte b = data[i];
            switch (_state)
            {
                case State.Scan:
                {
                    // outside strings nothing matters but the next quote: jump to it (vectorised)
                    int q = data[i..].IndexOf((byte)'"');
                    if (q < 0) return;
                    i += q;
                    StartKey();
                    break;
                }
                case State.Key when _keyLength > MaxKey:
                {
                    // a long string (model text) cannot be a usage key: jump to its next quote or escape
                    int q = data[i..].IndexOfAny((byte)'"', (byte)'\\');
                    if (q < 0) return;
                    i += q;
                    if (data[i] == (byte)'\\') _state = State.KeyEscape;
                    else _state = State.AfterKey;
                    break;
                }
                case State.Key:
                    if (b == (byte)'\\') { _state = State.KeyEscape; _keyLength = MaxKey + 1; break; } // escaped: never a usage key
                    if (b == (byte)'"') { _state = State.AfterKey; break; }
                    if (_keyLength <= MaxKey)
                    {
                        _keyLength++;
                        _keyHash = (_keyHash ^ b) * Prime;
                    }
                    break;
                case State.KeyEscape:
                    _state = State.Key;
                    break;
                case State.AfterKey:
                    // a string just closed: the key of a member when a colon follows, else a value (start over)
                    if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') break;
                    if (b == (byte)':' && _keyLength <= MaxKey && (_field = Classify(_keyHash)) != Field.None)
                    {
                        _state = State.Colon;
                        break;
                    }
                    _state = State.Scan;
                    if (b == (byte)'"') StartKey();
                    break;
                case State.Colon:
                    if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') break;
                    if (b is >= (byte)'0' and <= (byte)'9') { _state = State.Number; _number = b - '0'; break; }
                    _state = State.Scan;
                    if (b == (byte)'"') StartKey();
                    break;
                case State.Number:
                    if (b is >= (byte)'0' and <= (byte)'9')
                    {
                        if (_number < 1_000_000_000_000) _number = _number * 10 + (b - '0');
                        break;
                    }
                    Record();
                    _state = State.Scan;
                    if (b == (byte)'"') StartKey();
                    break;
            }
        }
    }

    /// <summary>Takes a number the body ended on (a bare JSON number cannot, but a truncated body can).</summary>
    public void Complete()
    {
        if (_state == State.Number) Record();
        _state = State.Scan;
    }

    private void StartKey()
    {
        _state = State.Key;
        _keyLength = 0;
        _keyHash = Offset;
    }

    private void Record()
    {
        switch (_field)
        {
            case Field.Total: if (_number > Total) Total = _number; break;
            case Field.Input: if (_number > Input) Input = _number; break;
            case Field.Output: if (_number > Output) Output = _number; break;
        }
    }

    private const ulong Offset = 14695981039346656037UL;
    private const ulong Prime = 1099511628211UL;

    private static ulong Hash(ReadOnlySpan<byte> key)
    {
        ulong h = Offset;
        foreach (byte b in key) h = (h ^ b) * Prime;
        return h;
    }

    private static readonly ulong s_total = Hash("total_tokens"u8), s_totalGemini = Hash("totalTokenCount"u8);
    private static readonly ulong s_prompt = Hash("prompt_tokens"u8), s_input = Hash("input_tokens"u8), s_promptGemini = Hash("promptTokenCount"u8);
    private static readonly ulong s_completion = Hash("completion_tokens"u8), s_output = Hash("output_tokens"u8), s_outputGemini = Hash("candidatesTokenCount"u8);

    private static Field Classify(ulong hash) =>
        hash == s_total || hash == s_totalGemini ? Field.Total
        : hash == s_prompt || hash == s_input || hash == s_promptGemini ? Field.Input
        : hash == s_completion || hash == s_output || hash == s_outputGemini ? Field.Output
        : Field.None;
}
