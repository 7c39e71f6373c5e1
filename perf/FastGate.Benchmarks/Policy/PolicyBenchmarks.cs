using System.Net;
using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Routing;

namespace FastGate.Benchmarks.Policy;

/// <summary>
/// One policy decision (host dispatch, path trie, residual conditions, a 100,000-entry blocklist) at 10, 1,000 and
/// 10,000 rules, against a naive first-match linear scan over the same compiled rules. Must be 0 B/op.
/// </summary>
[MemoryDiagnoser]
public class PolicyDecisionBenchmarks
{
    private const int Requests = 5;

    [Params(10, 1_000, 10_000)]
    public int Rules { get; set; }

    private CompiledPolicy _policy = null!;
    private readonly RequestHead[] _heads = Enumerable.Range(0, Requests).Select(_ => new RequestHead()).ToArray();
    private readonly ClientAddress[] _clients = new ClientAddress[Requests];
    private readonly PolicyResult _result = new();

    [GlobalSetup]
    public void Setup()
    {
        var config = PolicyRuleSets.Generate(Rules, blocklistEntries: 100_000, seed: 42);
        _policy = PolicyCompiler.Compile(config, ["web"]);
        // Requests that match rules in the middle and near the end, one that matches nothing, and one from the blocklist.
        var requests = new[]
        {
            PolicyRuleSets.RequestFor(config.Policies[Rules / 2]),
            PolicyRuleSets.RequestFor(config.Policies[Rules - 1]),
            PolicyRuleSets.RequestFor(config.Policies[Rules * 3 / 4]),
            ("GET /nothing/here?x=1 HTTP/1.1\r\nHost: unknown.example.org\r\nUser-Agent: bench\r\n\r\n", "198.18.0.1"),
            ("GET /svc1/v1/x HTTP/1.1\r\nHost: svc1.example.com\r\n\r\n", PolicyRuleSets.BlockedAddress),
        };
        for (int i = 0; i < Requests; i++)
        {
            var status = HttpRequestParser.TryParse(Encoding.ASCII.GetBytes(requests[i].Item1), HttpLimits.Default, _heads[i], out _, out var reason);
            if (status != ParseStatus.Complete) throw new InvalidOperationException($"{status} {reason}: {requests[i].Item1}");
            _clients[i] = ClientAddress.From(IPAddress.Parse(requests[i].Item2));
        }
        // The two evaluators must agree on the verdicts.
        for (int i = 0; i < Requests; i++)
        {
            _policy.Evaluate(new RequestFacts(_heads[i], _clients[i], 0), _result);
            int naive = NaiveFirstMatch(_policy, new RequestFacts(_heads[i], _clients[i], 0));
            if (naive != _result.DecidingRule) throw new InvalidOperationException($"request {i}: naive {naive} vs compiled {_result.DecidingRule}");
        }
    }

    [Benchmark(OperationsPerInvoke = Requests)]
    public int Compiled()
    {
        int sum = 0;
        for (int i = 0; i < Requests; i++)
        {
            _policy.Evaluate(new RequestFacts(_heads[i], _clients[i], 0), _result);
            sum += _result.DecidingRule;
        }
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Requests)]
    public int NaiveLinearScan()
    {
        int sum = 0;
        for (int i = 0; i < Requests; i++) sum += NaiveFirstMatch(_policy, new RequestFacts(_heads[i], _clients[i], 0));
        return sum;
    }

    /// <summary>The reference: check every rule's whole condition in order; the first matching allow/deny/respond decides.</summary>
    private static int NaiveFirstMatch(CompiledPolicy policy, in RequestFacts facts)
    {
        var head = facts.Head;
        var path = head.Path.IsEmpty ? "/"u8 : head[head.Path];
        Span<ByteRange> segments = stackalloc ByteRange[path.Length / 2 + 1];
        int n = RequestPath.Segment(path, segments);
        var view = new RequestView(head, Router.HostWithoutPort(head[head.Host]), path, segments[..n], facts.Client, facts.RouteIndex);
        var rules = policy.Rules;
        for (int i = 0; i < rules.Length; i++)
        {
            var rule = rules[i];
            if (rule.Decision != RuleDecision.None && rule.Mode == PolicyMode.Enforce && rule.Match.MatchesAll(view)) return i;
        }
        return -1;
    }
}

/// <summary>Membership in a 100,000-entry CIDR set (merged sorted ranges, binary search).</summary>
[MemoryDiagnoser]
public class PolicyCidrBenchmarks
{
    private CidrSet _set = null!;
    private readonly UInt128[] _probes = new UInt128[64];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        var ranges = new List<AddressRange>();
        foreach (var c in PolicyRuleSets.RandomCidrs(rng, 100_000))
        {
            Cidr.TryParse(c, out var r, out _);
            ranges.Add(r);
        }
        _set = CidrSet.Build(ranges);
        for (int i = 0; i < _probes.Length; i++)
            _probes[i] = ClientAddress.From(new IPAddress(BitConverter.GetBytes(rng.Next()))).Value;
    }

    [Benchmark(OperationsPerInvoke = 64)]
    public int Contains100k()
    {
        int hits = 0;
        foreach (var p in _probes) if (_set.Contains(p)) hits++;
        return hits;
    }
}

/// <summary>Realistic generated rule sets: distinct services (hosts and path prefixes), some header, method and CIDR conditions.</summary>
public static class PolicyRuleSets
{
    public const string BlockedAddress = "192.0.2.55";

    public static IEnumerable<string> RandomCidrs(Random rng, int count)
    {
        for (int i = 0; i < count; i++)
        {
            // Mostly single addresses and /24s in 1.0.0.0-223.255.255.255, some IPv6 /48s.
            int kind = rng.Next(10);
            if (kind < 6) yield return $"{rng.Next(1, 224)}.{rng.Next(256)}.{rng.Next(256)}.{rng.Next(256)}";
            else if (kind < 9) yield return $"{rng.Next(1, 224)}.{rng.Next(256)}.{rng.Next(256)}.0/24";
            else yield return $"2001:db8:{rng.Next(65536):x}::/48";
        }
    }

    public static GatewayConfig Generate(int rules, int blocklistEntries, int seed)
    {
        var rng = new Random(seed);
        int hosts = Math.Max(2, rules / 10);
        var policies = new List<PolicyRuleConfig>
        {
            new()
            {
                Id = "blocklist",
                Match = new PolicyMatchConfig { ClientIps = ["blocklist"] },
                Actions = [new PolicyActionConfig { Type = "deny", Status = 403 }],
            },
        };
        for (int i = 1; i < rules; i++)
        {
            var hostList = (i % 10) switch
            {
                < 7 => new[] { $"svc{i % hosts}.example.com" },
                7 => [$"*.zone{i % hosts}.example.com"],
                _ => [],
            };
            string path = (i % 4) switch
            {
                0 => $"/svc{i}/v1/*",
                1 => $"/svc{i}/health",
                2 => $"/svc{i}/users/{{id}}",
                _ => $"/svc{i}/orders/{{id}}/items/*",
            };
            var action = (i % 3) switch
            {
                0 => new PolicyActionConfig { Type = "deny", Status = 403, Message = "forbidden" },
                1 => new PolicyActionConfig { Type = "allow" },
                _ => new PolicyActionConfig { Type = "setRequestHeaders", Headers = [KeyValuePair.Create("X-Svc", i.ToString())] },
            };
            policies.Add(new PolicyRuleConfig
            {
                Id = "rule-" + i,
                Match = new PolicyMatchConfig
                {
                    Hosts = hostList,
                    Paths = [path],
                    Methods = i % 5 == 0 ? ["GET", "POST"] : [],
                    Headers = i % 5 == 1 ? [new FieldMatchConfig { Name = "X-Tenant", EqualTo = "t" + i }] : [],
                    ClientIps = i % 10 == 3 ? [$"10.{i % 256}.0.0/16", "2001:db8:ffff::/48"] : [],
                },
                Actions = [action],
                Mode = i % 50 == 49 ? PolicyMode.Report : PolicyMode.Enforce,
            });
        }
        return new GatewayConfig
        {
            Policies = policies,
            IpLists = [new IpListConfig { Id = "blocklist", Cidrs = RandomCidrs(rng, blocklistEntries - 1).Append(BlockedAddress).ToList() }],
        };
    }

    /// <summary>A request (text, client ip) that satisfies the rule's conditions.</summary>
    public static (string, string) RequestFor(PolicyRuleConfig rule)
    {
        var m = rule.Match;
        var host = m.Hosts.Count == 0 ? "any.example.net" : m.Hosts[0].Replace("*.", "edge.");
        var path = m.Paths[0].Replace("{id}", "42").Replace("/*", "/more/x");
        var sb = new StringBuilder($"GET {path}?page=2 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n");
        foreach (var h in m.Headers) sb.Append(h.Name).Append(": ").Append(h.EqualTo).Append("\r\n");
        sb.Append("\r\n");
        var ip = m.ClientIps.Count > 0 ? m.ClientIps[0].Replace("0.0/16", "3.4") : "198.18.0.9";
        return (sb.ToString(), ip);
    }
}
