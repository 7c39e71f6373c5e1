using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Policy;

/// <summary>
/// Binds the <c>policies</c>, <c>defaultAction</c> and <c>ipLists</c> sections into the policy records, with
/// every error at its JSON path (unknown properties are errors with a did-you-mean suggestion).
/// </summary>
internal static class PolicyConfigBinder
{
    public static readonly string[] ActionTypes =
    [
        "allow", "deny", "requireAuth", "rateLimit", "setRequestHeaders", "removeRequestHeaders",
        "setResponseHeaders", "removeResponseHeaders", "rewritePath", "respond", "route",
    ];

    /// <summary>The properties each action type takes (besides "type").</summary>
    public static string[] ActionProperties(string type) => type switch
    {
        "allow" => [],
        "deny" => ["status", "message"],
        "respond" => ["status", "body", "contentType"],
        "requireAuth" => ["schemes", "scopes", "claims"],
        "rateLimit" => ["limiters"],
        "setRequestHeaders" or "setResponseHeaders" => ["headers"],
        "removeRequestHeaders" or "removeResponseHeaders" => ["names"],
        "rewritePath" => ["path"],
        "route" => ["cluster"],
        _ => ["status", "message", "body", "contentType", "schemes", "scopes", "claims", "limiters", "headers", "names", "path", "cluster"],
    };

    private static readonly string[] MatchProperties =
        ["routes", "hosts", "methods", "paths", "headers", "query", "clientIps", "consumers", "consumerGroups", "subjects", "devices", "scopes", "claims", "not"];

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
            r.CheckUnknown(e, p, "id", "cidrs", "file");
            return new IpListConfig
            {
                Id = r.String(e, p, "id", required: true) ?? "",
                Cidrs = r.Strings(e, p, "cidrs"),
                File = r.String(e, p, "file"),
            };
        });

    private static PolicyRuleConfig BindRule(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, "id", "description", "match", "actions", "mode");
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
                r.CheckUnknown(s, sp, "issuer", "subject");
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
        r.CheckUnknown(f, p, "name", "present", "equals", "oneOf", "regex");
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
        r.CheckUnknown(a, p, ["type", .. ActionProperties(type)]);
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
