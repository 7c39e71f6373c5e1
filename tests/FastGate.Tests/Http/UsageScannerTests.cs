using System.Text;
using FastGate.Http;

namespace FastGate.Tests.Http;

public class UsageScannerTests
{
    private const string OpenAiJson = """
        {"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",
        "content":"The answer says \"total_tokens\": 999999 and prompt_tokens: 5"}}],
        "usage": { "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42 }}
        """;

    private const string AnthropicSse =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n" +
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"{\\\"output_tokens\\\":5000}\"}}\n\n" +
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";

    private const string GeminiJson = """{"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9,"totalTokenCount":16}}""";

    private static long Scan(string body, int split = -1)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var scanner = new UsageScanner();
        if (split < 0) scanner.Feed(bytes);
        else
        {
            scanner.Feed(bytes.AsSpan(0, split));
            scanner.Feed(bytes.AsSpan(split));
        }
        scanner.Complete();
        return scanner.Tokens;
    }

    [Theory]
    [InlineData(OpenAiJson, 42)]
    [InlineData(AnthropicSse, 40)]   // largest input (25) + largest output (15), counted once each
    [InlineData(GeminiJson, 16)]
    [InlineData("""{"usage":{"prompt_tokens":3,"completion_tokens":4}}""", 7)]
    [InlineData("""{"choices":[{"text":"no usage here"}]}""", 0)]
    [InlineData("""{"total_tokens":"12"}""", 0)] // a string is not a count
    public void Counts_AtEverySplit(string body, long expected)
    {
        Assert.Equal(expected, Scan(body));
        for (int split = 0; split <= Encoding.UTF8.GetByteCount(body); split++)
            Assert.Equal(expected, Scan(body, split));
    }

    [Fact]
    public void ByteByByte_SameAsWhole()
    {
        var bytes = Encoding.UTF8.GetBytes(OpenAiJson + AnthropicSse);
        var scanner = new UsageScanner();
        foreach (var b in bytes) scanner.Feed([b]);
        scanner.Complete();
        Assert.Equal(42, scanner.Total);
        Assert.Equal(25, scanner.Input);
        Assert.Equal(30, scanner.Output);
    }

    [Fact]
    public void ANumberAtTheVeryEnd_CountsOnComplete()
    {
        var scanner = new UsageScanner();
        scanner.Feed("{\"total_tokens\": 77"u8);
        Assert.Equal(0, scanner.Tokens);
        scanner.Complete();
        Assert.Equal(77, scanner.Tokens);
    }
}
