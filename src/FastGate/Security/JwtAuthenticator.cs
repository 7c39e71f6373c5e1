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
    private static readonly Counter s_validations = Metrics.CreateCounter("fastgate_jwt_validations_total",
        "Bearer token validations (cache misses) by issuer and result.", "issuer", "result");
    private static readonly Counter s_cacheHits = Metrics.CreateCounter("fastgate_jwt_cache_hits_total", "Bearer tokens found in the validated-token cache.");

    private readonly JwtIssuerModel[] _issuers;
    private readonly FrozenDictionary<string, int> _issuerIndexById;
    private readonly JsonWebTokenHandler _handler;
    private readonly int _maxTokenBytes;
    private readonly CacheEntry?[] _cache;
    private readonly ulong _seed = (ulong)Random.Shared.NextInt64();
    private readonly TimeProvider _time;
    private readonly string _consumerHeader;

    internal JwtAuthenticator(JwtIssuerModel[] issuers, JwtOptionsConfig options, string consumerHeader, TimeProvider? time = null)
    {
        _issuers = issuers;
        _issuerIndexById = issuers.ToFrozenDictionary(i => i.Config.Id, i => i.Index, StringComparer.Ordinal);
        _maxTokenBytes = options.MaxTokenBytes;
        _handler = new JsonWebTokenHandler { MaximumTokenSizeInBytes = options.MaxTokenBytes, MapInboundClaims = false };
        int size = options.CacheSize <= 0 ? 0 : (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)options.CacheSize);
        _cache = new CacheEntry?[size];
        _time = time ?? TimeProvider.System;
        _consumerHeader = consumerHeader;
    }

    public static JwtAuthenticator Empty { get; } = new([], new JwtOptionsConfig(), "X-Consumer-Id");

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
            s_validations.WithLabels("", "oversized").Inc();
            return ValueTask.FromResult(JwtResult.Refused);
        }
        ulong hash = XxHash3.HashToUInt64(token, (long)_seed);
        long now = _time.GetUtcNow().ToUnixTimeSeconds();
        if (_cache.Length > 0)
        {
            var e = Volatile.Read(ref _cache[(int)(hash & (ulong)(_cache.Length - 1))]);
            if (e is not null && e.Hash == hash && now < e.ExpiresAt && token.SequenceEqual(e.Token))
            {
                s_cacheHits.Inc();
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
            s_validations.WithLabels("", "malformed").Inc();
            return JwtResult.Refused;
        }
        if (jwt.IsEncrypted)
        {
            s_validations.WithLabels("", "malformed").Inc();
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
            s_validations.WithLabels("", "unknown_issuer").Inc();
            return JwtResult.Refused;
        }
        string id = issuer.Config.Id;
        if (!issuer.Algorithms.Contains(jwt.Alg))
        {
            s_validations.WithLabels(id, "algorithm_not_allowed").Inc();
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
            s_validations.WithLabels(id, "no_keys").Inc();
            return JwtResult.Refused;
        }
        if (issuer.Keys.IsRemote && !string.IsNullOrEmpty(jwt.Kid) && !keys.KeyIds.Contains(jwt.Kid))
        {
            // Maybe the issuer rotated its keys: one fetch, at most once per interval however many tokens ask.
            if (issuer.Keys.RefreshForUnknownKid() is { } refresh) await refresh.ConfigureAwait(false);
            keys = issuer.Keys.Current!;
            if (!keys.KeyIds.Contains(jwt.Kid))
            {
                s_validations.WithLabels(id, "unknown_kid").Inc();
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
            s_validations.WithLabels(id, Classify(result.Exception)).Inc();
            return JwtResult.Refused;
        }
        var consumer = ToConsumer(issuer, jwt);
        if (consumer is null)
        {
            s_validations.WithLabels(id, "bad_subject").Inc();
            return JwtResult.Refused;
        }
        s_validations.WithLabels(id, "valid").Inc();
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

    /// <summary>The identity of a validated token: the subject claim is the consumer id; claims and scopes for rules.</summary>
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
        // The subject goes into a header line: refuse anything that could break out of it.
        if (subject.Length is 0 or > 256 || subject.Any(ch => ch < 0x21 || ch == 0x7F)) return null;
        var scopes = new List<string>();
        if (claims.TryGetValue("scope", out var scope))
            foreach (var s in scope) scopes.AddRange(s.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (claims.TryGetValue("scp", out var scp))
            foreach (var s in scp) scopes.AddRange(s.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        return new ConsumerModel
        {
            Id = subject,
            Groups = [],
            ForwardedHeaderLine = Encoding.UTF8.GetBytes($"{_consumerHeader}: {subject}\r\n"),
            Scheme = AuthScheme.Jwt,
            IssuerIndex = issuer.Index,
            Scopes = scopes.Distinct(StringComparer.Ordinal).ToArray(),
            Claims = claims.ToFrozenDictionary(kv => kv.Key, kv => kv.Value.ToArray(), StringComparer.Ordinal),
        };
    }

    private sealed record CacheEntry(ulong Hash, byte[] Token, long ExpiresAt, ConsumerModel Consumer);
}
