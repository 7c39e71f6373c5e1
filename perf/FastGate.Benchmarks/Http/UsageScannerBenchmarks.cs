using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Http;

namespace FastGate.Benchmarks.Http;

/// <summary>
/// The token-quota body scan on LLM routes: cost per response body as it is relayed, against a plain copy of the same
/// bytes (what relaying costs without the scan). Must be 0 B/op.
/// </summary>
[MemoryDiagnoser]
public class UsageScannerBenchmarks
{
    private byte[] _json = [];
    private byte[] _sse = [];
    private readonly byte[] _copy = new byte[65536];

    [GlobalSetup]
    public void Setup()
    {
        var answer = string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. ", 20)); // ~900 bytes of text
        _json = Encoding.UTF8.GetBytes(
            "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\"," +
            $"\"content\":\"{answer}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":120,\"completion_tokens\":200,\"total_tokens\":320}}}}");
        var sse = new StringBuilder();
        foreach (var word in answer.Split(' '))
            sse.Append("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"")
               .Append(word).Append(" \"}}]}\n\n");
        sse.Append("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":200,\"total_tokens\":320}}\n\ndata: [DONE]\n\n");
        _sse = Encoding.UTF8.GetBytes(sse.ToString());
    }

    [Benchmark(Baseline = true)]
    public int CopyJsonOnly()
    {
        _json.CopyTo(_copy, 0);
        return _copy[0];
    }

    [Benchmark]
    public long ScanJson()
    {
        var scanner = new UsageScanner();
        scanner.Feed(_json);
        scanner.Complete();
        return scanner.Tokens;
    }

    [Benchmark]
    public long ScanSseStream()
    {
        var scanner = new UsageScanner();
        scanner.Feed(_sse);
        scanner.Complete();
        return scanner.Tokens;
    }

    [Benchmark]
    public long ScanSseStreamBy64ByteReads()
    {
        var scanner = new UsageScanner();
        for (int i = 0; i < _sse.Length; i += 64) scanner.Feed(_sse.AsSpan(i, Math.Min(64, _sse.Length - i)));
        scanner.Complete();
        return scanner.Tokens;
    }
}
