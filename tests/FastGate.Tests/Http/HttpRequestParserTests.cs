using System.Buffers;
using System.Text;
using FastGate.Http;

namespace FastGate.Tests.Http;

public class HttpRequestParserTests
{
    private static readonly HttpLimits Limits = new() { MaxRequestLineBytes = 256, MaxHeaderBytes = 1024, MaxHeaderCount = 10, MaxBodyBytes = 1000 };

    public static TheoryData<string> ValidRequests => new()
    {
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET /a/b?c=d&e=%20 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://example.com/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1]:80\r\nX-Empty:\r\nX-Obs-Text: caf\u00e9\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
    };

    public static TheoryData<string, RejectReason, int> InvalidRequests => new()
    {
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", RejectReason.ContentLengthWithTransferEncoding, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", RejectReason.TransferEncodingNotChunkedLast, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", RejectReason.TransferEncodingNotChunkedLast, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", RejectReason.TransferEncodingNotChunkedLast, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", RejectReason.UnknownTransferCoding, 501 },
        { "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", RejectReason.TransferEncodingInHttp10, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", RejectReason.InvalidContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", RejectReason.InvalidContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", RejectReason.InvalidContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", RejectReason.ConflictingContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", RejectReason.ConflictingContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", RejectReason.InvalidContentLength, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", RejectReason.InvalidContentLength, 400 },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", RejectReason.WhitespaceBeforeColon, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", RejectReason.WhitespaceBeforeColon, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  continued\r\n\r\n", RejectReason.ObsoleteLineFolding, 400 },
        { "GET / HTTP/1.1\nHost: a\r\n\r\n", RejectReason.BareLineFeed, 400 },
        { "GET / HTTP/1.1\r\nHost: a\n\r\n", RejectReason.BareLineFeed, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\n\n", RejectReason.BareLineFeed, 400 },
        { "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", RejectReason.InvalidHeaderValue, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", RejectReason.InvalidHeaderValue, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u0001\r\n\r\n", RejectReason.InvalidHeaderValue, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u007f\r\n\r\n", RejectReason.InvalidHeaderValue, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", RejectReason.InvalidHeaderName, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", RejectReason.InvalidHeaderName, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", RejectReason.InvalidHeaderName, 400 },
        { "GET / HTTP/1.1\r\n\r\n", RejectReason.MissingHost, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RejectReason.MultipleHost, 400 },
        { "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", RejectReason.InvalidHost, 400 },
        { "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", RejectReason.InvalidHost, 400 },
        { "GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n", RejectReason.InvalidHost, 400 },
        { "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", RejectReason.InvalidHost, 400 },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", RejectReason.UnsupportedHttpVersion, 505 },
        { "GET / HTTP/1.2\r\nHost: a\r\n\r\n", RejectReason.UnsupportedHttpVersion, 505 },
        { "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", RejectReason.InvalidRequestLine, 400 },
        { "GET / http/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestLine, 400 },
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestLine, 400 },
        { "GET /\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestLine, 400 },
        { "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidMethod, 400 },
        { "GET * HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestLine, 400 },
        { "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET /a/../admin HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET /a/./b HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET /\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET http://user@evil/ HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidRequestTarget, 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n", RejectReason.ExpectationFailed, 417 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", RejectReason.BodyTooLarge, 413 },
        { "GET /" + new string('a', 300) + " HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.RequestLineTooLong, 414 },
        // an empty Host is refused in either version (RFC 9112 3.2)
        { "GET / HTTP/1.1\r\nHost: \r\n\r\n", RejectReason.EmptyHost, 400 },
        { "GET / HTTP/1.1\r\nHost:\r\n\r\n", RejectReason.EmptyHost, 400 },
        { "GET / HTTP/1.0\r\nHost:\r\n\r\n", RejectReason.EmptyHost, 400 },
        { "GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n", RejectReason.EmptyHost, 400 },
        // Content-Length with any Transfer-Encoding is a framing error (400), whatever the codings
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", RejectReason.ContentLengthWithTransferEncoding, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", RejectReason.ContentLengthWithTransferEncoding, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n\r\n", RejectReason.ContentLengthWithTransferEncoding, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", RejectReason.ContentLengthWithTransferEncoding, 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", RejectReason.UnknownTransferCoding, 501 },
        // a method too long for the request line is a bad method (400), not a long URI (414)
        { new string('A', 1000) + " / HTTP/1.1\r\nHost: a\r\n\r\n", RejectReason.InvalidMethod, 400 },
        { new string('A', 257) + "\r\n\r\n", RejectReason.InvalidMethod, 400 },
        { "GET " + new string('a', 300) + "\r\n\r\n", RejectReason.RequestLineTooLong, 414 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + new string('b', 1100) + "\r\n\r\n", RejectReason.HeadersTooLarge, 431 },
        { "GET / HTTP/1.1\r\nHost: a\r\n" + string.Concat(Enumerable.Range(0, 11).Select(i => $"X-{i}: v\r\n")) + "\r\n", RejectReason.TooManyHeaders, 431 },
    };

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Parse_ValidRequest_CompletesAndConsumesTheWholeHead(string text)
    {
        var bytes = Latin1(text);
        using var head = new RequestHead();
        var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, head, out int consumed, out var reason);
        Assert.Equal(RejectReason.None, reason);
        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(bytes.Length, consumed);
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Parse_EveryPrefixOfValidRequest_AsksForMoreAndConsumesNothing(string text)
    {
        var bytes = Latin1(text);
        using var head = new RequestHead();
        for (int n = 0; n < bytes.Length; n++)
        {
            var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes, 0, n), Limits, head, out int consumed, out var reason);
            Assert.True(status == ParseStatus.Incomplete, $"prefix of {n} bytes gave {status} ({reason})");
            Assert.Equal(0, consumed);
        }
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Parse_ValidRequestSplitAtEveryByte_GivesTheSameHead(string text)
    {
        var bytes = Latin1(text);
        using var whole = new RequestHead();
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, whole, out _, out _);
        for (int split = 1; split < bytes.Length; split++)
        {
            using var head = new RequestHead();
            var status = HttpRequestParser.TryParse(TwoSegments(bytes, split), Limits, head, out int consumed, out _);
            Assert.Equal(ParseStatus.Complete, status);
            Assert.Equal(bytes.Length, consumed);
            Assert.Equal(Describe(whole), Describe(head));
        }
    }

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void Parse_InvalidRequest_IsRejectedWithItsReasonAndStatus(string text, RejectReason expected, int status)
    {
        var bytes = Latin1(text);
        using var head = new RequestHead();
        var result = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, head, out _, out var reason);
        Assert.Equal(ParseStatus.Error, result);
        Assert.Equal(expected, reason);
        Assert.Equal(status, RejectReasons.StatusCode(reason));
    }

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void Parse_InvalidRequestSplitAtEveryByte_IsRejectedTheSameWay(string text, RejectReason expected, int _)
    {
        var bytes = Latin1(text);
        for (int split = 1; split < bytes.Length; split++)
        {
            using var head = new RequestHead();
            var result = HttpRequestParser.TryParse(TwoSegments(bytes, split), Limits, head, out _, out var reason);
            Assert.Equal(ParseStatus.Error, result);
            Assert.Equal(expected, reason);
        }
    }

    [Fact]
    public void Parse_RequestLineWithoutEndBeyondLimit_Rejects414BeforeTheLineEnds()
    {
        var bytes = Latin1("GET /" + new string('a', 300));
        using var head = new RequestHead();
        var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, head, out _, out var reason);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(RejectReason.RequestLineTooLong, reason);
    }

    [Fact]
    public void Parse_EndlessHeaderSection_Rejects431BeforeItEnds()
    {
        var bytes = Latin1("GET / HTTP/1.1\r\nHost: a\r\nX: " + new string('v', 2000));
        using var head = new RequestHead();
        var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, head, out _, out var reason);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(RejectReason.HeadersTooLarge, reason);
    }

    [Fact]
    public void Parse_AbsoluteForm_UsesTheTargetAuthorityAndPath()
    {
        using var head = Parse("GET http://Example.com:81/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        Assert.True(head.IsAbsoluteForm);
        Assert.Equal("Example.com:81", Ascii(head[head.Host]));
        Assert.Equal("/p/q", Ascii(head[head.Path]));
        Assert.Equal("?x=1", Ascii(head[head.Query]));
    }

    [Fact]
    public void Parse_KnownHeaders_SetFramingAndConnectionOptions()
    {
        using var head = Parse("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Request-Id: abc-123\r\n\r\n");
        Assert.Equal(HttpMethod.Post, head.Method);
        Assert.Equal(BodyFraming.ContentLength, head.Framing);
        Assert.Equal(42, head.ContentLength);
        Assert.True(head.ConnectionClose);
        Assert.True(head.WantsClose);
        Assert.True(head.IsNamedByConnection("x-hop"u8));
        Assert.Equal("abc-123", Ascii(head[head.RequestId]));
        var hop = head.Headers.ToArray().Single(h => Ascii(head[h.Name]) == "X-Hop");
        Assert.True(head.IsHopByHop(hop));
    }

    [Theory]
    [InlineData("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false)]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", true)]
    public void Parse_ExpectContinue_IsOnlyTakenFromHttp11(string text, bool expected)
    {
        var head = new RequestHead();
        Assert.Equal(ParseStatus.Complete, HttpRequestParser.TryParse(Latin1(text), Limits, head, out _, out _));
        Assert.Equal(expected, head.ExpectContinue);
    }

    [Fact]
    public void Parse_Http10WithoutKeepAlive_WantsClose()
    {
        using var head = Parse("GET / HTTP/1.0\r\n\r\n");
        Assert.False(head.IsHttp11);
        Assert.True(head.WantsClose);
        using var keep = Parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        Assert.False(keep.WantsClose);
    }

    [Fact]
    public void Parse_PipelinedRequests_ConsumesOnlyTheFirstHead()
    {
        var bytes = Latin1("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        using var head = new RequestHead();
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), Limits, head, out int consumed, out _);
        Assert.Equal(bytes.Length / 2, consumed);
        Assert.Equal("/1", Ascii(head[head.Path]));
    }

    internal static ReadOnlySequence<byte> TwoSegments(byte[] bytes, int split)
    {
        var first = new Segment(bytes.AsMemory(0, split));
        var last = first.Append(bytes.AsMemory(split));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private static RequestHead Parse(string text)
    {
        var head = new RequestHead();
        var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(Latin1(text)), Limits, head, out _, out var reason);
        Assert.True(status == ParseStatus.Complete, $"{status} {reason}");
        return head;
    }

    private static string Describe(RequestHead h) =>
        $"{h.Method} {Ascii(h[h.Path])} {Ascii(h[h.Query])} host={Ascii(h[h.Host])} cl={h.ContentLength} {h.Framing} " +
        string.Join("|", h.Headers.ToArray().Select(f => Ascii(h[f.Name]) + "=" + Ascii(h[f.Value])));

    internal static byte[] Latin1(string s) => Encoding.Latin1.GetBytes(s);
    internal static string Ascii(ReadOnlySpan<byte> s) => Encoding.Latin1.GetString(s);

    internal sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
