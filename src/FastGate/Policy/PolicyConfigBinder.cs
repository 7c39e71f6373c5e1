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
        r.Objects(root, path, nameof(GatewayConfig.Policies), false, (e, p) => BindRule(e, p, r));

    public static DefaultAction DefaultAction(JsonElement root, string path, ConfigReader r)
    {
        var s = r.String(root, path, nameof(GatewayConfig.DefaultAction));
        switch (s)
        {
            case null or "allow": return Configuration.DefaultAction.Allow;
            case "deny": return Configuration.DefaultAction.Deny;
            default:
                r.Error(ConfigReader.Child(path, nameof(GatewayConfig.DefaultAction)), $"'{s}' is not a default action; use \"allow\" or \"deny\"");
                return Configuration.DefaultAction.Allow;
        }
    }

    public static List<IpListConfig> IpLists(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, nameof(GatewayConfig.IpLists), false, (e, p) =>
        {
            r.CheckUnknown(e, p, IpListProperties);
            return new IpListConfig
            {
                Id = r.String(e, p, nameof(IpListConfig.Id), required: true) ?? "",
                Cidrs = r.Strings(e, p, nameof(IpListConfig.Cidrs)),
                File = r.String(e, p, nameof(IpListConfig.File)),
            };
        });

    private static PolicyRuleConfig BindRule(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, RuleProperties);
        var match = new PolicyMatchConfig();
        if (r.TryGet(e, p, nameof(PolicyRuleConfig.Match), false, out var m) && r.IsObject(m, ConfigReader.Child(p, nameof(PolicyRuleConfig.Match))))
            match = BindMatch(m, ConfigReader.Child(p, nameof(PolicyRuleConfig.Match)), r);
        var modeText = r.String(e, p, nameof(PolicyRuleConfig.Mode));
        var mode = PolicyMode.Enforce;
        if (modeText == "report") mode = PolicyMode.Report;
        else if (modeText is not null and not "enforce")
        {
            var hint = ConfigReader.Suggest(modeText, ["enforce", "report"]);
            r.Error(ConfigReader.Child(p, nameof(PolicyRuleConfig.Mode)), $"'{modeText}' is not a mode; use \"enforce\" or \"report\"" + (hint is null ? "" : $" (did you mean '{hint}'?)"));
        }
        return new PolicyRuleConfig
        {
            Id = r.String(e, p, nameof(PolicyRuleConfig.Id), required: true) ?? "",
            Description = r.String(e, p, nameof(PolicyRuleConfig.Description)),
            Match = match,
            Actions = r.Objects(e, p, nameof(PolicyRuleConfig.Actions), true, (a, ap) => BindAction(a, ap, r)),
            Mode = mode,
        };
    }

    private static PolicyMatchConfig BindMatch(JsonElement m, string p, ConfigReader r)
    {
        r.CheckUnknown(m, p, MatchProperties);
        PolicyMatchConfig? not = null;
        if (r.TryGet(m, p, nameof(PolicyMatchConfig.Not), false, out var n) && r.IsObject(n, ConfigReader.Child(p, nameof(PolicyMatchConfig.Not))))
            not = BindMatch(n, ConfigReader.Child(p, nameof(PolicyMatchConfig.Not)), r);
        return new PolicyMatchConfig
        {
            Routes = r.Strings(m, p, nameof(PolicyMatchConfig.Routes)),
            Hosts = r.Strings(m, p, nameof(PolicyMatchConfig.Hosts)),
            Methods = r.Strings(m, p, nameof(PolicyMatchConfig.Methods)),
            Paths = r.Strings(m, p, nameof(PolicyMatchConfig.Paths)),
            Headers = r.Objects(m, p, nameof(PolicyMatchConfig.Headers), false, (f, fp) => BindField(f, fp, r)),
            Query = r.Objects(m, p, nameof(PolicyMatchConfig.Query), false, (f, fp) => BindField(f, fp, r)),
            ClientIps = r.Strings(m, p, nameof(PolicyMatchConfig.ClientIps)),
            Consumers = r.Strings(m, p, nameof(PolicyMatchConfig.Consumers)),
            ConsumerGroups = r.Strings(m, p, nameof(PolicyMatchConfig.ConsumerGroups)),
            Subjects = r.Objects(m, p, nameof(PolicyMatchConfig.Subjects), false, (s, sp) =>
            {
                r.CheckUnknown(s, sp, SubjectProperties);
                return new SubjectMatchConfig
                {
                    Issuer = r.String(s, sp, nameof(SubjectMatchConfig.Issuer), required: true) ?? "",
                    Subject = r.String(s, sp, nameof(SubjectMatchConfig.Subject), required: true) ?? "",
                };
            }),
            Devices = r.Strings(m, p, nameof(PolicyMatchConfig.Devices)),
            Scopes = r.Strings(m, p, nameof(PolicyMatchConfig.Scopes)),
            Claims = Security.JwtConfigBinder.BindClaims(m, p, r),
            Not = not,
        };
    }

    private static FieldMatchConfig BindField(JsonElement f, string p, ConfigReader r)
    {
        r.CheckUnknown(f, p, FieldProperties);
        return new FieldMatchConfig
        {
            Name = r.String(f, p, nameof(FieldMatchConfig.Name), required: true) ?? "",
            Present = r.Bool(f, p, nameof(FieldMatchConfig.Present)),
            EqualTo = r.String(f, p, "equals"),
            OneOf = r.TryGet(f, p, nameof(FieldMatchConfig.OneOf), false, out _) ? r.Strings(f, p, nameof(FieldMatchConfig.OneOf)) : null,
            Regex = r.String(f, p, nameof(FieldMatchConfig.Regex)),
        };
    }

    private static PolicyActionConfig BindAction(JsonElement a, string p, ConfigReader r)
    {
        var type = r.String(a, p, nameof(PolicyActionConfig.Type), required: true) ?? "";
        r.CheckUnknown(a, p, [s_actionType, .. ActionProperties(type)]);
        var headers = new List<KeyValuePair<string, string>>();
        if (r.TryGet(a, p, nameof(PolicyActionConfig.Headers), false, out var h))
        {
            var hp = ConfigReader.Child(p, nameof(PolicyActionConfig.Headers));
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
            Status = (int?)r.Integer(a, p, nameof(PolicyActionConfig.Status), int.MinValue, int.MaxValue),
            Message = r.String(a, p, nameof(PolicyActionConfig.Message)),
            Body = r.String(a, p, nameof(PolicyActionConfig.Body)),
            ContentType = r.String(a, p, nameof(PolicyActionConfig.ContentType)),
            Schemes = r.Strings(a, p, nameof(PolicyActionConfig.Schemes)),
            Scopes = r.Strings(a, p, nameof(PolicyActionConfig.Scopes)),
            Claims = Security.JwtConfigBinder.BindClaims(a, p, r),
            Limiters = r.Strings(a, p, nameof(PolicyActionConfig.Limiters)),
            Headers = headers,
            Names = r.Strings(a, p, nameof(PolicyActionConfig.Names)),
            Path = r.String(a, p, nameof(PolicyActionConfig.Path)),
            Cluster = r.String(a, p, nameof(PolicyActionConfig.Cluster)),
        };
    }
}
