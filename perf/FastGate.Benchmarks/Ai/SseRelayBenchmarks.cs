using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Ai;

namespace FastGate.Benchmarks.Ai;

/// <summary>
/// The AI stream relay's per-event work (issue 15: "0 B per streamed event on the relay path"): 100 provider SSE
/// events, as read from the socket in 4 KB pieces, cut by <see cref="SseFramer"/> and translated by
/// <see cref="AiStreamTranslator"/> into OpenAI chunks (taken after each piece, as the relay writes them). One
/// translator and framer for the whole run (a long stream): Allocated / 100 is the bytes per event.
/// </summary>
[MemoryDiagnoser]
public class SseRelayBenchmarks
{
    private const int Events = 100;
    private byte[] _openAi = [], _anthropic = [];
    private AiStreamTranslator _oa = null!, _an = null!;
    private SseFramer _oaFramer = null!, _anFramer = null!;

    [GlobalSetup]
    public void Setup()
    {
        _openAi = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \\u00e9 \"},\"finish_reason\":null}]}\n\n", Events)));
        _anthropic = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n", Events)));
        _oa = new AiStreamTranslator(ProviderFamily.OpenAi, "m", "chatcmpl-x", 1, null);
        _an = new AiStreamTranslator(ProviderFamily.Anthropic, "m", "chatcmpl-x", 1, null);
        _oaFramer = new SseFramer(1 << 20);
        _anFramer = new SseFramer(1 << 20);
    }

    [Benchmark(OperationsPerInvoke = Events, Description = "OpenAI-compatible text delta, per event")]
    public int OpenAiEvent() => Relay(_openAi, _oaFramer, _oa);

    [Benchmark(OperationsPerInvoke = Events, Description = "Anthropic text_delta → OpenAI chunk, per event")]
    public int AnthropicEvent() => Relay(_anthropic, _anFramer, _an);

    private static int Relay(byte[] stream, SseFramer framer, AiStreamTranslator translator)
    {
        int written = 0;
        for (int i = 0; i < stream.Length; i += 4096)
        {
            framer.Append(stream.AsSpan(i, Math.Min(4096, stream.Length - i)));
            while (framer.TryNext(out var data)) translator.OnEvent(data);
            written += translator.Pending.Length;
            translator.Take();
        }
        return written;
    }
}
