namespace FastGate.Configuration;

// The policy section of config/fastgate.json (see docs/policies.md): the records. PolicyConfigBinder binds them,
// PolicyValidator checks them, PolicyCompiler compiles them (the records keep the Configuration namespace).

public enum PolicyMode { Enforce, Report }

public enum DefaultAction { Allow, Deny }

public sealed record PolicyRuleConfig
{
    public string Id { get; init; } = "";
    public string? Description { get; init; }
    public PolicyMatchConfig Match { get; init; } = new();
    public IReadOnlyList<PolicyActionConfig> Actions { get; init; } = [];
    public PolicyMode Mode { get; init; } = PolicyMode.Enforce;
}

/// <summary>Every condition given must hold. Lists match when any element matches.</summary>
public sealed record PolicyMatchConfig
{
    public IReadOnlyList<string> Routes { get; init; } = [];
    public IReadOnlyList<string> Hosts { get; init; } = [];
    public IReadOnlyList<string> Methods { get; init; } = [];
    /// <summary>Exact "/a/b", prefix "/api/*", templates "/users/{id}/orders".</summary>
    public IReadOnlyList<string> Paths { get; init; } = [];
    public IReadOnlyList<FieldMatchConfig> Headers { get; init; } = [];
    public IReadOnlyList<FieldMatchConfig> Query { get; init; } = [];
    /// <summary>CIDRs (IPv4/IPv6) or names of ipLists.</summary>
    public IReadOnlyList<string> ClientIps { get; init; } = [];
    /// <summary>Consumer ids: an API key's consumer, or a token a consumer owns (consumers[].jwt). Never a bare token subject.</summary>
    public IReadOnlyList<string> Consumers { get; init; } = [];
    public IReadOnlyList<string> ConsumerGroups { get; init; } = [];
    /// <summary>Token identities: the request's token has one of these (issuer, subject) pairs, mapped to a consumer or not.</summary>
    public IReadOnlyList<SubjectMatchConfig> Subjects { get; init; } = [];
    /// <summary>Device ids (mTLS): the connection's client certificate belongs to one of them.</summary>
    public IReadOnlyList<string> Devices { get; init; } = [];
    /// <summary>Token scopes: the request's token carries at least one of them.</summary>
    public IReadOnlyList<string> Scopes { get; init; } = [];
    /// <summary>Token claims: every named claim has one of its listed values (any value when none listed).</summary>
    public IReadOnlyList<Security.ClaimRequirement> Claims { get; init; } = [];
    public PolicyMatchConfig? Not { get; init; }
}

/// <summary>A token identity in a rule: the issuer (a jwtIssuers id or its exact iss) and the subject claim's value.</summary>
public sealed record SubjectMatchConfig
{
    public string Issuer { get; init; } = "";
    public string Subject { get; init; } = "";
}

/// <summary>A header or query parameter condition: present, equals, oneOf or regex (exactly one).</summary>
public sealed record FieldMatchConfig
{
    public string Name { get; init; } = "";
    public bool? Present { get; init; }
    public string? EqualTo { get; init; }
    public IReadOnlyList<string>? OneOf { get; init; }
    public string? Regex { get; init; }
}

public sealed record PolicyActionConfig
{
    /// <summary>allow, deny, requireAuth, rateLimit, setRequestHeaders, removeRequestHeaders, setResponseHeaders,
    /// removeResponseHeaders, rewritePath, respond, route.</summary>
    public string Type { get; init; } = "";
    public int? Status { get; init; }
    public string? Message { get; init; }
    public string? Body { get; init; }
    public string? ContentType { get; init; }
    public IReadOnlyList<string> Schemes { get; init; } = [];
    /// <summary>requireAuth: scopes the token must carry (all), and claims; missing ones answer 403.</summary>
    public IReadOnlyList<string> Scopes { get; init; } = [];
    public IReadOnlyList<Security.ClaimRequirement> Claims { get; init; } = [];
    public IReadOnlyList<string> Limiters { get; init; } = [];
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; } = [];
    public IReadOnlyList<string> Names { get; init; } = [];
    public string? Path { get; init; }
    public string? Cluster { get; init; }
}

/// <summary>A named CIDR list, inline or loaded from a file (one CIDR per line, '#' comments).</summary>
public sealed record IpListConfig
{
    public string Id { get; init; } = "";
    public IReadOnlyList<string> Cidrs { get; init; } = [];
    public string? File { get; init; }
}
