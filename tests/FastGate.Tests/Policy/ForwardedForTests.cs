using System.Net;
using System.Text;
using FastGate.Policy;

namespace FastGate.Tests.Policy;

/// <summary>X-Forwarded-For resolution and the byte-level address parser/formatter it uses.</summary>
public class ForwardedForTests
{
    private static CidrSet Trusted(params string[] cidrs) =>
        CidrSet.Build(cidrs.Select(c => Cidr.TryParse(c, out var r, out var e) ? r : throw new ArgumentException(e)));

    private static string? Resolve(string[] xff, params string[] trusted)
    {
        var head = PolicyTestKit.Request("GET", "/", headers: xff.Select(v => "X-Forwarded-For: " + v).ToArray());
        var text = new byte[ForwardedFor.MaxTextLength];
        if (!ForwardedFor.TryResolve(head, Trusted(trusted), text, out var client, out int length)) return null;
        var s = Encoding.ASCII.GetString(text, 0, length);
        Assert.Equal(PolicyTestKit.Ip(s), client); // the text and the address agree
        return s;
    }

    [Theory]
    // the right-most untrusted address is the client; what a client wrote further left is ignored
    [InlineData(new[] { "203.0.113.9, 127.0.0.1" }, "203.0.113.9")]
    [InlineData(new[] { "1.2.3.4, 198.51.100.7" }, "198.51.100.7")]
    [InlineData(new[] { "1.2.3.4, 198.51.100.7, 10.1.2.3, 10.0.0.1" }, "198.51.100.7")]
    // several header lines read as one list, last line last
    [InlineData(new[] { "1.2.3.4", "198.51.100.7, 10.0.0.1" }, "198.51.100.7")]
    [InlineData(new[] { "198.51.100.7", "10.0.0.1" }, "198.51.100.7")]
    // all trusted: the left-most
    [InlineData(new[] { "10.0.0.9, 10.0.0.1" }, "10.0.0.9")]
    // malformed entries stop the walk: the last address read before them, else no client (the peer)
    [InlineData(new[] { "203.0.113.9, garbage" }, null)]
    [InlineData(new[] { "garbage, 203.0.113.9" }, "203.0.113.9")]
    [InlineData(new[] { "203.0.113.9, unknown, 10.0.0.1" }, "10.0.0.1")]
    [InlineData(new[] { "203.0.113.9, , 10.0.0.1" }, "10.0.0.1")]
    [InlineData(new[] { "203.0.113.9,10.0.0.1," }, null)]
    [InlineData(new[] { "" }, null)]
    [InlineData(new[] { "fe80::1%eth0" }, null)]
    [InlineData(new[] { "example.com" }, null)]
    // ports, brackets, IPv6 (canonical text), IPv4-mapped as IPv4
    [InlineData(new[] { "203.0.113.9:4711" }, "203.0.113.9")]
    [InlineData(new[] { "[2001:DB8:0:0::1]:443, 10.0.0.1" }, "2001:db8::1")]
    [InlineData(new[] { "2001:db8::1" }, "2001:db8::1")]
    [InlineData(new[] { "::ffff:203.0.113.9" }, "203.0.113.9")]
    [InlineData(new[] { "  203.0.113.9\t" }, "203.0.113.9")]
    public void Resolve_FollowsTheRightmostUntrustedRule(string[] xff, string? expected) =>
        Assert.Equal(expected, Resolve(xff, "10.0.0.0/8", "127.0.0.1/32"));

    [Fact]
    public void Resolve_WithoutTheHeader_IsNoClient()
    {
        var head = PolicyTestKit.Request("GET", "/");
        Assert.False(ForwardedFor.TryResolve(head, Trusted("127.0.0.1/32"), new byte[ForwardedFor.MaxTextLength], out _, out _));
    }

    [Fact]
    public void Resolve_AllocatesNothing()
    {
        var head = PolicyTestKit.Request("GET", "/", headers: ["X-Forwarded-For: 1.2.3.4, [2001:db8::7]:80, 10.0.0.1"]);
        var trusted = Trusted("10.0.0.0/8");
        var text = new byte[ForwardedFor.MaxTextLength];
        ForwardedFor.TryResolve(head, trusted, text, out _, out _);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) ForwardedFor.TryResolve(head, trusted, text, out _, out _);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Theory]
    [InlineData("1.2.3")]
    [InlineData("1.2.3.4.5")]
    [InlineData("01.2.3.4")]
    [InlineData("256.1.1.1")]
    [InlineData("1.2.3.4:")]
    [InlineData("1.2.3.4:99999")]
    [InlineData("0x1.2.3.4")]
    [InlineData("1:2:3:4:5:6:7:8:9")]
    [InlineData("1::2::3")]
    [InlineData(":1::")]
    [InlineData("1:2:3:4:5:6:7:")]
    [InlineData("12345::")]
    [InlineData("[::1")]
    [InlineData("[::1]x")]
    [InlineData("::1.2.3.4.5")]
    [InlineData("1:2:3:4:5:6:7:1.2.3.4")]
    [InlineData("1:2:3:4:5:6:7:8::")]
    public void Parse_RejectsMalformedText(string text) =>
        Assert.False(AddressText.TryParse(Encoding.ASCII.GetBytes(text), out _));

    [Fact]
    public void ParseAndFormat_AgreeWithIPAddress_OnRandomAddresses()
    {
        var random = new Random(5);
        var text = new byte[ForwardedFor.MaxTextLength];
        for (int i = 0; i < 20_000; i++)
        {
            var bytes = new byte[i % 3 == 0 ? 4 : 16];
            random.NextBytes(bytes);
            if (bytes.Length == 16)
            {
                // zero runs of random length and place, so compression is exercised
                int start = random.Next(16), length = random.Next(17 - start);
                Array.Clear(bytes, start, length);
                if (i % 7 == 0) Array.Clear(bytes, random.Next(16), random.Next(1, 3) & 1);
            }
            var ip = new IPAddress(bytes);
            var expected = ClientAddress.From(ip);
            foreach (var form in Forms(ip, random))
            {
                Assert.True(AddressText.TryParse(Encoding.ASCII.GetBytes(form), out var parsed), form);
                Assert.Equal(expected, parsed);
            }
            int n = AddressText.Format(expected, text);
            var formatted = Encoding.ASCII.GetString(text, 0, n);
            var dotnet = (ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip).ToString();
            if (!dotnet.Contains('.') || expected.IsIPv4) Assert.Equal(dotnet, formatted); // .NET writes a few IPv6 ranges with a dotted tail
            Assert.Equal(expected, ClientAddress.From(IPAddress.Parse(formatted)));
        }
    }

    private static IEnumerable<string> Forms(IPAddress ip, Random random)
    {
        var s = ip.ToString();
        yield return s;
        yield return ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? s + ":" + random.Next(65536) : "[" + s + "]:" + random.Next(65536);
        if (ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            yield return "[" + s + "]";
            yield return s.ToUpperInvariant();
            // the full form: eight groups with leading zeros
            var b = ip.GetAddressBytes();
            yield return string.Join(":", Enumerable.Range(0, 8).Select(g => ((b[g * 2] << 8) | b[g * 2 + 1]).ToString("x4")));
        }
    }

    [Fact]
    public void Parse_AcceptsOnlyWhatIPAddressAccepts_OnRandomText()
    {
        var random = new Random(11);
        const string alphabet = "0123456789abcdefABCDEF:.:[]%";
        for (int i = 0; i < 200_000; i++)
        {
            var chars = new char[random.Next(1, 24)];
            for (int k = 0; k < chars.Length; k++) chars[k] = alphabet[random.Next(alphabet.Length)];
            var text = new string(chars);
            if (!AddressText.TryParse(Encoding.ASCII.GetBytes(text), out var parsed)) continue;
            // strip a port the way the parser allows it, then IPAddress must agree
            string bare = text.StartsWith('[') ? text[1..text.IndexOf(']')] : text.Count(c => c == ':') == 1 ? text[..text.IndexOf(':')] : text;
            Assert.True(IPAddress.TryParse(bare, out var ip), text);
            Assert.Equal(ClientAddress.From(ip!), parsed);
        }
    }
}
