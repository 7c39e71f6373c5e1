using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FastGate.Configuration;
using FastGate.Observability;
using Prometheus;

namespace FastGate.Proxy;

/// <summary>
/// How the gateway speaks TLS to one https:// destination: the server name (SNI, and the name the certificate must
/// carry), the roots its chain must end in (the system store, or a configured CA bundle), or no check at all
/// (insecureSkipVerify, for self-signed test upstreams). The handshake itself is SslStream's; this class only builds
/// its options, once per pooled connection.
/// </summary>
public sealed class UpstreamTlsModel
{
    private static readonly List<SslApplicationProtocol> s_http11 = [SslApplicationProtocol.Http11];
    private readonly X509Certificate2Collection? _roots;

    private UpstreamTlsModel(string targetHost, bool nameConfigured, X509Certificate2Collection? roots, bool insecure, string key)
    {
        TargetHost = targetHost;
        NameConfigured = nameConfigured;
        _roots = roots;
        InsecureSkipVerify = insecure;
        Key = key;
    }

    /// <summary>Sent as SNI (unless it is an IP address) and checked against the certificate's names.</summary>
    public string TargetHost { get; }
    /// <summary>The name is the configured <c>sni</c>, not the destination's host.</summary>
    public bool NameConfigured { get; }
    public bool InsecureSkipVerify { get; }
    /// <summary>Identifies the settings (name, CA file content, skip flag) in the upstream pool key.</summary>
    public string Key { get; }

    /// <summary>Builds the model for a destination host; <paramref name="config"/> may be null (system trust store).</summary>
    public static UpstreamTlsModel Create(string destinationHost, UpstreamTlsConfig? config, string baseDirectory)
    {
        string host = config?.Sni ?? destinationHost.Trim('[', ']');
        X509Certificate2Collection? roots = null;
        string caKey = "system";
        if (config is { Ca: { } ca, InsecureSkipVerify: false })
        {
            roots = LoadCa(ConfigPath.Resolve(ca, baseDirectory), out var error) ?? throw new InvalidOperationException(error);
            var hash = new List<byte>();
            foreach (var c in roots) hash.AddRange(c.RawData);
            caKey = Convert.ToHexStringLower(SHA256.HashData(hash.ToArray()))[..16];
        }
        bool insecure = config?.InsecureSkipVerify ?? false;
        return new UpstreamTlsModel(host, config?.Sni is not null, roots, insecure, $"tls:{host}:{(insecure ? "insecure" : caKey)}");
    }

    /// <summary>Reads the PEM certificates of a CA bundle; null with a reason when the file is unreadable or has none.</summary>
    public static X509Certificate2Collection? LoadCa(string fullPath, out string? error)
    {
        error = null;
        var certs = new X509Certificate2Collection();
        try
        {
            certs.ImportFromPemFile(fullPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            error = $"cannot read CA certificates from '{fullPath}': {e.Message}";
            return null;
        }
        if (certs.Count == 0)
        {
            error = $"'{fullPath}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)";
            return null;
        }
        return certs;
    }

    /// <summary>
    /// The same trust for a SocketsHttpHandler (AI providers): the handler sets the target host of each connection
    /// itself (the request's Host header, else the URL's host), so only the protocols, the roots and the skip flag are
    /// given here.
    /// </summary>
    public SslClientAuthenticationOptions CreateHandlerOptions()
    {
        var options = new SslClientAuthenticationOptions
        {
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        };
        if (_roots is not null) options.CertificateChainPolicy = RootsPolicy(_roots);
        if (InsecureSkipVerify) options.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
        return options;
    }

    private static X509ChainPolicy RootsPolicy(X509Certificate2Collection roots)
    {
        // SslStream builds the chain with this policy: the bundle's certificates are the only roots.
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
        };
        policy.CustomTrustStore.AddRange(roots);
        return policy;
    }

    /// <summary>Options for one handshake; the outcome of the certificate check is left in <paramref name="check"/>.</summary>
    internal SslClientAuthenticationOptions CreateOptions(TlsCheck check)
    {
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = TargetHost,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ApplicationProtocols = s_http11,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = check.Validate,
        };
        if (_roots is not null) options.CertificateChainPolicy = RootsPolicy(_roots);
        check.Insecure = InsecureSkipVerify;
        return options;
    }
}

/// <summary>The certificate check of one handshake: what SslStream reported, and whether it was accepted.</summary>
internal sealed class TlsCheck
{
    public bool Insecure;
    public SslPolicyErrors Errors;
    public bool Called;

    public bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        Called = true;
        Errors = errors;
        return Insecure || errors == SslPolicyErrors.None;
    }

    /// <summary>The label of a failed handshake in fastgate_upstream_tls_failures_total.</summary>
    public string FailureKind(bool timedOut) =>
        timedOut ? "timeout"
        : !Called || Insecure ? "handshake"
        : (Errors & SslPolicyErrors.RemoteCertificateNotAvailable) != 0 ? "certificate_missing"
        : (Errors & SslPolicyErrors.RemoteCertificateChainErrors) != 0 ? "certificate_untrusted"
        : (Errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0 ? "certificate_name_mismatch"
        : "handshake";

    public static readonly string[] Kinds = ["timeout", "handshake", "certificate_missing", "certificate_untrusted", "certificate_name_mismatch"];
}

/// <summary>Per-pool children of fastgate_upstream_tls_failures_total, resolved when the pool is made.</summary>
internal sealed class TlsFailureCounters(string cluster, GatewayMetrics metrics)
{
    private readonly Counter.Child[] _children = TlsCheck.Kinds.Select(k => metrics.UpstreamTlsFailures.WithLabels(cluster, k)).ToArray();

    public void Count(string kind) => _children[Array.IndexOf(TlsCheck.Kinds, kind)].Inc();
}
