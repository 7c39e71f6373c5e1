using FastGate.Http;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Http;

/// <summary>The parser's rejections as a client sees them: a real gateway on a socket, a raw upstream behind it.</summary>
public class ParserOverSocketTests
{
    /// <summary>Answers every request head with 200 and counts the bytes (head and body) it was sent.</summary>
    private sealed class CountingUpstream : IAsyncDisposable
    {
        private long _bytes;
        public RawUpstream Server { get; }
        public long Bytes => Interlocked.Read(ref _bytes);

        public CountingUpstream()
        {
            Server = new RawUpstream(async (stream, cancel) =>
            {
                await RawUpstream.ReadHeadAsync(stream, cancel);
                await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), cancel);
                var buffer = new byte[16384];
                int n;
                while ((n = await stream.ReadAsync(buffer, cancel)) > 0) Interlocked.Add(ref _bytes, n);
            });
        }

        public ValueTask DisposeAsync() => Server.DisposeAsync();
    }

    public static TheoryData<string, int, string> Rejected => new()
    {
        { "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "empty_host" },
        { "GET / HTTP/1.0\r\nHost:\r\n\r\n", 400, "empty_host" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 400, "content_length_with_transfer_encoding" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 400, "content_length_with_transfer_encoding" },
        { new string('A', 100 * 1024) + " / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_method" },
        { "GET /" + new string('a', 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414, "request_line_too_long" },
    };

    [Theory]
    [MemberData(nameof(Rejected))]
    public async Task RejectedHead_GetsItsStatusAndReason_AndNothingReachesTheUpstream(string request, int status, string reason)
    {
        await using var upstream = new CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Server.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync(request);
        var response = await client.ReadResponseAsync();
        Assert.Equal(status, response.Status);
        Assert.Contains($"\"reason\":\"{reason}\"", response.Body, StringComparison.Ordinal);
        Assert.Equal("close", response.Headers["Connection"]);
        Assert.True(await client.IsClosedByServerAsync());
        Assert.Equal(0, upstream.Server.Connections);
    }

    public static TheoryData<string, int, string> RejectedBodies => new()
    {
        { "1;\r\nx\r\n0\r\n\r\n", 400, "invalid_chunk_extension" },
        { "1;a=b;\r\nx\r\n0\r\n\r\n", 400, "invalid_chunk_extension" },
        { "1;a=" + new string('b', 50_000) + "\r\nx\r\n0\r\n\r\n", 400, "chunk_extension_too_long" },
        // 40 chunk lines of ~1 KB each carry 40 data bytes: the extensions count toward maxBodyBytes (16 KB here)
        { string.Concat(Enumerable.Repeat("1;e=" + new string('x', 1000) + "\r\nd\r\n", 40)) + "0\r\n\r\n", 413, "body_too_large" },
    };

    [Theory]
    [MemberData(nameof(RejectedBodies))]
    public async Task RejectedChunkedBody_GetsItsStatusAndReason_AndTheLongExtensionIsNotForwarded(string body, int status, string reason)
    {
        await using var upstream = new CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Server.Address, limits: "\"maxBodyBytes\": 16384"));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
        var response = await client.ReadResponseAsync();
        Assert.Equal(status, response.Status);
        Assert.Contains($"\"reason\":\"{reason}\"", response.Body, StringComparison.Ordinal);
        Assert.True(await client.IsClosedByServerAsync());
        // what reached the upstream (after its head) is at most one bounded chunk line, or the body up to the limit
        Assert.True(upstream.Bytes <= 16384 + 2 * ChunkedReader.MaxChunkLineBytes, $"upstream got {upstream.Bytes} bytes");
    }

    [Fact]
    public async Task Http10ClientWithExpectContinue_GetsNo100_OnlyTheResponse()
    {
        await using var upstream = new CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Server.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("ok", response.Body);
    }

    [Fact]
    public async Task Http11ClientWithExpectContinue_Still_Gets100First()
    {
        await using var upstream = new CountingUpstream();
        await using var gateway = await TestGateway.StartAsync(TestGateway.Config(upstream.Server.Address));
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        await client.SendAsync("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        Assert.Equal(100, (await client.ReadResponseAsync()).Status);
        await client.SendAsync("hi");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
    }
}
