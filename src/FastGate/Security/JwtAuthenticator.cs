using System.Collections.Frozen;
using System.IO.Hashing;
using System.Security.Claims;
using System.Text;
using FastGate.Http;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Prometheus;

namespace FastGate.Security;

public enum JwtStatus : byte
{
    /// <summary>No bearer token was presented.</summary>
    None,
    Valid,
    /// <summary>A token was presented and refused (the 401 then says error="invalid_token").</summary>
    Invalid,
}

public readonly record struct JwtResult(JwtStatus Status, ConsumerModel? Consumer)
{
    public static JwtResult NoToken => default;
    public static JwtResult Refused => new(JwtStatus.Invalid, null);
}

/// <summary>A configured issuer as the authenticator uses it.</summary>
internal sealed class JwtIssuerModel
{
    public required int Index { get; init; }
    public required JwtIssuerConfig Config { get; init; }
    public required JwtKeySource Keys { get; init; }
    public required string[] Algorithms { get; init; }
    /// <summary>The configured iss, or the discovery document's once fetched.</summary>
    public string? Issuer => Config.Issuer ?? Keys.Current?.Issuer;
}

/// <summary>
/// Bearer tokens (OAuth 2.0 / OpenID Connect JWTs). The request path looks the token up in a bounded cache of
/// validated tokens (keyed by a seeded 64-bit hash, confirmed by comparing the whole token, valid until exp): a hit
/// allocates nothing and takes no lock. A miss validates with Microsoft.IdentityModel (signature with a key of the
/// token's issuer only, the issuer's algorithm allowlist, iss, aud, exp required, nbf, size) and caches the result.
/// </summary>
public sealed class JwtAuthenticator
{
    // null only in Empty, which has no issuers and so never counts
    private readonly Counter? _validations;
    private readonly Counter? _cacheHits;

    private readonly JwtIssuerModel[] _issuers;
    private readonly FrozenDictionary<string, int> _issuerIndexById;
    private readonly JsonWebTokenHandler _handler;
    private readonly int _maxTokenBytes;
    private readonly CacheEntry?[] _cache;
    private readonly ulong _seed = (ulong)Random.Shared.NextInt64();
    private readonly TimeProvider _time;
    private readonly string _consumerHeader, _subjectHeader, _issuerHeader;
    /// <summary>Per issuer index: the consumers that own tokens of that issuer (consumers[].jwt).</summary>
    private readonly IdentityMap[] _owners;

    internal JwtAuthenticator(JwtIssuerModel[] issuers, JwtOptionsConfig options, string consumerHeader, Observability.GatewayMetrics? metrics,
        TimeProvider? time = null, IReadOnlyList<ConsumerConfig>? consumers = null)
    {
        _validations = metrics?.JwtValidations;
        _cacheHits = metrics?.JwtCacheHits;
        _issuers = issuers;
        _issuerIndexById = issuers.ToFrozenDictionary(i => i.Config.Id, i => i.Index, StringComparer.Ordinal);
        _maxTokenBytes = options.MaxTokenBytes;
        _handler = new JsonWebTokenHandler { MaximumTokenSizeInBytes = options.MaxTokenBytes, MapInboundClaims = false };
        int size = options.CacheSize <= 0 ? 0 : (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)options.CacheSize);
        _cache = new CacheEntry?[size];
        _time = time ?? TimeProvider.System;
        _consumerHeader = consumerHeader;
        _subjectHeader = options.SubjectHeader;
        _issuerHeader = options.IssuerHeader;
        _owners = IdentityMap.Build(issuers, consumers ?? []);
    }

    public static JwtAuthenticator Empty { get; } = new([], new JwtOptionsConfig(), "X-Consumer-Id", metrics: null);

    public bool IsEnabled => _issuers.Length > 0;
    public int IssuerCount => _issuers.Length;
    internal IReadOnlyList<JwtIssuerModel> Issuers => _issuers;

    /// <summary>Index of an issuer id (for "jwt:&lt;id&gt;" schemes), or -1.</summary>
    public int IssuerIndex(string id) => _issuerIndexById.GetValueOrDefault(id, -1);

    /// <summary>Reads "Authorization: Bearer &lt;token&gt;"; completes synchronously unless the token must be validated.</summary>
    public ValueTask<JwtResult> AuthenticateAsync(RequestHead request)
    {
        if (_issuers.Length == 0 || !TryGetToken(request, out var token)) return ValueTask.FromResult(JwtResult.NoToken);
        if (token.Length > _maxTokenBytes)
        {
            _validations?.WithLabels("", "oversized").Inc();
            return ValueTask.FromResult(JwtResult.Refused);
        }
        ulong hash = XxHash3.HashToUInt64(token, (long)_seed);
        long now = _time.GetUtcNow().ToUnixTimeSeconds();
        if (_cache.Length > 0)
        {
            var e = Volatile.Read(ref _cache[(int)(hash & (ulong)(_cache.Length - 1))]);
            if (e is not null && e.Hash == hash && now < e.ExpiresAt && token.SequenceEqual(e.Token))
            {
                _cacheHits?.Inc();
                return ValueTask.FromResult(new JwtResult(JwtStatus.Valid, e.Consumer));
            }
        }
        // A miss: the token is copied out of the connection's buffer before anything awaits.
        return ValidateAsync(token.ToArray(), hash);
    }

    private static bool TryGetToken(RequestHead request, out ReadOnlySpan<byte> token)
    {
        token = default;
        if (!request.TryGetHeader("authorization"u8, out var auth) || auth.Length < 8 || !Ascii.EqualsIgnoreCase(auth[..7], "Bearer "u8))
            return false;
        token = auth[7..].Trim((byte)' ');
        return !token.IsEmpty;
    }

    private async ValueTask<JwtResult> ValidateAsync(byte[] tokenBytes, ulong hash)
    {
        JsonWebToken jwt;
        try
        {
            jwt = new JsonWebToken(Encoding.ASCII.GetString(tokenBytes));
        }
        catch (Exception e) when (e is ArgumentException or SecurityTokenException)
        {
            _validations?.WithLabels("", "malformed").Inc();
            return JwtResult.Refused;
        }
        if (jwt.IsEncrypted)
        {
            _validations?.WithLabels("", "malformed").Inc();
            return JwtResult.Refused;
        }
        if (!CriticalHeadersUnderstood(jwt))
        {
            _validations?.WithLabels("", "crit").Inc();
            return JwtResult.Refused;
        }
        // The issuer is chosen by the (not yet verified) iss; only that issuer's keys can then verify the signature.
        string iss = jwt.TryGetPayloadValue<string>("iss", out var i) ? i : "";
        JwtIssuerModel? issuer = null;
        foreach (var candidate in _issuers)
        {
            if (candidate.Issuer is null) await WaitForInitialLoad(candidate).ConfigureAwait(false);
            if (string.Equals(candidate.Issuer, iss, StringComparison.Ordinal)) { issuer = candidate; break; }
        }
        if (issuer is null)
        {
            _validations?.WithLabels("", "unknown_issuer").Inc();
            return JwtResult.Refused;
        }
        string id = issuer.Config.Id;
        if (!issuer.Algorithms.Contains(jwt.Alg))
        {
            _validations?.WithLabels(id, "algorithm_not_allowed").Inc();
            return JwtResult.Refused;
        }
        var keys = issuer.Keys.Current;
        if (keys is null)
        {
            await WaitForInitialLoad(issuer).ConfigureAwait(false);
            keys = issuer.Keys.Current;
        }
        if (keys is null)
        {
            _validations?.WithLabels(id, "no_keys").Inc();
            return JwtResult.Refused;
        }
        if (issuer.Keys.IsRemote && !string.IsNullOrEmpty(jwt.Kid) && !keys.KeyIds.Contains(jwt.Kid))
        {
            // Maybe the issuer rotated its keys: one fetch, at most once per interval however many tokens ask.
            if (issuer.Keys.RefreshForUnknownKid() is { } refresh) await refresh.ConfigureAwait(false);
            keys = issuer.Keys.Current!;
            if (!keys.KeyIds.Contains(jwt.Kid))
            {
                _validations?.WithLabels(id, "unknown_kid").Inc();
                return JwtResult.Refused;
            }
        }
        var parameters = new TokenValidationParameters
        {
            ValidIssuer = issuer.Issuer,
            ValidateIssuer = true,
            ValidAudiences = issuer.Config.Audiences,
            ValidateAudience = true,
            RequireAudience = true,
            IssuerSigningKeys = keys.Keys,
            ValidAlgorithms = issuer.Algorithms,
            RequireSignedTokens = true,
            RequireExpirationTime = true,
            ValidateLifetime = true,
            ClockSkew = issuer.Config.ClockSkew,
            TryAllIssuerSigningKeys = string.IsNullOrEmpty(jwt.Kid) || !issuer.Keys.IsRemote,
        };
        var result = await _handler.ValidateTokenAsync(jwt, parameters).ConfigureAwait(false);
        if (!result.IsValid)
        {
            _validations?.WithLabels(id, Classify(result.Exception)).Inc();
            return JwtResult.Refused;
        }
        var consumer = ToConsumer(issuer, jwt);
        if (consumer is null)
        {
            _validations?.WithLabels(id, "bad_subject").Inc();
            return JwtResult.Refused;
        }
        _validations?.WithLabels(id, "valid").Inc();
        if (_cache.Length > 0)
        {
            long expires = new DateTimeOffset(jwt.ValidTo, TimeSpan.Zero).ToUnixTimeSeconds();
            Volatile.Write(ref _cache[(int)(hash & (ulong)(_cache.Length - 1))], new CacheEntry(hash, tokenBytes, expires, consumer));
        }
        return new JwtResult(JwtStatus.Valid, consumer);
    }

    private static async Task WaitForInitialLoad(JwtIssuerModel issuer)
    {
        var load = issuer.Keys.InitialLoad;
        if (!load.IsCompleted) await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
    }

    private static string Classify(Exception? e) => e switch
    {
        SecurityTokenExpiredException => "expired",
        SecurityTokenNotYetValidException => "not_yet_valid",
        SecurityTokenNoExpirationException => "no_expiration",
        SecurityTokenInvalidIssuerException => "wrong_issuer",
        SecurityTokenInvalidAudienceException => "wrong_audience",
        SecurityTokenInvalidAlgorithmException => "algorithm_not_allowed",
        SecurityTokenSignatureKeyNotFoundException => "unknown_kid",
        SecurityTokenInvalidSignatureException => "bad_signature",
        _ => "invalid",
    };

    /// <summary>
    /// The JWS header extensions this gateway understands and enforces: none. RFC 7515 4.1.11: a token whose
    /// <c>crit</c> lists an extension the recipient does not understand must be rejected; <c>crit</c> must not be
    /// empty nor list a header parameter the JWS/JWA specs define. Microsoft.IdentityModel does not check it.
    /// </summary>
    private static readonly string[] s_understoodExtensions = [];

    private static readonly string[] s_registeredHeaders =
        ["alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c"];

    /// <summary>False when the header's <c>crit</c> is present and not a non-empty list of understood extensions.</summary>
    private static bool CriticalHeadersUnderstood(JsonWebToken jwt)
    {
        try
        {
            using var header = System.Text.Json.JsonDocument.Parse(Base64UrlEncoder.DecodeBytes(jwt.EncodedHeader));
            if (header.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object) return false;
            if (!header.RootElement.TryGetProperty("crit", out var crit)) return true;
            if (crit.ValueKind != System.Text.Json.JsonValueKind.Array || crit.GetArrayLength() == 0) return false;
            foreach (var e in crit.EnumerateArray())
            {
                if (e.ValueKind != System.Text.Json.JsonValueKind.String || e.GetString() is not { } name) return false;
                if (s_registeredHeaders.Contains(name) || !s_understoodExtensions.Contains(name)) return false;
                if (!header.RootElement.TryGetProperty(name, out _)) return false;
            }
            return true;
        }
        catch (Exception e) when (e is FormatException or ArgumentException or System.Text.Json.JsonException)
        {
            return false;
        }
    }

    /// <summary>
    /// A subject that may identify a caller: 1–256 characters of well-formed UTF-16 and no control character (C0,
    /// DEL, C1: CR and LF could end the header line they are forwarded in). Non-ASCII is accepted and percent-encoded
    /// when forwarded (<see cref="HeaderValue"/>).
    /// </summary>
    internal static bool IsAcceptableSubject(string subject)
    {
        if (subject.Length is 0 or > 256) return false;
        for (int i = 0; i < subject.Length;)
        {
            if (Rune.DecodeFromUtf16(subject.AsSpan(i), out var rune, out int n) != System.Buffers.OperationStatus.Done || Rune.IsControl(rune))
                return false;
            i += n;
        }
        return true;
    }

    /// <summary>
    /// A value as forwarded in a header: its UTF-8 bytes, with every byte outside printable ASCII (0x21–0x7E), and
    /// '%' itself, written as %XX (upper-case hex), so the forwarded value is ASCII and maps back to one value.
    /// </summary>
    internal static string HeaderValue(string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        var sb = new StringBuilder(bytes.Length);
        foreach (var b in bytes)
        {
            if (b is > 0x20 and < 0x7F and not (byte)'%') sb.Append((char)b);
            else sb.Append('%').Append(Convert.ToHexString([b]));
        }
        return sb.ToString();
    }

    /// <summary>
    /// The identity of a validated token: (issuer, subject claim), a consumer only when a consumer owns it
    /// (consumers[].jwt); claims and scopes for rules.
    /// </summary>
    private ConsumerModel? ToConsumer(JwtIssuerModel issuer, JsonWebToken jwt)
    {
        var claims = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var c in jwt.Claims)
        {
            if (!claims.TryGetValue(c.Type, out var values)) claims[c.Type] = values = [];
            values.Add(c.Value);
        }
        if (!claims.TryGetValue(issuer.Config.SubjectClaim, out var subjects) || subjects.Count != 1) return null;
        string subject = subjects[0];
        // The subject goes into a header line: refuse control characters (CR, LF), percent-encode the rest.
        if (!IsAcceptableSubject(subject)) return null;
        var scopes = new List<string>();
        if (claims.TryGetValue("scope", out var scope))
            foreach (var s in scope) scopes.AddRange(s.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (claims.TryGetValue("scp", out var scp))
            foreach (var s in scp) scopes.AddRange(s.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var owner = _owners[issuer.Index].Find(subject, claims);
        string lines = $"{_subjectHeader}: {HeaderValue(subject)}\r\n{_issuerHeader}: {HeaderValue(issuer.Issuer ?? "")}\r\n";
        return new ConsumerModel
        {
            Id = owner?.Id ?? "",
            IsConsumer = owner is not null,
            Groups = owner?.Groups.ToArray() ?? [],
            ForwardedHeaderLine = Encoding.ASCII.GetBytes(owner is null ? lines : $"{_consumerHeader}: {owner.Id}\r\n{lines}"),
            Subject = subject,
            SubjectId = issuer.Config.Id + ":" + subject,
            SubjectKey = Encoding.UTF8.GetBytes(issuer.Config.Id + ":" + subject),
            Scheme = AuthScheme.Jwt,
            IssuerIndex = issuer.Index,
            Scopes = scopes.Distinct(StringComparer.Ordinal).ToArray(),
            Claims = claims.ToFrozenDictionary(kv => kv.Key, kv => kv.Value.ToArray(), StringComparer.Ordinal),
        };
    }

    private sealed record CacheEntry(ulong Hash, byte[] Token, long ExpiresAt, ConsumerModel Consumer);

    /// <summary>
    /// The consumers owning one issuer's tokens: by subject, then by claim value (claim entries in config order).
    /// Consulted on a cache miss only.
    /// </summary>
    private sealed class IdentityMap
    {
        private readonly Dictionary<string, ConsumerConfig> _bySubject = new(StringComparer.Ordinal);
        private readonly List<(string Claim, HashSet<string> Values, ConsumerConfig Owner)> _byClaim = [];

        public static IdentityMap[] Build(JwtIssuerModel[] issuers, IReadOnlyList<ConsumerConfig> consumers)
        {
            var maps = new IdentityMap[issuers.Length];
            for (int i = 0; i < maps.Length; i++) maps[i] = new IdentityMap();
            var configs = issuers.Select(i => i.Config).ToArray();
            foreach (var c in consumers)
                foreach (var j in c.Jwt)
                {
                    int index = JwtConfigBinder.ResolveIssuer(configs, j.Issuer);
                    if (index < 0) continue; // refused by the validator
                    if (j.Subject is { } sub) maps[index]._bySubject.TryAdd(sub, c);
                    else if (j.Claim is { } claim) maps[index]._byClaim.Add((claim, j.Values.ToHashSet(StringComparer.Ordinal), c));
                }
            return maps;
        }

        public ConsumerConfig? Find(string subject, Dictionary<string, List<string>> claims)
        {
            if (_bySubject.TryGetValue(subject, out var owner)) return owner;
            foreach (var (claim, values, o) in _byClaim)
                if (claims.TryGetValue(claim, out var actual) && actual.Any(values.Contains)) return o;
            return null;
        }
    }
}
