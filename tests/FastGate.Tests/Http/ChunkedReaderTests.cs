using FastGate.Http;

namespace FastGate.Tests.Http;

public class ChunkedReaderTests
{
    public static TheoryData<string> ValidBodies => new()
    {
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
        "5 ;name=\"quoted;value\"\r\nhello\r\n0\r\n\r\n",
        "3\r\nabc\r\n0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n",
    };

    public static TheoryData<string, RejectReason> InvalidBodies => new()
    {
        { "x\r\n", RejectReason.InvalidChunkSize },
        { "\r\n", RejectReason.InvalidChunkSize },
        { "-1\r\n", RejectReason.InvalidChunkSize },
        { "1000000000000000\r\n", RejectReason.InvalidChunkSize },
        { "5;ext\nhello", RejectReason.InvalidChunkExtension },
        { "5;ext\rxhello", RejectReason.InvalidChunkExtension },
        { "5\rhello", RejectReason.InvalidChunkExtension },
        { "5\r\nhelloXX", RejectReason.MissingChunkTerminator },
        { "5\r\nhello\rX", RejectReason.MissingChunkTerminator },
        { "0\r\nBad Trailer\u0001\r\n\r\n", RejectReason.InvalidTrailer },
        { "0\r\n\rX", RejectReason.InvalidTrailer },
        { "400\r\n", RejectReason.BodyTooLarge },
    };

    [Theory]
    [MemberData(nameof(ValidBodies))]
    public void Feed_ValidBodyInAnyPieces_EndsExactlyAtItsEnd(string body)
    {
        var bytes = HttpRequestParserTests.Latin1(body + "GET /next");
        int bodyLength = body.Length;
        for (int split = 0; split <= bodyLength; split++)
        {
            var reader = new ChunkedReader(1000, 1000);
            Assert.True(reader.Feed(bytes.AsSpan(0, split), out int c1, out _));
            Assert.Equal(split, c1);
            Assert.True(reader.Feed(bytes.AsSpan(split), out int c2, out var reason), reason.ToString());
            Assert.True(reader.IsDone);
            Assert.Equal(bodyLength, c1 + c2);
        }
    }

    [Theory]
    [MemberData(nameof(InvalidBodies))]
    public void Feed_InvalidBody_IsRejectedWithItsReason(string body, RejectReason expected)
    {
        var reader = new ChunkedReader(1000, 1000);
        Assert.False(reader.Feed(HttpRequestParserTests.Latin1(body), out _, out var reason));
        Assert.Equal(expected, reason);
    }

    [Fact]
    public void Feed_CountsDecodedDataBytes()
    {
        var reader = new ChunkedReader(1000, 1000);
        Assert.True(reader.Feed(HttpRequestParserTests.Latin1("5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"), out _, out _));
        Assert.Equal(15, reader.DataBytes);
    }
}
