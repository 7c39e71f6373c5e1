using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Http;

namespace FastGate.Benchmarks.Http;

/// <summary>Request-head parsing: must be 0 B/op (the head and its header table belong to the connection).</summary>
[MemoryDiagnoser]
public class HttpParserBenchmarks
{
    private static readonly byte[] Small = Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n");
    private static readonly byte[] Browser = Encoding.ASCII.GetBytes(
        "GET /api/v1/orders/12345?include=items&limit=10 HTTP/1.1\r\nHost: api.example.com\r\n" +
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n" +
        "Accept: application/json,text/plain,*/*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\r\nCookie: session=abc123; theme=dark\r\n" +
        "X-Request-Id: 7f3c2a\r\nConnection: keep-alive\r\n\r\n");
    private readonly RequestHead _head = new();
    private ReadOnlySequence<byte> _small, _browser, _split;

    [GlobalSetup]
    public void Setup()
    {
        _small = new ReadOnlySequence<byte>(Small);
        _browser = new ReadOnlySequence<byte>(Browser);
        _split = SplitInTwo(Browser, Browser.Length / 2);
    }

    [Benchmark(Baseline = true)]
    public int ParseSmallGet() => Parse(_small);

    [Benchmark]
    public int ParseBrowserGet() => Parse(_browser);

    [Benchmark]
    public int ParseBrowserGetSplitAcrossSegments() => Parse(_split);

    private int Parse(in ReadOnlySequence<byte> buffer)
    {
        var status = HttpRequestParser.TryParse(buffer, HttpLimits.Default, _head, out int consumed, out _);
        if (status != ParseStatus.Complete) throw new InvalidOperationException(status.ToString());
        return consumed;
    }

    internal static ReadOnlySequence<byte> SplitInTwo(byte[] bytes, int split)
    {
        var first = new Segment(bytes.AsMemory(0, split), 0);
        var last = new Segment(bytes.AsMemory(split), split);
        first.SetNext(last);
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long index)
        {
            Memory = memory;
            RunningIndex = index;
        }

        public void SetNext(Segment next) => Next = next;
    }
}
