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
        "5;a;b=c ; d = \"e\"\r\nhello\r\n0;last\r\n\r\n",
        "1;a=" + new string('b', 900) + "\r\nx\r\n0\r\n\r\n",
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
        // a chunk extension needs a name after each ';' (RFC 9112 7.1.1)
        { "5;\r\nhello", RejectReason.InvalidChunkExtension },
        { "5 ;\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;;a\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;a;\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;=x\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;a=\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;a=b=c\r\nhello", RejectReason.InvalidChunkExtension },
        { "5;a=\"q\"x\r\nhello", RejectReason.InvalidChunkExtension },
        // a chunk line (size and extensions) is bounded
        { "1;a=" + new string('b', ChunkedReader.MaxChunkLineBytes) + "\r\nx", RejectReason.ChunkExtensionTooLong },
        { "1;" + new string('b', 50_000), RejectReason.ChunkExtensionTooLong },
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

    [Fact]
    public void Feed_ChunkLineOverTheBound_IsRejectedEvenFedByteByByte()
    {
        var reader = new ChunkedReader(1 << 30, 1000);
        var line = HttpRequestParserTests.Latin1("1;" + new string('a', 10_000));
        int fed = 0;
        RejectReason reason = RejectReason.None;
        for (; fed < line.Length; fed++)
            if (!reader.Feed(line.AsSpan(fed, 1), out _, out reason)) break;
        Assert.Equal(RejectReason.ChunkExtensionTooLong, reason);
        Assert.True(fed <= ChunkedReader.MaxChunkLineBytes, $"rejected only after {fed} bytes");
    }

    [Fact]
    public void Feed_ChunkExtensionsCountTowardTheBodyLimit()
    {
        // 20 one-byte chunks, each with a 100-byte extension: 20 data bytes, but 2,000+ bytes of chunk lines
        var body = string.Concat(Enumerable.Repeat("1;e=" + new string('x', 100) + "\r\nd\r\n", 20)) + "0\r\n\r\n";
        var reader = new ChunkedReader(1000, 1000);
        Assert.False(reader.Feed(HttpRequestParserTests.Latin1(body), out _, out var reason));
        Assert.Equal(RejectReason.BodyTooLarge, reason);
    }

    [Fact]
    public void Feed_TrailerStart_IsWhereTheTrailerSectionBeganInTheLastFeed()
    {
        var body = HttpRequestParserTests.Latin1("3\r\nabc\r\n0\r\nX-A: 1\r\n\r\n");
        const int trailers = 11; // after "3\r\nabc\r\n0\r\n"
        for (int split = 0; split <= body.Length; split++)
        {
            var reader = new ChunkedReader(1000, 1000);
            Assert.True(reader.Feed(body.AsSpan(0, split), out _, out _));
            Assert.Equal(split >= trailers, reader.InTrailers);
            Assert.Equal(split >= trailers ? trailers : -1, reader.TrailerStart);
            Assert.True(reader.Feed(body.AsSpan(split), out int consumed, out _));
            Assert.True(reader.IsDone);
            Assert.Equal(split >= trailers ? -1 : trailers - split, reader.TrailerStart);
            Assert.Equal(body.Length - split, consumed);
        }
    }
}

public class ChunkedReaderAllocationTests
{
    [Fact]
    public void Feed_WithExtensionsAndTrailers_AllocatesNothing()
    {
        var body = HttpRequestParserTests.Latin1("5;a=b;c=\"d\"\r\nhello\r\n3\r\nabc\r\n0\r\nX-A: 1\r\nSet-Cookie: x\r\n\r\n");
        for (int warm = 0; warm < 10; warm++) Run(body);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) Run(body);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        static void Run(byte[] body)
        {
            var reader = new ChunkedReader(1 << 20, 1000);
            for (int i = 0; i < body.Length; i += 7)
                Assert.True(reader.Feed(body.AsSpan(i, Math.Min(7, body.Length - i)), out _, out _));
            Assert.True(reader.IsDone);
        }
    }
}
