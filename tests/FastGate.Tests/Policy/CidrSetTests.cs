using System.Net;
using FastGate.Configuration;
using FastGate.Policy;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Policy;

public class CidrSetTests
{
    private static (string Text, UInt128 Start, UInt128 End) RandomCidr(Random rng, bool v6)
    {
        var bytes = new byte[v6 ? 16 : 4];
        rng.NextBytes(bytes);
        int bits = v6 ? rng.Next(8, 129) : rng.Next(12, 33);
        for (int i = 0; i < bytes.Length * 8; i++)
            if (i >= bits) bytes[i / 8] &= (byte)~(0x80 >> (i % 8));
        var ip = new IPAddress(bytes);
        var start = ClientAddress.From(ip).Value;
        int hostBits = bytes.Length * 8 - bits;
        UInt128 mask = hostBits == 0 ? UInt128.Zero : (UInt128.One << hostBits) - 1;
        return ($"{ip}/{bits}", start, start | mask);
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public void Contains_AgreesWithNaiveScan_OnRandomData(bool v6, int seed)
    {
        var rng = new Random(seed);
        var cidrs = Enumerable.Range(0, 2000).Select(_ => RandomCidr(rng, v6)).ToList();
        var ranges = new List<AddressRange>();
        foreach (var c in cidrs)
        {
            Assert.True(Cidr.TryParse(c.Text, out var r, out var error), error);
            Assert.Equal((c.Start, c.End), (r.Start, r.End));
            ranges.Add(r);
        }
        var set = CidrSet.Build(ranges);
        int hits = 0;
        for (int i = 0; i < 20000; i++)
        {
            UInt128 probe;
            if (i % 3 == 0)
            {
                // Near a boundary of some range: the start, the end, one before, one after.
                var c = cidrs[rng.Next(cidrs.Count)];
                probe = (i / 3 % 4) switch { 0 => c.Start, 1 => c.End, 2 => c.Start - 1, _ => c.End + 1 };
            }
            else
            {
                var bytes = new byte[v6 ? 16 : 4];
                rng.NextBytes(bytes);
                probe = ClientAddress.From(new IPAddress(bytes)).Value;
            }
            bool expected = cidrs.Any(c => c.Start <= probe && probe <= c.End);
            Assert.Equal(expected, set.Contains(probe));
            if (expected) hits++;
        }
        Assert.InRange(hits, 1000, 19000); // the data exercises both outcomes
    }

    [Fact]
    public void Build_MergesOverlappingAndAdjacentRanges()
    {
        Assert.True(Cidr.TryParse("10.0.0.0/9", out var a, out _));
        Assert.True(Cidr.TryParse("10.128.0.0/9", out var b, out _));
        Assert.True(Cidr.TryParse("10.1.0.0/16", out var c, out _));
        var set = CidrSet.Build([a, b, c]);
        Assert.Equal(1, set.RangeCount);
        Assert.True(set.Contains(Ip("10.255.255.255").Value));
        Assert.False(set.Contains(Ip("11.0.0.0").Value));
    }

    [Theory]
    [InlineData("0.0.0.0/0", "255.255.255.255", true)]
    [InlineData("0.0.0.0/0", "::1", false)]
    [InlineData("::/0", "::1", true)]
    [InlineData("::/0", "1.2.3.4", true)] // IPv4 lives in ::ffff:0:0/96
    [InlineData("::ffff:0:0/96", "1.2.3.4", true)]
    [InlineData("192.0.2.1", "192.0.2.1", true)]
    [InlineData("192.0.2.1", "192.0.2.2", false)]
    [InlineData("2001:db8::/32", "2001:db8:ffff::1", true)]
    [InlineData("2001:db8::/32", "2001:db9::1", false)]
    public void Edges(string cidr, string ip, bool contained)
    {
        Assert.True(Cidr.TryParse(cidr, out var r, out var error), error);
        Assert.Equal(contained, CidrSet.Build([r]).Contains(Ip(ip).Value));
    }

    [Fact]
    public void IpListFile_LoadsRelativeToBaseDirectory_WithCommentsAndBlankLines()
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-iplist-");
        try
        {
            var rng = new Random(7);
            var lines = new List<string> { "# blocklist", "", "198.51.100.0/24   # a comment", "2001:db8:bad::/48" };
            for (int i = 0; i < 100_000; i++) lines.Add($"{rng.Next(1, 224)}.{rng.Next(256)}.{rng.Next(256)}.{rng.Next(256)}");
            File.WriteAllLines(Path.Combine(dir.FullName, "block.txt"), lines);
            var config = ConfigLoader.Load("{" + Base + """
                , "ipLists": [ { "id": "block", "file": "block.txt" } ],
                "policies": [ { "id": "deny-block", "match": { "clientIps": ["block"] }, "actions": [ { "type": "deny" } ] } ]
                }
                """);
            // The loader validates relative to "." (not the temp dir), so the file is missing there.
            Assert.Contains(config.Errors, e => e.Path == "$.ipLists[0].file" && e.Message.Contains("cannot read"));
            var errors = new List<ConfigError>();
            var bound = new GatewayConfig
            {
                IpLists = [new IpListConfig { Id = "block", File = "block.txt" }],
                Policies = [new PolicyRuleConfig { Id = "deny-block", Match = new PolicyMatchConfig { ClientIps = ["block"] }, Actions = [new PolicyActionConfig { Type = "deny" }] }],
                BaseDirectory = dir.FullName,
            };
            FastGate.Policy.PolicyValidator.Validate(bound, errors);
            Assert.Empty(errors);
            var policy = PolicyCompiler.Compile(bound, []);
            Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/"), "198.51.100.77").Verdict);
            Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/"), "2001:db8:bad::1").Verdict);
            Assert.Equal(PolicyVerdict.Deny, Evaluate(policy, Request("GET", "/"), lines[^1]).Verdict);
            Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/"), "2001:db8:bae::1").Verdict);
            Assert.Equal(PolicyVerdict.Allow, Evaluate(policy, Request("GET", "/"), "240.0.0.1").Verdict);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void IpListFile_MalformedLines_ReportedWithLineNumbers()
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-iplist-");
        try
        {
            File.WriteAllLines(Path.Combine(dir.FullName, "bad.txt"), ["10.0.0.0/8", "# ok", "10.0.0.1/8", "nonsense"]);
            var errors = new List<ConfigError>();
            FastGate.Policy.PolicyValidator.Validate(new GatewayConfig { IpLists = [new IpListConfig { Id = "l", File = "bad.txt" }], BaseDirectory = dir.FullName }, errors);
            Assert.Equal(2, errors.Count);
            Assert.Equal("$.ipLists[0].file", errors[0].Path);
            // the line's text is never echoed (the file may be a key or /etc/passwd): its number and what is wrong
            Assert.Equal("bad.txt line 3: the entry has host bits set", errors[0].Message);
            Assert.StartsWith("bad.txt line 4: the entry is not a CIDR", errors[1].Message);
            Assert.DoesNotContain("nonsense", errors[1].Message);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
