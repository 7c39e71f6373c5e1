using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Policy;

/// <summary>
/// Binds the <c>policies</c>, <c>defaultAction</c> and <c>ipLists</c> sections into the policy records, with
/// every error at its JSON path (unknown properties are errors with a did-you-mean suggestion).
/// </summary>
internal static class PolicyConfigBinder
{
    /// <summary><c>ipLists[]</c>.</summary>
    internal static readonly string[] IpListProperties =
        ConfigReader.Names(nameof(IpListConfig.Id), nameof(IpListConfig.Cidrs), nameof(IpListConfig.File));
    /// <summary><c>policies[]</c>.</summary>
    internal static readonly string[] RuleProperties =
        ConfigReader.Names(nameof(PolicyRuleConfig.Id), nameof(PolicyRuleConfig.Description), nameof(PolicyRuleConfig.Match),
        nameof(PolicyRuleConfig.Actions), nameof(PolicyRuleConfig.Mode));
    /// <summary><c>policies[].match.subjects[]</c>.</summary>
    internal static readonly string[] SubjectProperties =
        ConfigReader.Names(nameof(SubjectMatchConfig.Issuer), nameof(SubjectMatchConfig.Subject));
    /// <summary><c>headers[]</c> and <c>query[]</c> of a policy match ("equals" is <see cref="FieldMatchConfig.EqualTo"/>).</summary>
    internal static readonly string[] FieldProperties =
        [.. ConfigReader.Names(nameof(FieldMatchConfig.Name), nameof(FieldMatchConfig.Present)), "equals",
        .. ConfigReader.Names(nameof(FieldMatchConfig.OneOf), nameof(FieldMatchConfig.Regex))];

    public static readonly string[] ActionTypes =
    [
        "allow", "deny", "requireAuth", "rateLimit", "setRequestHeaders", "removeRequestHeaders",
        "setResponseHeaders", "removeResponseHeaders", "rewritePath", "respond", "route",
    ];

    private static readonly string[] s_denyProperties = ConfigReader.Names(nameof(PolicyActionConfig.Status), nameof(PolicyActionConfig.Message));
    private static readonly string[] s_respondProperties = ConfigReader.Names(nameof(PolicyActionConfig.Status), nameof(PolicyActionConfig.Body), nameof(PolicyActionConfig.ContentType));
    private static readonly string[] s_requireAuthProperties = ConfigReader.Names(nameof(PolicyActionConfig.Schemes), nameof(PolicyActionConfig.Scopes), nameof(PolicyActionConfig.Claims));
    private static readonly string[] s_rateLimitProperties = ConfigReader.Names(nameof(PolicyActionConfig.Limiters));
    private static readonly string[] s_headersProperties = ConfigReader.Names(nameof(PolicyActionConfig.Headers));
    private static readonly string[] s_namesProperties = ConfigReader.Names(nameof(PolicyActionConfig.Names));
    private static readonly string[] s_rewritePathProperties = ConfigReader.Names(nameof(PolicyActionConfig.Path));
    private static readonly string[] s_routeProperties = ConfigReader.Names(nameof(PolicyActionConfig.Cluster));
    /// <summary>Every property an action may take besides "type" (the names an action of an unknown type is checked against).</summary>
    internal static readonly string[] AnyActionProperties =
        ConfigReader.Names(nameof(PolicyActionConfig.Status), nameof(PolicyActionConfig.Message), nameof(PolicyActionConfig.Body),
        nameof(PolicyActionConfig.ContentType), nameof(PolicyActionConfig.Schemes), nameof(PolicyActionConfig.Scopes),
        nameof(PolicyActionConfig.Claims), nameof(PolicyActionConfig.Limiters), nameof(PolicyActionConfig.Headers),
        nameof(PolicyActionConfig.Names), nameof(PolicyActionConfig.Path), nameof(PolicyActionConfig.Cluster));
    private static readonly string s_actionType = ConfigReader.Names(nameof(PolicyActionConfig.Type))[0];

    /// <summary>The properties each action type takes (besides "type").</summary>
    public static string[] ActionProperties(string type) => type switch
    {
        "allow" => [],
        "deny" => s_denyProperties,
        "respond" => s_respondProperties,
        "requireAuth" => s_requireAuthProperties,
        "rateLimit" => s_rateLimitProperties,
        "setRequestHeaders" or "setResponseHeaders" => s_headersProperties,
        "removeRequestHeaders" or "removeResponseHeaders" => s_namesProperties,
        "rewritePath" => s_rewritePathProperties,
        "route" => s_routeProperties,
        _ => AnyActionProperties,
    };

    /// <summary><c>policies[].match</c> (and its <c>not</c>).</summary>
    internal static readonly string[] MatchProperties =
        ConfigReader.Names(nameof(PolicyMatchConfig.Routes), nameof(PolicyMatchConfig.Hosts), nameof(PolicyMatchConfig.Methods),
        nameof(PolicyMatchConfig.Paths), nameof(PolicyMatchConfig.Headers), nameof(PolicyMatchConfig.Query),
        nameof(PolicyMatchConfig.ClientIps), nameof(PolicyMatchConfig.Consumers), nameof(PolicyMatchConfig.ConsumerGroups),
        nameof(PolicyMatchConfig.Subjects), nameof(PolicyMatchConfig.Devices), nameof(PolicyMatchConfig.Scopes),
        nameof(PolicyMatchConfig.Claims), nameof(PolicyMatchConfig.Not));

    public static List<PolicyRuleConfig> Policies(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, "policies", false, (e, p) => BindRule(e, p, r));

    public static DefaultAction DefaultAction(JsonElement root, string path, ConfigReader r)
    {
        var s = r.String(root, path, "defaultAction");
        switch (s)
        {
            case null or "allow": return Configuration.DefaultAction.Allow;
            case "deny": return Configuration.DefaultAction.Deny;
            default:
                r.Error(ConfigReader.Child(path, "defaultAction"), $"'{s}' is not a default action; use \"allow\" or \"deny\"");
                return Configuration.DefaultAction.Allow;
        }
    }

    public static List<IpListConfig> IpLists(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, "ipLists", false, (e, p) =>
        {
            r.CheckUnknown(e, p, IpListProperties);
            return new IpListConfig
            {
                Id = r.String(e, p, "id", required: true) ?? "",
                Cidrs = r.Strings(e, p, "cidrs"),
                File = r.String(e, p, "file"),
            };
        });

    private static PolicyRuleConfig BindRule(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, RuleProperties);
        var match = new PolicyMatchConfig();
        if (r.TryGet(e, p, "match", false, out var m) && r.IsObject(m, ConfigReader.Child(p, "match")))
            match = BindMatch(m, ConfigReader.Child(p, "match"), r);
        var modeText = r.String(e, p, "mode");
        var mode = PolicyMode.Enforce;
        if (modeText == "report") mode = PolicyMode.Report;
        else if (modeText is not null and not "enforce")
        {
            var hint = ConfigReader.Suggest(modeText, ["enforce", "report"]);
            r.Error(ConfigReader.Child(p, "mode"), $"'{modeText}' is not a mode; use \"enforce\" or \"report\"" + (hint is null ? "" : $" (did you mean '{hint}'?)"));
        }
        return new PolicyRuleConfig
        {
            Id = r.String(e, p, "id", required: true) ?? "",
            Description = r.String(e, p, "description"),
            Match = match,
            Actions = r.Objects(e, p, "actions", true, (a, ap) => BindAction(a, ap, r)),
            Mode = mode,
        };
    }

    private static PolicyMatchConfig BindMatch(JsonElement m, string p, ConfigReader r)
    {
        r.CheckUnknown(m, p, MatchProperties);
        PolicyMatchConfig? not = null;
        if (r.TryGet(m, p, "not", false, out var n) && r.IsObject(n, ConfigReader.Child(p, "not")))
            not = BindMatch(n, ConfigReader.Child(p, "not"), r);
        return new PolicyMatchConfig
        {
            Routes = r.Strings(m, p, "routes"),
            Hosts = r.Strings(m, p, "hosts"),
            Methods = r.Strings(m, p, "methods"),
            Paths = r.Strings(m, p, "paths"),
            Headers = r.Objects(m, p, "headers", false, (f, fp) => BindField(f, fp, r)),
            Query = r.Objects(m, p, "query", false, (f, fp) => BindField(f, fp, r)),
            ClientIps = r.Strings(m, p, "clientIps"),
            Consumers = r.Strings(m, p, "consumers"),
            ConsumerGroups = r.Strings(m, p, "consumerGroups"),
            Subjects = r.Objects(m, p, "subjects", false, (s, sp) =>
            {
                r.CheckUnknown(s, sp, SubjectProperties);
                return new SubjectMatchConfig
                {
                    Issuer = r.String(s, sp, "issuer", required: true) ?? "",
                    Subject = r.String(s, sp, "subject", required: true) ?? "",
                };
            }),
            Devices = r.Strings(m, p, "devices"),
            Scopes = r.Strings(m, p, "scopes"),
            Claims = Security.JwtConfigBinder.BindClaims(m, p, r),
            Not = not,
        };
    }

    private static FieldMatchConfig BindField(JsonElement f, string p, ConfigReader r)
    {
        r.CheckUnknown(f, p, FieldProperties);
        return new FieldMatchConfig
        {
            Name = r.String(f, p, "name", required: true) ?? "",
            Present = r.Bool(f, p, "present"),
            EqualTo = r.String(f, p, "equals"),
            OneOf = r.TryGet(f, p, "oneOf", false, out _) ? r.Strings(f, p, "oneOf") : null,
            Regex = r.String(f, p, "regex"),
        };
    }

    private static PolicyActionConfig BindAction(JsonElement a, string p, ConfigReader r)
    {
        var type = r.String(a, p, "type", required: true) ?? "";
        r.CheckUnknown(a, p, [s_actionType, .. ActionProperties(type)]);
        var headers = new List<KeyValuePair<string, string>>();
        if (r.TryGet(a, p, "headers", false, out var h))
        {
            var hp = ConfigReader.Child(p, "headers");
            if (h.ValueKind != JsonValueKind.Object) r.Error(hp, "expected an object of header names to values, such as { \"X-Env\": \"prod\" }");
            else
                foreach (var prop in h.EnumerateObject())
                {
                    if (prop.Value.ValueKind == JsonValueKind.String) headers.Add(KeyValuePair.Create(prop.Name, prop.Value.GetString()!));
                    else r.Error(ConfigReader.Child(hp, prop.Name), "expected a string value");
                }
        }
        return new PolicyActionConfig
        {
            Type = type,
            Status = (int?)r.Integer(a, p, "status", int.MinValue, int.MaxValue),
            Message = r.String(a, p, "message"),
            Body = r.String(a, p, "body"),
            ContentType = r.String(a, p, "contentType"),
            Schemes = r.Strings(a, p, "schemes"),
            Scopes = r.Strings(a, p, "scopes"),
            Claims = Security.JwtConfigBinder.BindClaims(a, p, r),
            Limiters = r.Strings(a, p, "limiters"),
            Headers = headers,
            Names = r.Strings(a, p, "names"),
            Path = r.String(a, p, "path"),
            Cluster = r.String(a, p, "cluster"),
        };
    }
}
