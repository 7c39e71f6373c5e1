using FastGate.Routing;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using FastGate.Configuration;
using FastGate.Http;

namespace FastGate.Policy;

/// <summary>Compiles a validated config's policies into a <see cref="CompiledPolicy"/>. Run PolicyValidator first.</summary>
public static class PolicyCompiler
{
    /// <summary>Regexes run on the non-backtracking engine: matching is linear in the input, so no pattern can blow up.</summary>
    public const RegexOptions RegexOptionsUsed = RegexOptions.NonBacktracking | RegexOptions.CultureInvariant;

    /// <param name="routeIds">The snapshot's route ids, in route-table order (RequestFacts.RouteIndex indexes it).</param>
    /// <param name="clusterIds">Optional: cluster ids in the snapshot's order, to resolve route actions to an index.</param>
    public static CompiledPolicy Compile(GatewayConfig config, IReadOnlyList<string> routeIds, IReadOnlyList<string>? clusterIds = null)
    {
        var ipLists = new Dictionary<string, CidrSet>(StringComparer.Ordinal);
        var ignored = new List<ConfigError>();
        for (int i = 0; i < config.IpLists.Count; i++)
        {
            var l = config.IpLists[i];
            ipLists[l.Id] = IpListLoader.Load(l, config.BaseDirectory, $"$.ipLists[{i}]", ignored);
        }
        var routeIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < routeIds.Count; i++) routeIndex.TryAdd(routeIds[i], i);
        var clusterIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        if (clusterIds is not null) for (int i = 0; i < clusterIds.Count; i++) clusterIndex.TryAdd(clusterIds[i], i);

        var issuerIds = config.JwtIssuers.Select(i => i.Id).ToArray();
        var rules = new CompiledRule[config.Policies.Count];
        var exactHosts = new Dictionary<string, NodeBuilder>(StringComparer.Ordinal);
        var suffixHosts = new Dictionary<string, NodeBuilder>(StringComparer.Ordinal);
        NodeBuilder? anyHost = null;
        for (int i = 0; i < rules.Length; i++)
        {
            var rc = config.Policies[i];
            var match = CompileMatch(rc.Match, ipLists, routeIndex, routeIds.Count, config.JwtIssuers);
            rules[i] = CompileRule(rc, i, match, clusterIndex, issuerIds);

            var hosts = match.Hosts.Length == 0 || Array.Exists(match.Hosts, h => h.Kind == HostKind.Any)
                ? [HostPattern.Any]
                : match.Hosts.Distinct().ToArray();
            var candidate = new Candidate(i, match.Methods.Mask, HasResidual(match) ? match : null);
            foreach (var h in hosts)
            {
                var root = h.Kind switch
                {
                    HostKind.Any => anyHost ??= new NodeBuilder(),
                    HostKind.Exact => GetOrAdd(exactHosts, Encoding.Latin1.GetString(h.Key)),
                    _ => GetOrAdd(suffixHosts, Encoding.Latin1.GetString(h.Key)),
                };
                if (match.Paths.Length == 0) root.Prefix.Add(candidate);
                foreach (var p in match.Paths) root.Insert(p, candidate);
            }
        }
        return new CompiledPolicy(rules, Freeze(exactHosts), Freeze(suffixHosts), anyHost?.Freeze(), config.DefaultAction);
    }

    private static NodeBuilder GetOrAdd(Dictionary<string, NodeBuilder> d, string key)
    {
        if (!d.TryGetValue(key, out var n)) d[key] = n = new NodeBuilder();
        return n;
    }

    private static ByteKeyTable<PathNode> Freeze(Dictionary<string, NodeBuilder> d) =>
        new(d.Select(kv => KeyValuePair.Create(Encoding.Latin1.GetBytes(kv.Key), kv.Value.Freeze())).ToList(), ignoreCase: true);

    private static bool HasResidual(MatchCondition m) =>
        m.Routes is not null || m.Methods.Others.Length > 0 || m.Headers.Length > 0 || m.Query.Length > 0 || m.ClientIps is not null
        || m.RequiresConsumer || m.Subjects.Length > 0 || m.Devices.Length > 0 || m.Scopes.Length > 0 || m.Claims.Length > 0 || m.Not is not null;

    internal static MatchCondition CompileMatch(PolicyMatchConfig m, IReadOnlyDictionary<string, CidrSet> ipLists,
        IReadOnlyDictionary<string, int> routeIndex, int routeCount, IReadOnlyList<Security.JwtIssuerConfig> issuers)
    {
        ulong[]? routes = null;
        if (m.Routes.Count > 0)
        {
            routes = new ulong[Math.Max(1, (routeCount + 63) / 64)];
            foreach (var r in m.Routes)
                if (routeIndex.TryGetValue(r, out int ri)) routes[ri >> 6] |= 1UL << ri;
        }
        CidrSet[]? ips = null;
        if (m.ClientIps.Count > 0)
        {
            var inline = new List<AddressRange>();
            var sets = new List<CidrSet>();
            foreach (var entry in m.ClientIps)
            {
                if (ipLists.TryGetValue(entry, out var set)) sets.Add(set);
                else if (Cidr.TryParse(entry, out var range, out _)) inline.Add(range);
            }
            if (inline.Count > 0) sets.Insert(0, CidrSet.Build(inline));
            ips = sets.ToArray();
        }
        var paths = new List<PathPattern>();
        foreach (var p in m.Paths) if (PathPattern.TryParse(p, out var pattern, out _)) paths.Add(pattern);
        return new MatchCondition
        {
            Hosts = m.Hosts.Select(HostPattern.Parse).ToArray(),
            Methods = MethodSet.Parse(m.Methods),
            Paths = paths.ToArray(),
            Routes = routes,
            Headers = m.Headers.Select(h => CompileField(h, header: true)).ToArray(),
            Query = m.Query.Select(q => CompileField(q, header: false)).ToArray(),
            ClientIps = ips,
            RequiresConsumer = m.Consumers.Count > 0 || m.ConsumerGroups.Count > 0,
            Consumers = m.Consumers.ToArray(),
            ConsumerGroups = m.ConsumerGroups.ToArray(),
            // an issuer that does not resolve (refused by the validator) keeps index -1: it matches no token
            Subjects = m.Subjects.Select(s => new SubjectCondition(Security.JwtConfigBinder.ResolveIssuer(issuers, s.Issuer), s.Subject)).ToArray(),
            Devices = m.Devices.ToArray(),
            Scopes = m.Scopes.ToArray(),
            Claims = m.Claims.ToArray(),
            Not = m.Not is null ? null : CompileMatch(m.Not, ipLists, routeIndex, routeCount, issuers),
        };
    }

    private static FieldCondition CompileField(FieldMatchConfig f, bool header)
    {
        var name = Encoding.UTF8.GetBytes(header ? f.Name.ToLowerInvariant() : f.Name);
        if (f.Regex is { } regex)
            return new FieldCondition { Name = name, Kind = FieldKind.Regex, Regex = new Regex(regex, RegexOptionsUsed) };
        if (f.EqualTo is { } eq)
            return new FieldCondition { Name = name, Kind = FieldKind.Equals, Values = [Encoding.UTF8.GetBytes(eq)] };
        if (f.OneOf is { } oneOf)
            return new FieldCondition { Name = name, Kind = FieldKind.OneOf, Values = oneOf.Select(Encoding.UTF8.GetBytes).ToArray() };
        return new FieldCondition { Name = name, Kind = f.Present == false ? FieldKind.Absent : FieldKind.Present };
    }

    private static CompiledRule CompileRule(PolicyRuleConfig rc, int index, MatchCondition match, Dictionary<string, int> clusterIndex,
        IReadOnlyList<string> issuerIds)
    {
        RuleDecision decision = RuleDecision.None;
        int status = 0;
        byte[] head = [], body = [];
        var setReq = new List<KeyValuePair<string, string>>();
        var setResp = new List<KeyValuePair<string, string>>();
        var removeReq = new List<string>();
        var removeResp = new List<string>();
        var schemes = new List<string>();
        var scopes = new List<string>();
        var claims = new List<Security.ClaimRequirement>();
        bool requireAuth = false;
        var limiters = new List<string>();
        byte[]? rewrite = null;
        string? cluster = null;
        foreach (var a in rc.Actions)
        {
            switch (a.Type)
            {
                case "allow":
                    if (decision == RuleDecision.None) decision = RuleDecision.Allow;
                    break;
                case "deny":
                    if (decision != RuleDecision.None) break;
                    decision = RuleDecision.Deny;
                    status = a.Status ?? 403;
                    body = Encoding.UTF8.GetBytes("{\"error\":" + JsonSerializer.Serialize(a.Message ?? "forbidden", PolicyJson.Default.String) + "}\n");
                    head = EncodeHead(status, "application/json", body.Length);
                    break;
                case "respond":
                    if (decision != RuleDecision.None) break;
                    decision = RuleDecision.Respond;
                    status = a.Status ?? 200;
                    body = Encoding.UTF8.GetBytes(a.Body ?? "");
                    head = EncodeHead(status, a.ContentType ?? "text/plain; charset=utf-8", body.Length);
                    break;
                case "requireAuth":
                    requireAuth = true;
                    schemes.AddRange(a.Schemes);
                    scopes.AddRange(a.Scopes);
                    claims.AddRange(a.Claims);
                    break;
                case "rateLimit": limiters.AddRange(a.Limiters); break;
                case "setRequestHeaders": setReq.AddRange(a.Headers); break;
                case "setResponseHeaders": setResp.AddRange(a.Headers); break;
                case "removeRequestHeaders": removeReq.AddRange(a.Names); break;
                case "removeResponseHeaders": removeResp.AddRange(a.Names); break;
                case "rewritePath": rewrite ??= Encoding.UTF8.GetBytes(a.Path ?? "/"); break;
                case "route": cluster ??= a.Cluster; break;
            }
        }
        return new CompiledRule
        {
            Id = rc.Id,
            Index = index,
            Mode = rc.Mode,
            Decision = decision,
            Status = status,
            ResponseHead = head,
            ResponseBody = body,
            SetRequestHeaderLines = EncodeLines(setReq),
            SetRequestHeaderNames = LowerNames(setReq.Select(h => h.Key)),
            RemoveRequestHeaderNames = LowerNames(removeReq),
            SetResponseHeaderLines = EncodeLines(setResp),
            SetResponseHeaderNames = LowerNames(setResp.Select(h => h.Key)),
            RemoveResponseHeaderNames = LowerNames(removeResp),
            RewritePath = rewrite,
            RouteToCluster = cluster,
            RouteToClusterIndex = cluster is not null && clusterIndex.TryGetValue(cluster, out int ci) ? ci : -1,
            RequireAuthSchemes = schemes.Distinct().ToArray(),
            RequireAuth = requireAuth ? Security.AuthRequirement.Compile(schemes.Distinct().ToArray(), scopes.Distinct().ToArray(), claims, issuerIds) : null,
            RateLimiters = limiters.Distinct().ToArray(),
            Match = match,
        };
    }

    internal static byte[] EncodeHead(int status, string contentType, int contentLength) =>
        Encoding.ASCII.GetBytes($"HTTP/1.1 {status} {CannedResponses.StatusText(status)}\r\nContent-Type: {contentType}\r\nContent-Length: {contentLength}\r\n");

    private static byte[] EncodeLines(List<KeyValuePair<string, string>> headers)
    {
        var sb = new StringBuilder();
        foreach (var (name, value) in headers) sb.Append(name).Append(": ").Append(value).Append("\r\n");
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    private static byte[][] LowerNames(IEnumerable<string> names) =>
        names.Select(n => Encoding.ASCII.GetBytes(n.ToLowerInvariant())).DistinctBy(Convert.ToHexString).ToArray();

    private sealed class NodeBuilder
    {
        public Dictionary<string, NodeBuilder> Children { get; } = new(StringComparer.Ordinal);
        public NodeBuilder? Wildcard { get; set; }
        public List<Candidate> Exact { get; } = [];
        public List<Candidate> Prefix { get; } = [];

        public void Insert(PathPattern p, Candidate c)
        {
            var node = this;
            foreach (var lit in p.Literals)
            {
                if (lit is null) node = node.Wildcard ??= new NodeBuilder();
                else node = GetOrAdd(node.Children, Encoding.Latin1.GetString(lit));
            }
            (p.IsPrefix ? node.Prefix : node.Exact).Add(c);
        }

        public PathNode Freeze() => new()
        {
            Children = Children.Count == 0 ? null
                : new ByteKeyTable<PathNode>(Children.Select(kv => KeyValuePair.Create(Encoding.Latin1.GetBytes(kv.Key), kv.Value.Freeze())).ToList(), ignoreCase: false),
            Wildcard = Wildcard?.Freeze(),
            // Candidates are added in rule order; a rule can appear twice in a leaf only via two equal patterns.
            Exact = Exact.DistinctBy(c => c.Rule).ToArray(),
            Prefix = Prefix.DistinctBy(c => c.Rule).ToArray(),
        };
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
internal sealed partial class PolicyJson : System.Text.Json.Serialization.JsonSerializerContext;
