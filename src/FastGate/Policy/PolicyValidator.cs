using System.Text.RegularExpressions;
using FastGate.Configuration;

namespace FastGate.Policy;

/// <summary>
/// Semantic checks on <c>policies</c> and <c>ipLists</c>: every error with its JSON path and a message a person
/// can act on. Runs from <see cref="ConfigValidator.Validate"/> for `fastgate validate` and every reload.
/// </summary>
public static class PolicyValidator
{
    /// <summary>Header fields a policy may not set or remove: they frame the message or are hop-by-hop.</summary>
    private static readonly HashSet<string> s_protectedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    };

    private static readonly string[] s_standardMethods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"];

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ipListIds = ValidateIpLists(config, errors);
        var routeIds = config.Routes.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
        var clusterIds = config.Clusters.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        var limiterIds = KnownLimiterIds(config);
        var ctx = new Context(errors, routeIds, clusterIds, ipListIds, limiterIds) { Issuers = config.JwtIssuers, IssuerIds = config.JwtIssuers.Select(i => i.Id).ToArray(), DeviceIds = config.Devices.Select(d => d.Id).ToHashSet(StringComparer.Ordinal) };
        var ruleIds = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Policies.Count; i++)
        {
            var rule = config.Policies[i];
            string p = $"$.policies[{i}]";
            if (rule.Id.Length == 0) errors.Add(new ConfigError(p + ".id", "must not be empty"));
            else if (ruleIds.TryGetValue(rule.Id, out var first)) errors.Add(new ConfigError(p + ".id", $"duplicate rule id '{rule.Id}' (first used at {first})"));
            else ruleIds[rule.Id] = p;
            ValidateMatch(rule.Match, p + ".match", nested: false, ctx);
            ValidateActions(rule, p, ctx);
        }
        ValidateTemplateConflicts(ctx);
    }

    /// <summary>
    /// Limiter ids a rateLimit action may name: the ids of the top-level rateLimits list.
    /// </summary>
    internal static IReadOnlySet<string>? KnownLimiterIds(GatewayConfig config) =>
        config.RateLimits.Select(l => l.Id).ToHashSet(StringComparer.Ordinal);

    private sealed record Context(List<ConfigError> Errors, HashSet<string> Routes, HashSet<string> Clusters,
        HashSet<string> IpLists, IReadOnlySet<string>? Limiters)
    {
        public IReadOnlyList<string> IssuerIds { get; init; } = [];
        public IReadOnlyList<Security.JwtIssuerConfig> Issuers { get; init; } = [];
        public HashSet<string> DeviceIds { get; init; } = [];
        public List<(PathPattern Pattern, string Path)> Templates { get; } = [];
        public void Add(string path, string message) => Errors.Add(new ConfigError(path, message));
    }

    private static HashSet<string> ValidateIpLists(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.IpLists.Count; i++)
        {
            var l = config.IpLists[i];
            string p = $"$.ipLists[{i}]";
            if (l.Id.Length == 0) errors.Add(new ConfigError(p + ".id", "must not be empty"));
            else if (!ids.Add(l.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate ipList id '{l.Id}'"));
            else if (LooksLikeAddress(l.Id)) errors.Add(new ConfigError(p + ".id", $"'{l.Id}' looks like an address; give the list a name such as 'blocklist'"));
            if (l.File is not null && l.Cidrs.Count > 0) errors.Add(new ConfigError(p, "give either cidrs or file, not both"));
            else if (l.File is null && l.Cidrs.Count == 0) errors.Add(new ConfigError(p, "an ipList needs cidrs (a list of CIDRs) or file (a path, one CIDR per line)"));
            IpListLoader.Load(l, config.BaseDirectory, p, errors, config.Files);
        }
        return ids;
    }

    private static bool LooksLikeAddress(string s) => s.Contains('/') || s.Contains(':') || (s.Length > 0 && char.IsAsciiDigit(s[0]) && s.Contains('.'));

    private static void ValidateMatch(PolicyMatchConfig m, string p, bool nested, Context ctx)
    {
        for (int k = 0; k < m.Routes.Count; k++)
            if (!ctx.Routes.Contains(m.Routes[k])) ctx.Add($"{p}.routes[{k}]", Unknown("route", m.Routes[k], ctx.Routes));
        for (int k = 0; k < m.Hosts.Count; k++)
        {
            var host = m.Hosts[k];
            bool ok = host == "*" || (host.StartsWith("*.", StringComparison.Ordinal) ? IsHostName(host[2..]) : IsHostName(host));
            if (!ok) ctx.Add($"{p}.hosts[{k}]", $"'{host}' is not a host name, '*.example.com' or '*' (no port, no scheme)");
        }
        for (int k = 0; k < m.Methods.Count; k++)
        {
            var method = m.Methods[k];
            if (!IsToken(method)) ctx.Add($"{p}.methods[{k}]", $"'{method}' is not an HTTP method");
            else if (method != method.ToUpperInvariant() && s_standardMethods.Contains(method.ToUpperInvariant()))
                ctx.Add($"{p}.methods[{k}]", $"methods are case-sensitive: '{method}' would never match; use '{method.ToUpperInvariant()}'");
        }
        for (int k = 0; k < m.Paths.Count; k++)
        {
            if (!PathPattern.TryParse(m.Paths[k], out var pattern, out var error)) ctx.Add($"{p}.paths[{k}]", error);
            else ctx.Templates.Add((pattern, $"{p}.paths[{k}]"));
        }
        ValidateFields(m.Headers, p + ".headers", header: true, ctx);
        ValidateFields(m.Query, p + ".query", header: false, ctx);
        for (int k = 0; k < m.ClientIps.Count; k++)
        {
            var entry = m.ClientIps[k];
            if (ctx.IpLists.Contains(entry)) continue;
            if (LooksLikeAddress(entry))
            {
                if (!Cidr.TryParse(entry, out _, out var error)) ctx.Add($"{p}.clientIps[{k}]", error);
            }
            else ctx.Add($"{p}.clientIps[{k}]", Unknown("ipList", entry, ctx.IpLists) + " (or give a CIDR such as 10.0.0.0/8)");
        }
        for (int k = 0; k < m.Subjects.Count; k++)
        {
            var s = m.Subjects[k];
            string sp = $"{p}.subjects[{k}]";
            if (s.Issuer.Length > 0) Security.JwtConfigBinder.CheckIssuerReference(ctx.Issuers, s.Issuer, sp + ".issuer", ctx.Errors);
            if (s.Subject.Length == 0 && s.Issuer.Length > 0) ctx.Add(sp + ".subject", "must not be empty");
        }
        for (int k = 0; k < m.Devices.Count; k++)
            if (!ctx.DeviceIds.Contains(m.Devices[k]))
                ctx.Add($"{p}.devices[{k}]", Unknown("device", m.Devices[k], ctx.DeviceIds.ToArray()));
        if (m.Not is { } not)
        {
            if (nested) ctx.Add(p + ".not", "'not' cannot be nested inside 'not'; write the inner conditions directly in the outer match");
            else if (IsEmpty(not)) ctx.Add(p + ".not", "an empty 'not' excludes every request, so the rule could never match; remove it or add conditions");
            ValidateMatch(not, p + ".not", nested: true, ctx);
        }
    }

    private static bool IsEmpty(PolicyMatchConfig m) =>
        m.Routes.Count == 0 && m.Hosts.Count == 0 && m.Methods.Count == 0 && m.Paths.Count == 0 && m.Headers.Count == 0
        && m.Query.Count == 0 && m.ClientIps.Count == 0 && m.Consumers.Count == 0 && m.ConsumerGroups.Count == 0 && m.Subjects.Count == 0 && m.Devices.Count == 0
        && m.Scopes.Count == 0 && m.Claims.Count == 0 && m.Not is null;

    private static void ValidateFields(IReadOnlyList<FieldMatchConfig> fields, string p, bool header, Context ctx)
    {
        for (int k = 0; k < fields.Count; k++)
        {
            var f = fields[k];
            string fp = $"{p}[{k}]";
            if (f.Name.Length == 0) ctx.Add(fp + ".name", "must not be empty");
            else if (header && !IsToken(f.Name)) ctx.Add(fp + ".name", $"'{f.Name}' is not a header name");
            int given = (f.Present is null ? 0 : 1) + (f.EqualTo is null ? 0 : 1) + (f.OneOf is null ? 0 : 1) + (f.Regex is null ? 0 : 1);
            if (given != 1)
                ctx.Add(fp, $"give exactly one of present, equals, oneOf or regex (found {(given == 0 ? "none" : given.ToString(System.Globalization.CultureInfo.InvariantCulture))})");
            if (f.OneOf is { Count: 0 }) ctx.Add(fp + ".oneOf", "needs at least one value");
            if (f.Regex is { } regex && CheckRegex(regex) is { } error) ctx.Add(fp + ".regex", error);
        }
    }

    /// <summary>Null when the pattern compiles on the non-backtracking engine; otherwise why not.</summary>
    internal static string? CheckRegex(string pattern)
    {
        try
        {
            _ = new Regex(pattern, PolicyCompiler.RegexOptionsUsed);
            return null;
        }
        catch (NotSupportedException e)
        {
            return $"'{pattern}' uses a construct the linear-time regex engine does not support (backreferences, lookarounds, atomic groups, conditionals): {e.Message}";
        }
        catch (ArgumentException e)
        {
            return $"'{pattern}' is not a valid regex: {e.Message}";
        }
    }

    private static void ValidateActions(PolicyRuleConfig rule, string p, Context ctx)
    {
        if (rule.Actions.Count == 0) ctx.Add(p + ".actions", "a rule needs at least one action, such as { \"type\": \"deny\" }");
        string? decidingAt = null;
        string? rewriteAt = null, routeAt = null;
        for (int k = 0; k < rule.Actions.Count; k++)
        {
            var a = rule.Actions[k];
            string ap = $"{p}.actions[{k}]";
            if (Array.IndexOf(PolicyConfigBinder.ActionTypes, a.Type) < 0)
            {
                if (a.Type.Length > 0) ctx.Add(ap + ".type", Unknown("action type", a.Type, PolicyConfigBinder.ActionTypes));
                continue;
            }
            if (a.Type is "allow" or "deny" or "respond")
            {
                if (decidingAt is not null) ctx.Add(ap, $"a rule has at most one allow, deny or respond action (another is at {decidingAt})");
                decidingAt ??= ap;
            }
            switch (a.Type)
            {
                case "deny":
                    if (a.Status is { } ds && CheckStatus(ds) is { } de) ctx.Add(ap + ".status", de);
                    else if (a.Status is < 400) ctx.Add(ap + ".status", $"a deny answers with an error status, 400-599 (found {a.Status}); use respond for other statuses");
                    break;
                case "respond":
                    if (a.Status is not { } rs) ctx.Add(ap + ".status", "is required for respond (for example 200)");
                    else if (CheckStatus(rs) is { } re) ctx.Add(ap + ".status", re);
                    else if ((rs < 200 || rs is 204 or 304) && !string.IsNullOrEmpty(a.Body)) ctx.Add(ap + ".body", $"a {rs} response has no body");
                    else if (rs < 200) ctx.Add(ap + ".status", $"respond cannot send an informational (1xx) status (found {rs})");
                    if (a.ContentType is { } ct && !IsFieldValue(ct)) ctx.Add(ap + ".contentType", "must not contain control characters (CR, LF)");
                    break;
                case "requireAuth":
                    if (a.Schemes.Count == 0) ctx.Add(ap + ".schemes", "requireAuth needs at least one scheme, such as [\"jwt\"] or [\"apiKey\"]");
                    for (int j = 0; j < a.Schemes.Count; j++)
                        if (Security.AuthRequirement.CheckScheme(a.Schemes[j], ctx.IssuerIds, ctx.DeviceIds.Count > 0) is { } se) ctx.Add($"{ap}.schemes[{j}]", se);
                    if ((a.Scopes.Count > 0 || a.Claims.Count > 0) && !a.Schemes.Any(s => s.StartsWith("jwt", StringComparison.Ordinal)))
                        ctx.Add(ap + ".scopes", "scopes and claims come from tokens: list \"jwt\" (or \"jwt:<issuer>\") in schemes");
                    break;
                case "rateLimit":
                    if (a.Limiters.Count == 0) ctx.Add(ap + ".limiters", "rateLimit needs at least one limiter id");
                    for (int j = 0; j < a.Limiters.Count; j++)
                        if (ctx.Limiters is { } known && !known.Contains(a.Limiters[j])) ctx.Add($"{ap}.limiters[{j}]", Unknown("limiter", a.Limiters[j], known));
                    break;
                case "setRequestHeaders" or "setResponseHeaders":
                    if (a.Headers.Count == 0) ctx.Add(ap + ".headers", $"{a.Type} needs at least one header, such as {{ \"X-Env\": \"prod\" }}");
                    foreach (var (name, value) in a.Headers)
                    {
                        if (CheckHeaderName(name) is { } he) ctx.Add($"{ap}.headers.{name}", he);
                        else if (!IsFieldValue(value)) ctx.Add($"{ap}.headers.{name}", "the value must not contain control characters (CR, LF, NUL)");
                    }
                    break;
                case "removeRequestHeaders" or "removeResponseHeaders":
                    if (a.Names.Count == 0) ctx.Add(ap + ".names", $"{a.Type} needs at least one header name");
                    for (int j = 0; j < a.Names.Count; j++)
                        if (CheckHeaderName(a.Names[j]) is { } he) ctx.Add($"{ap}.names[{j}]", he);
                    break;
                case "rewritePath":
                    if (a.Path is not { } rp) ctx.Add(ap + ".path", "is required for rewritePath, such as \"/v2/orders\"");
                    else if (!rp.StartsWith('/') || rp.Any(c => c <= ' ' || c >= 0x7F || c is '?' or '#'))
                        ctx.Add(ap + ".path", $"'{rp}' must start with '/' and contain no spaces, control characters, '?' or '#' (percent-encode them)");
                    else if (rp.Split('/').Any(s => s is "." or ".."))
                        ctx.Add(ap + ".path", $"'{rp}' must not contain '.' or '..' segments");
                    if (rewriteAt is not null) ctx.Add(ap, $"a rule has at most one rewritePath action (another is at {rewriteAt})");
                    rewriteAt ??= ap;
                    break;
                case "route":
                    if (a.Cluster is not { } c) ctx.Add(ap + ".cluster", "is required for route");
                    else if (!ctx.Clusters.Contains(c)) ctx.Add(ap + ".cluster", Unknown("cluster", c, ctx.Clusters));
                    if (routeAt is not null) ctx.Add(ap, $"a rule has at most one route action (another is at {routeAt})");
                    routeAt ??= ap;
                    break;
            }
        }
    }

    private static string? CheckStatus(int status) =>
        status is < 100 or > 599 ? $"must be an HTTP status between 100 and 599 (found {status})" : null;

    private static string? CheckHeaderName(string name)
    {
        if (!IsToken(name)) return $"'{name}' is not a header name";
        if (s_protectedHeaders.Contains(name)) return $"'{name}' frames the message or is hop-by-hop; a policy cannot set or remove it";
        return null;
    }

    /// <summary>
    /// Two path patterns conflict when they have the same shape (same literal segments, variables at the same
    /// positions, same "/*") but name a variable differently, e.g. "/users/{id}" and "/users/{name}": they match
    /// exactly the same requests, so the names mislead (and a future rewrite using the variables would be
    /// ambiguous). Use one name per position across the policy.
    /// </summary>
    private static void ValidateTemplateConflicts(Context ctx)
    {
        var byShape = new Dictionary<string, (PathPattern Pattern, string Path)>(StringComparer.Ordinal);
        foreach (var (pattern, path) in ctx.Templates)
        {
            if (!pattern.HasVariables) continue;
            var shape = pattern.Shape;
            if (!byShape.TryGetValue(shape, out var first))
            {
                byShape[shape] = (pattern, path);
                continue;
            }
            if (!first.Pattern.Variables.SequenceEqual(pattern.Variables))
                ctx.Add(path, $"path template '{pattern.Text}' conflicts with '{first.Pattern.Text}' at {first.Path}: same shape, different variable names; use the same names");
        }
    }

    private static string Unknown(string what, string name, IEnumerable<string> known)
    {
        var hint = ConfigReader.Suggest(name, known.ToArray());
        return $"unknown {what} '{name}'" + (hint is null ? "" : $"; did you mean '{hint}'?");
    }

    private static bool IsHostName(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '[' or ']' or ':') && !s.Contains("..")
        && (!s.Contains(':') || (s.StartsWith('[') && s.EndsWith(']')));

    internal static bool IsToken(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c));

    private static bool IsFieldValue(string s) => s.All(c => c == '\t' || (c >= ' ' && c != 0x7F));
}
