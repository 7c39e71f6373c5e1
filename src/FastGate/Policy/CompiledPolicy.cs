using System.Buffers;
using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Routing;

namespace FastGate.Policy;

/// <summary>One explain line: a rule, whether its match held, its mode, and whether it decided the verdict.</summary>
public readonly record struct RuleExplanation(string RuleId, bool Matched, PolicyMode Mode, bool Deciding);

/// <summary>A rule in a trie leaf: its index, its method mask, and its residual conditions (null when there are none).</summary>
internal readonly record struct Candidate(int Rule, uint MethodMask, MatchCondition? Residual);

/// <summary>A path trie node: literal children, one "{x}" child, rules ending here and "/*" rules rooted here.</summary>
internal sealed class PathNode
{
    public ByteKeyTable<PathNode>? Children { get; init; }
    public PathNode? Wildcard { get; init; }
    public Candidate[] Exact { get; init; } = [];
    public Candidate[] Prefix { get; init; } = [];
}

/// <summary>
/// The compiled, immutable policy: host dispatch (exact table, "*.suffix" table, any host) → path trie whose
/// leaves hold candidates in rule order with a method mask → residual conditions. Evaluate allocates nothing and
/// takes no lock; only report-mode counters are written (Interlocked). Semantics: docs/policies.md.
/// </summary>
public sealed class CompiledPolicy
{
    private readonly CompiledRule[] _rules;
    private readonly ByteKeyTable<PathNode> _exactHosts;
    private readonly ByteKeyTable<PathNode> _suffixHosts;
    private readonly PathNode? _anyHost;
    private readonly long[] _reportCounts;

    internal CompiledPolicy(CompiledRule[] rules, ByteKeyTable<PathNode> exactHosts, ByteKeyTable<PathNode> suffixHosts,
        PathNode? anyHost, DefaultAction defaultAction)
    {
        _rules = rules;
        Rules = ImmutableArray.Create(rules);
        _exactHosts = exactHosts;
        _suffixHosts = suffixHosts;
        _anyHost = anyHost;
        DefaultAction = defaultAction;
        _reportCounts = new long[rules.Length];
        DefaultDenyResponseHead = PolicyCompiler.EncodeHead(403, "application/json", DefaultDenyResponseBody.Length);
    }

    public static CompiledPolicy Empty { get; } = new([], new ByteKeyTable<PathNode>([], true), new ByteKeyTable<PathNode>([], true), null, DefaultAction.Allow);

    /// <summary>The rules in config order; <see cref="PolicyResult.Matched"/> and <see cref="PolicyResult.DecidingRule"/> index into it.</summary>
    public ImmutableArray<CompiledRule> Rules { get; }
    public DefaultAction DefaultAction { get; }
    /// <summary>The response when <see cref="DefaultAction"/> is deny and no rule decided (Date inserted by the caller, like rule responses).</summary>
    public byte[] DefaultDenyResponseHead { get; }
    public byte[] DefaultDenyResponseBody { get; } = "{\"error\":\"forbidden\"}\n"u8.ToArray();

    /// <summary>How many times the report-mode rule at <paramref name="ruleIndex"/> matched since this policy was compiled.</summary>
    public long ReportCount(int ruleIndex) => Volatile.Read(ref _reportCounts[ruleIndex]);

    public void Evaluate(in RequestFacts facts, PolicyResult result) => Evaluate(facts, result, count: true);

    private void Evaluate(in RequestFacts facts, PolicyResult result, bool count)
    {
        result.Reset();
        var head = facts.Head;
        var host = head.CanonicalHost;
        var rawPath = head.CanonicalPath;
        ReadOnlySpan<byte> path = rawPath;
        if (rawPath.IndexOf((byte)'%') >= 0)
        {
            var buf = result.PathBuffer(rawPath.Length);
            path = buf.AsSpan(0, RequestPath.PercentDecode(rawPath, buf, plusAsSpace: false, keepSlash: true));
        }
        var segments = result.SegmentBuffer(path.Length / 2 + 1);
        int segmentCount = RequestPath.Segment(path, segments);
        result.PrepareSegmentHashes(segmentCount);
        var view = new RequestView(head, host, path, segments.AsSpan(0, segmentCount), facts.Client, facts.RouteIndex, facts.Consumer, facts.Device);

        // Host dispatch: the exact table, then the "*.suffix" table at each dot, then the any-host tree.
        if (_exactHosts.Count > 0 && _exactHosts.Find(host) is { } exact) Walk(exact, 0, view, result);
        for (int i = _suffixHosts.FindSuffix(host, 1, out var suffix); i >= 0; i = _suffixHosts.FindSuffix(host, i + 1, out suffix))
            Walk(suffix!, 0, view, result);
        if (_anyHost is not null) Walk(_anyHost, 0, view, result);
        Decide(result.ScratchSpan, result, count);
    }

    private static void Walk(PathNode node, int depth, scoped in RequestView v, PolicyResult matches)
    {
        while (true)
        {
            if (node.Prefix.Length > 0) Collect(node.Prefix, v, matches);
            if (depth == v.Segments.Length)
            {
                if (node.Exact.Length > 0) Collect(node.Exact, v, matches);
                return;
            }
            var s = v.Segments[depth];
            var children = node.Children;
            var child = children is null ? null : children.Find(v.Path.Slice(s.Start, s.Length), matches.SegmentHash(v.Path, v.Segments, depth));
            depth++;
            if (node.Wildcard is { } wildcard)
            {
                if (child is not null) Walk(child, depth, v, matches);
                node = wildcard;
            }
            else if (child is not null) node = child;
            else return;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Collect(Candidate[] candidates, scoped in RequestView v, PolicyResult matches)
    {
        foreach (ref readonly var c in candidates.AsSpan())
        {
            if ((c.MethodMask & v.MethodBit) == 0) continue;
            if (c.Residual is { } residual && !residual.MatchesResidual(v)) continue;
            matches.AddScratch(c.Rule);
        }
    }

    /// <summary>Orders the matched rules (candidates come from several leaves) and applies the semantics.</summary>
    private void Decide(Span<int> matched, PolicyResult result, bool count)
    {
        if (matched.Length > 1) SortSmall(matched);
        bool stopped = false;
        int previous = -1;
        foreach (int index in matched)
        {
            if (index == previous) continue;
            previous = index;
            var rule = _rules[index];
            if (rule.Mode == PolicyMode.Report)
            {
                result.ReportMatches++;
                if (count) Interlocked.Increment(ref _reportCounts[index]);
                continue;
            }
            if (stopped) continue;
            result.AddMatch(index);
            if (rule.RewritePath is not null && result.RewriteRule < 0) result.RewriteRule = index;
            if (rule.RouteToCluster is not null && result.RouteRule < 0) result.RouteRule = index;
            if (rule.Decision != RuleDecision.None && result.DecidingRule < 0)
            {
                result.DecidingRule = index;
                result.Verdict = rule.Decision switch
                {
                    RuleDecision.Allow => PolicyVerdict.Allow,
                    RuleDecision.Deny => PolicyVerdict.Deny,
                    _ => PolicyVerdict.Respond,
                };
                // A refused request goes no further: later rules contribute nothing.
                if (rule.Decision != RuleDecision.Allow) stopped = true;
            }
        }
        if (result.DecidingRule < 0) result.Verdict = DefaultAction == DefaultAction.Deny ? PolicyVerdict.Deny : PolicyVerdict.Allow;
    }

    private static void SortSmall(Span<int> items)
    {
        if (items.Length > 16)
        {
            items.Sort();
            return;
        }
        for (int i = 1; i < items.Length; i++)
        {
            int v = items[i], j = i - 1;
            while (j >= 0 && items[j] > v)
            {
                items[j + 1] = items[j];
                j--;
            }
            items[j + 1] = v;
        }
    }

    /// <summary>
    /// Whether a request's credentials satisfy the route's <c>auth</c> and the requireAuth action of every rule it
    /// matched (<paramref name="result"/> from <see cref="Evaluate"/>): any missing credential is 401 (Unauthenticated),
    /// else a missing scope or claim is 403 (Forbidden).
    /// </summary>
    public Security.AuthOutcome CheckAuthentication(Security.AuthRequirement? routeAuth, PolicyResult result, Security.ConsumerModel? consumer, bool hasDevice)
    {
        var outcome = routeAuth?.Check(consumer, hasDevice) ?? Security.AuthOutcome.Satisfied;
        if (outcome == Security.AuthOutcome.Unauthenticated) return outcome;
        foreach (int i in result.Matched)
        {
            if (Rules[i].RequireAuth is not { } requirement) continue;
            var o = requirement.Check(consumer, hasDevice);
            if (o == Security.AuthOutcome.Unauthenticated) return o;
            if (o == Security.AuthOutcome.Forbidden) outcome = o;
        }
        return outcome;
    }

    /// <summary>
    /// For the admin API: evaluates the request (filling <paramref name="result"/>, without counting report
    /// matches) and lists every rule with whether its match held, by a direct check of each rule (not the index).
    /// Allocates.
    /// </summary>
    public IReadOnlyList<RuleExplanation> Explain(in RequestFacts facts, PolicyResult result)
    {
        Evaluate(facts, result, count: false);
        var head = facts.Head;
        var rawPath = head.CanonicalPath;
        var buf = new byte[rawPath.Length];
        var path = buf.AsSpan(0, RequestPath.PercentDecode(rawPath, buf, plusAsSpace: false, keepSlash: true));
        var segments = new ByteRange[path.Length / 2 + 1];
        int n = RequestPath.Segment(path, segments);
        var view = new RequestView(head, head.CanonicalHost, path, segments.AsSpan(0, n), facts.Client, facts.RouteIndex, facts.Consumer, facts.Device);
        var list = new List<RuleExplanation>(_rules.Length);
        foreach (var rule in _rules)
            list.Add(new RuleExplanation(rule.Id, rule.Match.MatchesAll(view), rule.Mode, rule.Index == result.DecidingRule));
        return list;
    }

    /// <summary>Reference semantics: every rule checked directly in order (for tests and explain cross-checks).</summary>
    internal void EvaluateLinear(in RequestFacts facts, PolicyResult result)
    {
        var explained = Explain(facts, new PolicyResult());
        var matched = new List<int>();
        for (int i = 0; i < explained.Count; i++) if (explained[i].Matched) matched.Add(i);
        result.Reset();
        Decide(matched.ToArray(), result, count: false);
    }
}
