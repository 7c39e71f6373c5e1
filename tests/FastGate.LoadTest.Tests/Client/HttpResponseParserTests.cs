using System.Text;
using FastGate.LoadTest.Client;
using Xunit;

namespace FastGate.LoadTest.Tests.Client;

public class HttpResponseParserTests
{
    /// <summary>Feeds the bytes the way the client does (unconsumed bytes stay and grow); returns the status and the bytes used.</summary>
    private static (ParseStatus Status, int Used, HttpResponseParser Parser) Feed(byte[] all, int[] cuts, bool head = false)
    {
        var p = new HttpResponseParser();
        p.Reset(head);
        int start = 0;
        int end;
        foreach (int cut in cuts.Append(all.Length))
        {
            end = cut;
            while (start <= end)
            {
                var status = p.Parse(all.AsSpan(start, end - start), out int consumed);
                start += consumed;
                if (status != ParseStatus.NeedMore) return (status, start, p);
                break;
            }
        }
        return (ParseStatus.NeedMore, start, p);
    }

    private static byte[] B(string s) => Encoding.ASCII.GetBytes(s);

    public static TheoryData<string, int> Responses => new()
    {
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200 },
        { "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nRetry-After: 1\r\n\r\n", 429 },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n2;ext=1\r\nbc\r\n0\r\n\r\n", 200 },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n", 200 },
        { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 201 },
        { "HTTP/1.1 204 No Content\r\n\r\n", 204 },
        { "HTTP/1.1 404\r\nContent-Length: 3\r\n\r\nnot", 404 },
    };

    [Theory]
    [MemberData(nameof(Responses))]
    public void Parse_WholeResponse_CompletesAtItsEnd(string text, int status)
    {
        var bytes = B(text + "HTTP/1.1 200 OK\r\n"); // the next response's start must not be consumed
        var (result, used, parser) = Feed(bytes, []);
        Assert.Equal(ParseStatus.Complete, result);
        Assert.Equal(text.Length, used);
        Assert.Equal(status, parser.StatusCode);
        Assert.True(parser.KeepAlive);
    }

    [Theory]
    [MemberData(nameof(Responses))]
    public void Parse_SplitAtEveryByte_GivesTheSameResult(string text, int status)
    {
        var bytes = B(text);
        for (int cut = 1; cut < bytes.Length; cut++)
        {
            var (result, used, parser) = Feed(bytes, [cut]);
            Assert.True(result == ParseStatus.Complete, $"cut at {cut}: {result}");
            Assert.Equal(bytes.Length, used);
            Assert.Equal(status, parser.StatusCode);
        }
    }

    [Theory]
    [MemberData(nameof(Responses))]
    public void Parse_EveryPrefix_AsksForMore(string text, int status)
    {
        Assert.InRange(status, 200, 599);
        var bytes = B(text);
        for (int len = 0; len < bytes.Length; len++)
        {
            var (result, _, _) = Feed(bytes[..len], []);
            Assert.True(result == ParseStatus.NeedMore, $"prefix {len}: {result}");
        }
    }

    [Theory]
    [InlineData("Retry-After: 1", true)]
    [InlineData("RateLimit-Remaining: 0", true)]
    [InlineData("x-ratelimit-limit: 10", true)]
    [InlineData("X-Other: 1", false)]
    public void Parse_NotesRateLimitHeaders(string header, bool expected)
    {
        var (result, _, p) = Feed(B($"HTTP/1.1 429 Too Many Requests\r\n{header}\r\nContent-Length: 0\r\n\r\n"), []);
        Assert.Equal(ParseStatus.Complete, result);
        Assert.Equal(expected, p.HasRateLimitHeaders);
    }

    [Fact]
    public void Parse_ConnectionClose_IsNotKeepAlive()
    {
        var (result, _, p) = Feed(B("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), []);
        Assert.Equal(ParseStatus.Complete, result);
        Assert.False(p.KeepAlive);
    }

    [Fact]
    public void Parse_NoLength_ReadsUntilClose()
    {
        var (result, used, p) = Feed(B("HTTP/1.0 200 OK\r\n\r\nbody bytes"), []);
        Assert.Equal(ParseStatus.NeedMore, result);
        Assert.True(p.EndsAtClose);
        Assert.False(p.KeepAlive);
        Assert.Equal(29, used);
    }

    [Fact]
    public void Parse_HeadRequest_HasNoBody()
    {
        var (result, _, p) = Feed(B("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"), [], head: true);
        Assert.Equal(ParseStatus.Complete, result);
        Assert.Equal(200, p.StatusCode);
    }

    [Theory]
    [InlineData("HTTP/2 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 2x0 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY")]
    [InlineData("garbage garbage\r\n\r\n")]
    public void Parse_Malformed_IsAnError(string text)
    {
        var (result, _, _) = Feed(B(text), []);
        Assert.Equal(ParseStatus.Error, result);
    }

    [Fact]
    public void Encode_AddsHostAndContentLength()
    {
        var spec = RequestSpec.Post("/items", "{\"a\":1}", "application/json", ("X-API-Key", "k1"));
        var e = RequestEncoder.Encode(spec, "127.0.0.1:8080");
        Assert.Equal("POST /items HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-API-Key: k1\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}", Encoding.ASCII.GetString(e.Bytes));
    }

    [Fact]
    public void Encode_RejectsHeaderInjection()
    {
        Assert.Throws<ArgumentException>(() => RequestEncoder.Encode(RequestSpec.Get("/", ("X-A", "b\r\nEvil: 1")), "h"));
    }
}
