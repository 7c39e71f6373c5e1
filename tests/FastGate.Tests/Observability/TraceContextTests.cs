using System.Text;
using FastGate.Observability;

namespace FastGate.Tests.Observability;

public class TraceContextTests
{
    private const string Valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    [Theory]
    [InlineData(Valid, true)]
    [InlineData("  " + Valid + " ", true)]
    [InlineData("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true)]
    [InlineData("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false)] // version 00 is exactly 55 bytes
    [InlineData("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false)]
    [InlineData("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false)]
    [InlineData("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false)]
    [InlineData("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false)] // upper case
    [InlineData("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false)]
    [InlineData("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false)]
    [InlineData("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false)]
    [InlineData("", false)]
    public void TryParse_FollowsTheSpec(string value, bool valid)
    {
        Assert.Equal(valid, TraceContext.TryParse(Encoding.ASCII.GetBytes(value), out var p));
        if (valid) Assert.Equal("4bf92f3577b34da6a3ce929d0e0e4736", p.TraceIdString());
    }

    [Fact]
    public void WriteOutgoing_ContinuesAValidTrace_WithANewParentId()
    {
        var dest = new byte[TraceContext.TraceParentLength];
        var used = TraceContext.WriteOutgoing(Encoding.ASCII.GetBytes(Valid), dest, new Random(1));
        var text = Encoding.ASCII.GetString(dest);
        Assert.StartsWith("00-4bf92f3577b34da6a3ce929d0e0e4736-", text);
        Assert.EndsWith("-01", text);
        Assert.NotEqual("00f067aa0ba902b7", text.Substring(36, 16));
        Assert.True(TraceContext.TryParse(dest, out var back));
        Assert.Equal(used, back);
    }

    [Theory]
    [InlineData("")]
    [InlineData("garbage")]
    [InlineData("00-00000000000000000000000000000000-00f067aa0ba902b7-01")]
    public void WriteOutgoing_StartsANewValidTrace_WhenTheIncomingOneIsMissingOrInvalid(string incoming)
    {
        var a = new byte[55];
        var b = new byte[55];
        TraceContext.WriteOutgoing(Encoding.ASCII.GetBytes(incoming), a, new Random(7));
        TraceContext.WriteOutgoing(Encoding.ASCII.GetBytes(incoming), b, new Random(8));
        Assert.True(TraceContext.TryParse(a, out var pa));
        Assert.True(TraceContext.TryParse(b, out var pb));
        Assert.NotEqual(pa.TraceIdString(), pb.TraceIdString());
        Assert.True(pa.Sampled);
    }

    [Fact]
    public void WriteOutgoing_IsSeedable_AndDoesNotAllocate()
    {
        var incoming = Encoding.ASCII.GetBytes(Valid);
        var dest = new byte[55];
        var random = new Random(3);
        TraceContext.WriteOutgoing(incoming, dest, random); // warm up
        TraceContext.WriteOutgoing([], dest);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            TraceContext.WriteOutgoing(incoming, dest, random);
            TraceContext.WriteOutgoing([], dest);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        var x = new byte[55];
        var y = new byte[55];
        TraceContext.WriteOutgoing([], x, new Random(42));
        TraceContext.WriteOutgoing([], y, new Random(42));
        Assert.Equal(x, y);
    }
}
