namespace FastGate.Security;

/// <summary>The ways a caller can prove who it is.</summary>
[Flags]
public enum AuthScheme : byte
{
    None = 0,
    ApiKey = 1,
    Jwt = 2,
    Mtls = 4,
}

public enum AuthOutcome : byte
{
    Satisfied,
    /// <summary>No accepted credential: 401.</summary>
    Unauthenticated,
    /// <summary>An accepted credential without a required scope or claim: 403.</summary>
    Forbidden,
}

/// <summary>A claim a requirement or a rule asks for: the claim present with one of the values (any value if none listed).</summary>
public sealed record ClaimRequirement(string Name, string[] Values);

/// <summary>
/// What a route's <c>auth</c> (with its <c>scopes</c> and <c>claims</c>) or a rule's requireAuth action demands:
/// any one of the schemes, and from a JWT every listed scope and claim.
/// </summary>
public sealed class AuthRequirement
{
    /// <summary>Schemes accepted from any issuer / any key.</summary>
    public AuthScheme Schemes { get; init; }
    /// <summary>When <see cref="Schemes"/> lacks Jwt: the issuers ("jwt:&lt;id&gt;") whose tokens are accepted, as a bit mask.</summary>
    public ulong JwtIssuers { get; init; }
    public string[] Scopes { get; init; } = [];
    public ClaimRequirement[] Claims { get; init; } = [];

    public bool AcceptsJwt => (Schemes & AuthScheme.Jwt) != 0 || JwtIssuers != 0;

    /// <param name="hasDevice">The connection presented an allowlisted client certificate (mTLS).</param>
    public AuthOutcome Check(ConsumerModel? consumer, bool hasDevice = false)
    {
        bool byConsumer = consumer is not null && Accepts(consumer);
        if (!byConsumer && !(hasDevice && (Schemes & AuthScheme.Mtls) != 0)) return AuthOutcome.Unauthenticated;
        if (Scopes.Length == 0 && Claims.Length == 0) return AuthOutcome.Satisfied;
        if (!byConsumer) return AuthOutcome.Forbidden;
        // Scopes and claims come from tokens; a credential without them (an API key) cannot satisfy them.
        foreach (var s in Scopes) if (!consumer!.HasScope(s)) return AuthOutcome.Forbidden;
        foreach (var c in Claims) if (!consumer!.HasClaim(c.Name, c.Values)) return AuthOutcome.Forbidden;
        return AuthOutcome.Satisfied;
    }

    private bool Accepts(ConsumerModel consumer) => consumer.Scheme switch
    {
        AuthScheme.ApiKey => (Schemes & AuthScheme.ApiKey) != 0,
        AuthScheme.Jwt => (Schemes & AuthScheme.Jwt) != 0 || (consumer.IssuerIndex is >= 0 and < 64 && (JwtIssuers & (1UL << consumer.IssuerIndex)) != 0),
        _ => false,
    };

    /// <summary>Compiles scheme names ("apiKey", "jwt", "jwt:&lt;issuer id&gt;", "mtls").</summary>
    public static AuthRequirement Compile(IReadOnlyList<string> schemes, IReadOnlyList<string> scopes, IReadOnlyList<ClaimRequirement> claims,
        IReadOnlyList<string> issuerIds)
    {
        AuthScheme flags = AuthScheme.None;
        ulong issuers = 0;
        foreach (var s in schemes)
        {
            if (s == "apiKey") flags |= AuthScheme.ApiKey;
            else if (s == "jwt") flags |= AuthScheme.Jwt;
            else if (s == "mtls") flags |= AuthScheme.Mtls;
            else if (s.StartsWith("jwt:", StringComparison.Ordinal))
            {
                int i = IndexOf(issuerIds, s[4..]);
                if (i is >= 0 and < 64) issuers |= 1UL << i;
            }
        }
        return new AuthRequirement { Schemes = flags, JwtIssuers = issuers, Scopes = scopes.ToArray(), Claims = claims.ToArray() };
    }

    private static int IndexOf(IReadOnlyList<string> ids, string id)
    {
        for (int i = 0; i < ids.Count; i++) if (ids[i] == id) return i;
        return -1;
    }

    /// <summary>The scheme names a config may use, given the configured issuers; null when valid, else the error.</summary>
    public static string? CheckScheme(string scheme, IReadOnlyList<string> issuerIds, bool hasDevices)
    {
        if (scheme == "apiKey") return null;
        if (scheme == "mtls")
            return hasDevices ? null : "'mtls' accepts allowlisted devices: list them in \"devices\" (and set tls.clientCertificate on a listener)";
        if (scheme == "jwt")
            return issuerIds.Count > 0 ? null : "'jwt' needs at least one entry in jwtIssuers";
        if (scheme.StartsWith("jwt:", StringComparison.Ordinal))
            return issuerIds.Contains(scheme[4..]) ? null : $"no jwtIssuers entry has id '{scheme[4..]}'";
        return $"'{scheme}' is not a scheme (use apiKey, jwt, jwt:<issuer id> or mtls)";
    }
}
