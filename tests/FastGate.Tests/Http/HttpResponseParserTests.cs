using System.Buffers;
using FastGate.Http;

namespace FastGate.Tests.Http;

public class HttpResponseParserTests
{
    private static ResponseHead Parse(string text, HttpMethod method, out ParseStatus status)
    {
        var head = new ResponseHead();
        status = HttpResponseParser.TryParse(new ReadOnlySequence<byte>(HttpRequestParserTests.Latin1(text)), HttpLimits.Default, head, method, out _, out _);
        return head;
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", BodyFraming.ContentLength)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", BodyFraming.Chunked)]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n", BodyFraming.ReadToClose)]
    [InlineData("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", BodyFraming.None)]
    [InlineData("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", BodyFraming.None)]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", BodyFraming.None)]
    [InlineData("HTTP/1.0 200\r\nContent-Length: 1\r\n\r\n", BodyFraming.ContentLength)]
    public void Parse_ValidResponse_FramingFollowsRfc9112(string text, BodyFraming framing)
    {
        using var head = Parse(text, HttpMethod.Get, out var status);
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(framing, head.Framing);
    }

    [Fact]
    public void Parse_ResponseToHead_HasNoBody()
    {
        using var head = Parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HttpMethod.Head, out var status);
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(BodyFraming.None, head.Framing);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n")]
    [InlineData("HTTP/2 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 20 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n")]
    [InlineData("garbage\r\n\r\n")]
    public void Parse_MalformedResponse_IsAnError(string text)
    {
        using var head = Parse(text, HttpMethod.Get, out var status);
        Assert.Equal(ParseStatus.Error, status);
    }
}
