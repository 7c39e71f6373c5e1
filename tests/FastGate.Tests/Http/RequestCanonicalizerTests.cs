using System.Text;
using FastGate.Http;

namespace FastGate.Tests.Http;

/// <summary>The canonical view the parser attaches to every request: path, host and underscore header names.</summary>
public class RequestCanonicalizerTests
{
    private static (ParseStatus Status, RejectReason Reason, RequestHead Head) Parse(string target, string host = "h", string headers = "",
        EscapedSlashAction slashes = EscapedSlashAction.Reject, UnderscoreHeaderAction underscores = UnderscoreHeaderAction.Drop)
    {
        var head = new RequestHead();
        var bytes = Encoding.ASCII.GetBytes($"GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n");
        var limits = HttpLimits.Default with { EscapedSlashes = slashes, UnderscoreHeaders = underscores };
        var status = HttpRequestParser.TryParse(bytes, limits, head, out _, out var reason);
        return (status, reason, head);
    }

    [Theory]
    [InlineData("/a/b", "/a/b", false)]
    [InlineData("//a//b/", "/a/b/", true)]
    [InlineData("/%61/%62", "/a/b", true)]
    [InlineData("/%7e%2D%2e%5F", "/~-._", true)]
    [InlineData("/a%20b", "/a%20b", false)]
    [InlineData("/a%3fb%3F", "/a%3Fb%3F", true)]
    [InlineData("/a%25", "/a%25", false)]
    [InlineData("/a?x=%2e%2e//", "/a", false)]
    [InlineData("http://h/%61", "/a", true)]
    [InlineData("http://h", "/", false)]
    public void Path_IsCanonical(string target, string canonical, bool changed)
    {
        var (status, reason, head) = Parse(target);
        Assert.True(status == ParseStatus.Complete, reason.ToString());
        Assert.Equal(canonical, Encoding.ASCII.GetString(head.CanonicalPath));
        Assert.Equal(changed, head.PathWasNormalized);
    }

    [Theory]
    [InlineData("/a%2Fb", RejectReason.EncodedSlash)]
    [InlineData("/a%2fb", RejectReason.EncodedSlash)]
    [InlineData("/a%5Cb", RejectReason.EncodedSlash)]
    [InlineData("/%2e", RejectReason.InvalidRequestTarget)]
    [InlineData("/a/%2E%2e/b", RejectReason.InvalidRequestTarget)]
    [InlineData("/a/.%2e", RejectReason.InvalidRequestTarget)]
    [InlineData("/a%00", RejectReason.InvalidRequestTarget)]
    [InlineData("/a/../b", RejectReason.InvalidRequestTarget)]
    public void Path_Refused(string target, RejectReason expected)
    {
        var (status, reason, _) = Parse(target);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(expected, reason);
        Assert.Equal(400, RejectReasons.StatusCode(reason));
    }

    [Theory]
    [InlineData(EscapedSlashAction.Keep, "/a%2fb%5c", "/a%2Fb%5C")]
    [InlineData(EscapedSlashAction.Decode, "/a%2fb%5Cc", "/a/b/c")]
    [InlineData(EscapedSlashAction.Decode, "/a%2F%2Fb", "/a/b")]
    public void EscapedSlashes_KeepOrDecode(EscapedSlashAction action, string target, string canonical)
    {
        var (status, reason, head) = Parse(target, slashes: action);
        Assert.True(status == ParseStatus.Complete, reason.ToString());
        Assert.Equal(canonical, Encoding.ASCII.GetString(head.CanonicalPath));
    }

    [Fact]
    public void EscapedSlashesDecode_CannotBuildADotSegment()
    {
        var (status, reason, _) = Parse("/a%2F..%2Fb", slashes: EscapedSlashAction.Decode);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(RejectReason.InvalidRequestTarget, reason);
    }

    [Theory]
    [InlineData("Example.COM", "example.com", "example.com")]
    [InlineData("example.com.", "example.com", "example.com")]
    [InlineData("Example.com.:8443", "example.com", "example.com:8443")]
    [InlineData("[::1]:80", "[::1]", "[::1]:80")]
    [InlineData("10.0.0.1", "10.0.0.1", "10.0.0.1")]
    public void Host_IsCanonical(string host, string canonicalHost, string authority)
    {
        var (status, reason, head) = Parse("/", host);
        Assert.True(status == ParseStatus.Complete, reason.ToString());
        Assert.Equal(canonicalHost, Encoding.ASCII.GetString(head.CanonicalHost));
        Assert.Equal(authority, Encoding.ASCII.GetString(head.CanonicalAuthority));
    }

    [Theory]
    [InlineData("a..b")]
    [InlineData("%61.example")]
    [InlineData(".")]
    public void Host_Refused(string host)
    {
        var (status, reason, _) = Parse("/", host);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(RejectReason.InvalidHost, reason);
    }

    [Theory]
    [InlineData("X_Consumer_Id: a\r\n", true)]
    [InlineData("x_consumer_ID: a\r\n", true)]
    [InlineData("X-Consumer_Id: a\r\n", true)]
    [InlineData("X_Forwarded_For: a\r\n", true)]
    [InlineData("Content_Length: 5\r\n", true)]
    [InlineData("My_Header: a\r\n", false)]
    [InlineData("X_Consumer_Idx: a\r\n", false)]
    public void UnderscoreNames_OfProtectedHeaders_AreMarked(string header, bool spoofed)
    {
        var (status, reason, head) = Parse("/", headers: header);
        Assert.True(status == ParseStatus.Complete, reason.ToString());
        Assert.Equal(spoofed, head.Headers.ToArray().Any(h => h.Known == KnownHeader.Spoofed));
        var (rejected, why, _) = Parse("/", headers: header, underscores: UnderscoreHeaderAction.Reject);
        Assert.Equal(spoofed ? ParseStatus.Error : ParseStatus.Complete, rejected);
        if (spoofed) Assert.Equal(RejectReason.UnderscoreHeader, why);
        var (_, _, all) = Parse("/", headers: header, underscores: UnderscoreHeaderAction.DropAll);
        Assert.Contains(all.Headers.ToArray(), h => h.Known == KnownHeader.Spoofed);
    }

    [Fact]
    public void SplitAtEveryByte_GivesTheSameCanonicalView()
    {
        var text = "GET //%61pi/%7ex HTTP/1.1\r\nHost: API.Example.:81\r\nX_Consumer_Id: z\r\n\r\n";
        var bytes = Encoding.ASCII.GetBytes(text);
        for (int split = 1; split < bytes.Length; split++)
        {
            var first = new Segment(bytes.AsMemory(0, split));
            var last = first.Append(bytes.AsMemory(split));
            var sequence = new System.Buffers.ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
            var head = new RequestHead();
            Assert.Equal(ParseStatus.Complete, HttpRequestParser.TryParse(sequence, HttpLimits.Default, head, out _, out _));
            Assert.Equal("/api/~x", Encoding.ASCII.GetString(head.CanonicalPath));
            Assert.Equal("api.example:81", Encoding.ASCII.GetString(head.CanonicalAuthority));
            Assert.Equal(KnownHeader.Spoofed, head.Headers[1].Known);
        }
    }

    private sealed class Segment : System.Buffers.ReadOnlySequenceSegment<byte>
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
