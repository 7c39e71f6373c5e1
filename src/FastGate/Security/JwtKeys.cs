using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Net.Http;
using System.Text;
using FastGate.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;
using Prometheus;

namespace FastGate.Security;

/// <summary>One key set as fetched: the keys, their ids, and (for discovery) the document's issuer.</summary>
public sealed class JwtKeySet
{
    public JwtKeySet(IReadOnlyList<SecurityKey> keys, string? issuer = null)
    {
        Keys = keys;
        Issuer = issuer;
        KeyIds = keys.Select(k => k.KeyId).Where(k => !string.IsNullOrEmpty(k)).ToFrozenSet(StringComparer.Ordinal);
    }

    public IReadOnlyList<SecurityKey> Keys { get; }
    public FrozenSet<string> KeyIds { get; }
    public string? Issuer { get; }
}

/// <summary>
/// The keys of one issuer. Static keys (PEM files, a shared secret) never change. Remote keys (a JWKS URL or an
/// OpenID discovery document) are fetched at start, refreshed on schedule, and refreshed once when a token names
/// an unknown kid, at most once per <see cref="JwtIssuerConfig.UnknownKidRefreshInterval"/>: a flood of tokens with
/// made-up kids costs one fetch, not one per request. A failed fetch keeps the last good set. One fetch at a time.
/// </summary>
public sealed class JwtKeySource
{
    private readonly JwtIssuerConfig _config;
    private readonly TimeProvider _time;
    private readonly HttpClient? _http;
    private readonly object _gate = new(); // guards starting a fetch; never taken on the request path's fast path
    private volatile JwtKeySet? _current;
    private Task? _fetch;
    private long _lastUnknownKidFetch = long.MinValue;
    private long _nextScheduled;
    private int _fetchCount;
    private readonly Counter.Child _fetchesOk, _fetchesFailed;

    /// <param name="metrics">Where fastgate_jwks_fetches_total counts (unexported metrics of its own when omitted).</param>
    public JwtKeySource(JwtIssuerConfig config, string baseDirectory, TimeProvider time, HttpClient? http, ILogger? logger = null,
        Observability.GatewayMetrics? metrics = null)
    {
        _config = config;
        var fetches = (metrics ?? new Observability.GatewayMetrics()).JwksFetches;
        _fetchesOk = fetches.WithLabels(config.Id, "ok");
        _fetchesFailed = fetches.WithLabels(config.Id, "failed");
        _time = time;
        Logger = logger;
        Descriptor = Describe(config, baseDirectory);
        if (config.JwksUri is null && config.Discovery is null)
        {
            _current = StaticKeys(config, baseDirectory);
            return;
        }
        _http = http ?? SharedHttp;
        lock (_gate) _fetch = FetchAsync();
    }

    /// <summary>What identifies the source: a reload that keeps it keeps the fetched keys and the refresh clock.</summary>
    public string Descriptor { get; }
    public ILogger? Logger { get; set; }
    public bool IsRemote => _http is not null;
    public JwtKeySet? Current => _current;
    /// <summary>Fetches started so far (tests and metrics).</summary>
    public int FetchCount => Volatile.Read(ref _fetchCount);

    /// <summary>The latest fetch (completed when none is running).</summary>
    internal Task PendingFetch => Volatile.Read(ref _fetch) ?? Task.CompletedTask;

    /// <summary>Completes when the first fetch has ended (successfully or not); at once for static keys.</summary>
    public Task InitialLoad => _current is not null ? Task.CompletedTask : Volatile.Read(ref _fetch) ?? Task.CompletedTask;

    internal static string Describe(JwtIssuerConfig c, string baseDirectory) =>
        c.JwksUri is { } j ? "jwks " + j
        : c.Discovery is { } d ? "discovery " + d
        : c.Keys.Count > 0 ? "pem " + string.Join(",", c.Keys.Select(k => ConfigPath.Resolve(k, baseDirectory)))
            + " " + string.Join(",", c.Keys.Select(k => File.Exists(ConfigPath.Resolve(k, baseDirectory)) ? File.GetLastWriteTimeUtc(ConfigPath.Resolve(k, baseDirectory)).Ticks : 0))
        : "secret " + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(c.ResolveSecret() ?? "")));

    /// <summary>
    /// A token named a kid that is not in the set: start a fetch unless one ran for this reason within the interval.
    /// Returns the fetch to wait for, or null when the interval forbids one.
    /// </summary>
    public Task? RefreshForUnknownKid()
    {
        if (_http is null) return null;
        long now = _time.GetTimestamp();
        lock (_gate)
        {
            if (_fetch is { IsCompleted: false } running) return running;
            if (_lastUnknownKidFetch != long.MinValue && _time.GetElapsedTime(_lastUnknownKidFetch, now) < _config.UnknownKidRefreshInterval)
                return null;
            _lastUnknownKidFetch = now;
            return _fetch = FetchAsync();
        }
    }

    /// <summary>Called by the gateway's heartbeat: starts the scheduled refresh when it is due.</summary>
    public void Tick()
    {
        if (_http is null) return;
        long now = _time.GetTimestamp();
        if (now < Volatile.Read(ref _nextScheduled)) return;
        lock (_gate)
        {
            if (_fetch is { IsCompleted: false } || now < _nextScheduled) return;
            _fetch = FetchAsync();
        }
    }

    private async Task FetchAsync()
    {
        Interlocked.Increment(ref _fetchCount);
        // The next scheduled fetch: after a failure retry sooner (but not in a loop).
        var retry = TimeSpan.FromTicks(Math.Min(_config.RefreshInterval.Ticks, TimeSpan.FromSeconds(30).Ticks));
        Volatile.Write(ref _nextScheduled, _time.GetTimestamp() + (long)(retry.TotalSeconds * _time.TimestampFrequency));
        try
        {
            await Task.Yield(); // never run the fetch on the caller's stack (the caller may hold the gate)
            JwtKeySet set;
            if (_config.Discovery is { } discovery)
            {
                var doc = OpenIdConnectConfiguration.Create(await GetAsync(discovery).ConfigureAwait(false));
                if (string.IsNullOrEmpty(doc.JwksUri)) throw new InvalidDataException("the discovery document has no jwks_uri");
                CheckScheme(doc.JwksUri);
                var jwks = new JsonWebKeySet(await GetAsync(doc.JwksUri).ConfigureAwait(false));
                set = new JwtKeySet(jwks.GetSigningKeys().ToArray(), doc.Issuer);
            }
            else
            {
                var jwks = new JsonWebKeySet(await GetAsync(_config.JwksUri!).ConfigureAwait(false));
                set = new JwtKeySet(jwks.GetSigningKeys().ToArray());
            }
            if (set.Keys.Count == 0) throw new InvalidDataException("the key set holds no usable signing key");
            _current = set;
            Volatile.Write(ref _nextScheduled, _time.GetTimestamp() + (long)(_config.RefreshInterval.TotalSeconds * _time.TimestampFrequency));
            _fetchesOk.Inc();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _fetchesFailed.Inc();
            Logger?.LogWarning("jwtIssuers '{Issuer}': key fetch failed ({Error}); {State}", _config.Id, e.Message,
                _current is null ? "no keys yet: its tokens are refused" : "the last good key set stays in use");
        }
    }

    private void CheckScheme(string url)
    {
        if (_config.RequireHttps && !url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"'{url}' is not https");
    }

    private async Task<string> GetAsync(string url)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await _http!.GetAsync(url, cts.Token).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
        if (response.Content.Headers.ContentLength > 1 << 20) throw new InvalidDataException("the document is larger than 1 MiB");
        return await response.Content.ReadAsStringAsync(cts.Token).ConfigureAwait(false);
    }

    private static JwtKeySet StaticKeys(JwtIssuerConfig c, string baseDirectory)
    {
        if (c.ResolveSecret() is { } secret)
            return new JwtKeySet([new SymmetricSecurityKey(Encoding.UTF8.GetBytes(secret))]);
        var keys = new List<SecurityKey>();
        foreach (var file in c.Keys)
            keys.AddRange(JwtKeys.ReadPemKeys(File.ReadAllText(ConfigPath.Resolve(file, baseDirectory)), file));
        return new JwtKeySet(keys);
    }

    private static readonly HttpClient SharedHttp = new(new SocketsHttpHandler
    {
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        AllowAutoRedirect = false,
        ConnectTimeout = TimeSpan.FromSeconds(5),
    });
}

/// <summary>Key sources by descriptor, kept across reloads (like the limiter store) so a reload does not refetch.</summary>
public sealed class JwtKeyStore
{
    private readonly TimeProvider _time;
    private readonly HttpClient? _http;
    private volatile Dictionary<string, JwtKeySource> _sources = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    /// <param name="metrics">The metrics of the gateway the key sets belong to (unexported ones of their own when omitted).</param>
    public JwtKeyStore(TimeProvider? time = null, HttpClient? http = null, Observability.GatewayMetrics? metrics = null)
    {
        _time = time ?? TimeProvider.System;
        _http = http;
        Metrics = metrics ?? new Observability.GatewayMetrics();
    }

    public Observability.GatewayMetrics Metrics { get; }

    public ILogger? Logger { get; set; }

    public JwtKeySource GetOrCreate(JwtIssuerConfig config, string baseDirectory)
    {
        var descriptor = JwtKeySource.Describe(config, baseDirectory);
        lock (_gate)
        {
            if (_sources.TryGetValue(descriptor, out var s)) return s;
            s = new JwtKeySource(config, baseDirectory, _time, _http, Logger, Metrics);
            _sources = new Dictionary<string, JwtKeySource>(_sources, StringComparer.Ordinal) { [descriptor] = s };
            return s;
        }
    }

    /// <summary>Forgets the sources the new config no longer uses.</summary>
    public void Retain(IEnumerable<JwtKeySource> used)
    {
        var keep = used.Select(s => s.Descriptor).ToHashSet(StringComparer.Ordinal);
        lock (_gate) _sources = _sources.Where(kv => keep.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
    }

    public void Tick()
    {
        foreach (var s in _sources.Values) s.Tick();
    }
}

public static class JwtKeys
{
    /// <summary>Every public key in a PEM text (RSA or EC, "PUBLIC KEY" / "RSA PUBLIC KEY" / certificates).</summary>
    public static List<SecurityKey> ReadPemKeys(string pem, string name)
    {
        var keys = new List<SecurityKey>();
        var rest = pem.AsSpan();
        while (PemEncoding.TryFind(rest, out var fields))
        {
            var label = rest[fields.Label].ToString();
            var der = Convert.FromBase64String(rest[fields.Base64Data].ToString());
            rest = rest[fields.Location.End..];
            switch (label)
            {
                case "PUBLIC KEY":
                    keys.Add(FromSpki(der));
                    break;
                case "RSA PUBLIC KEY":
                    var rsa = RSA.Create();
                    rsa.ImportRSAPublicKey(der, out _);
                    keys.Add(new RsaSecurityKey(rsa) { KeyId = Kid(rsa.ExportSubjectPublicKeyInfo()) });
                    break;
                case "CERTIFICATE":
                    var cert = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificate(der);
                    keys.Add(FromSpki(cert.PublicKey.ExportSubjectPublicKeyInfo()));
                    break;
                default:
                    throw new FormatException($"{name}: '{label}' blocks are not accepted (give public keys only; never a private key)");
            }
        }
        if (keys.Count == 0) throw new FormatException($"{name}: no PEM public key found");
        return keys;
    }

    private static SecurityKey FromSpki(byte[] der)
    {
        try
        {
            var rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(der, out _);
            return new RsaSecurityKey(rsa) { KeyId = Kid(der) };
        }
        catch (CryptographicException)
        {
            var ec = ECDsa.Create();
            ec.ImportSubjectPublicKeyInfo(der, out _);
            return new ECDsaSecurityKey(ec) { KeyId = Kid(der) };
        }
    }

    /// <summary>PEM keys carry no kid: tokens signed with them are matched by trying each key (kid absent) or by this id.</summary>
    private static string Kid(byte[] spki) => Convert.ToHexStringLower(SHA256.HashData(spki))[..16];
}
