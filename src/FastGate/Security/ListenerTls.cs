using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FastGate.Configuration;
using FastGate.Observability;
using Microsoft.Extensions.Logging;

namespace FastGate.Security;

/// <summary>
/// TLS termination for one listener: the server certificate (PEM pair or PFX, with its intermediates), TLS 1.2 and
/// 1.3 only, and client certificates (mTLS) checked against the listener's CA bundle. The handshake options are one
/// immutable object swapped whole when the certificate files change, so a reload never touches a connection that
/// is already up, and a reload that fails keeps the certificate in use.
/// </summary>
public sealed class ListenerTls : IDisposable
{
    private static readonly Oid s_clientAuth = new("1.3.6.1.5.5.7.3.2", "Client Authentication");
    private static readonly List<SslApplicationProtocol> s_http11 = [SslApplicationProtocol.Http11];
    // a listener with "http2": h2 preferred, http/1.1 kept (RFC 9113 3.2; the connection goes to Kestrel's HTTP/2 then)
    private static readonly List<SslApplicationProtocol> s_h2AndHttp11 = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11];
    private readonly List<SslApplicationProtocol> _alpn;

    private readonly string _listener;
    private readonly GatewayMetrics _metrics;
    private readonly ListenerTlsConfig _config;
    private readonly string _baseDirectory;
    private readonly X509Certificate2Collection? _clientRoots;
    // [0] is the listener's own certificate (any server name); the others come from "sni", in config order
    private readonly Slot[] _slots;
    private readonly Dictionary<string, Slot> _exactNames = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<(string Suffix, Slot Slot)> _wildcards = [];
    private ITimer? _poll;
    private int _polling;

    /// <summary>One served certificate: its files, the handshake options built from it, and the file stamps last seen.</summary>
    private sealed class Slot(string label, CertificateFiles files)
    {
        public readonly string Label = label;
        public readonly CertificateFiles Files = files;
        public SslServerAuthenticationOptions Options = null!;
        public X509Certificate2 Certificate = null!;
        public FileStamp[] Stamps = [];
    }

    private ListenerTls(string listener, ListenerTlsConfig config, string baseDirectory, ServerCertificate[] certificates, X509Certificate2Collection? clientRoots,
        GatewayMetrics metrics, bool http2)
    {
        _alpn = http2 ? s_h2AndHttp11 : s_http11;
        _listener = listener;
        _metrics = metrics;
        _config = config;
        _baseDirectory = baseDirectory;
        _clientRoots = clientRoots;
        _slots = new Slot[certificates.Length];
        for (int i = 0; i < certificates.Length; i++)
        {
            var files = i == 0 ? config.Files : config.Sni[i - 1].Files;
            var slot = _slots[i] = new Slot(i == 0 ? listener : $"{listener}/{config.Sni[i - 1].Hosts.FirstOrDefault()}", files);
            slot.Stamps = Stamp(WatchedFiles(files));
            Install(slot, certificates[i]);
            if (i == 0) continue;
            foreach (var host in config.Sni[i - 1].Hosts)
            {
                if (host.StartsWith("*.", StringComparison.Ordinal)) _wildcards.Add((host[1..], slot));
                else _exactNames.TryAdd(host, slot);
            }
        }
    }

    private void Install(Slot slot, ServerCertificate certificate)
    {
        Volatile.Write(ref slot.Options, BuildOptions(certificate));
        Volatile.Write(ref slot.Certificate, certificate.Leaf);
        _metrics.TlsCertificateExpiry.WithLabels(slot.Label).Set(certificate.Leaf.NotAfter.ToUniversalTime().Subtract(DateTime.UnixEpoch).TotalSeconds);
    }

    /// <summary>The listener's own certificate (served for every name no "sni" entry claims).</summary>
    public X509Certificate2 Certificate => Volatile.Read(ref _slots[0].Certificate);
    public ClientCertificateMode ClientCertificate => _config.ClientCertificate;
    public ILogger? Logger { get; set; }
    /// <summary>How often the certificate files are checked for changes.</summary>
    public static TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Loads the certificates and the client CA bundle; throws <see cref="InvalidOperationException"/> with the reason.</summary>
    /// <param name="metrics">The metrics of the gateway that serves the listener.</param>
    /// <param name="http2">Offer h2 by ALPN before http/1.1 (a listener with "http2": true).</param>
    public static ListenerTls Create(string listener, ListenerTlsConfig config, string baseDirectory, GatewayMetrics metrics, bool http2 = false)
    {
        var certificates = new ServerCertificate[1 + config.Sni.Count];
        string? error;
        for (int i = 0; i < certificates.Length; i++)
            certificates[i] = LoadCertificate(i == 0 ? config.Files : config.Sni[i - 1].Files, baseDirectory, out error) ?? throw new InvalidOperationException(error);
        X509Certificate2Collection? roots = null;
        if (config.ClientCertificate != ClientCertificateMode.None && config.ClientCa is { } ca)
            roots = Proxy.UpstreamTlsModel.LoadCa(ConfigPath.Resolve(ca, baseDirectory), out error) ?? throw new InvalidOperationException(error);
        return new ListenerTls(listener, config, baseDirectory, certificates, roots, metrics, http2);
    }

    /// <summary>Every problem with a listener's tls section, as (JSON path suffix, message); files are opened and parsed.</summary>
    public static IEnumerable<(string Path, string Message)> Check(ListenerTlsConfig config, string baseDirectory, ConfigFileAccess? files = null)
    {
        files ??= ConfigFileAccess.Any;
        foreach (var problem in CheckFiles(config.Files, baseDirectory, files)) yield return problem;
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < config.Sni.Count; i++)
        {
            var entry = config.Sni[i];
            string p = $".sni[{i}]";
            foreach (var (sub, message) in CheckFiles(entry.Files, baseDirectory, files)) yield return (p + sub, message);
            if (entry.Hosts.Count == 0) yield return (p + ".hosts", "list the server names this certificate is for, such as [\"api.example.com\", \"*.example.com\"]");
            for (int h = 0; h < entry.Hosts.Count; h++)
            {
                var host = entry.Hosts[h];
                var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
                if (name.Length == 0 || name.StartsWith('.') || name.EndsWith('.') || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.'))
                    yield return ($"{p}.hosts[{h}]", $"'{host}' is not a DNS name or '*.example.com'");
                else if (!names.Add(host)) yield return ($"{p}.hosts[{h}]", $"'{host}' is already claimed by another sni entry");
            }
        }
        if (config.ClientCertificate != ClientCertificateMode.None)
        {
            if (config.ClientCa is null)
                yield return (".clientCa", "is required when clientCertificate is optional or required (a PEM bundle of the CAs client certificates must chain to)");
            else if (!files.TryResolve(baseDirectory, config.ClientCa, out var caFile, out var refused))
                yield return (".clientCa", refused!);
            else if (Proxy.UpstreamTlsModel.LoadCa(caFile, out var caError) is null)
                yield return (".clientCa", caError!);
        }
        else if (config.ClientCa is not null)
            yield return (".clientCa", "has no effect while clientCertificate is \"none\": set it to \"optional\" or \"required\"");
    }

    private static IEnumerable<(string Path, string Message)> CheckFiles(CertificateFiles files, string baseDirectory, ConfigFileAccess access)
    {
        bool pem = files.Certificate is not null || files.Key is not null;
        if (pem && files.Pfx is not null)
            yield return ("", "give either \"certificate\" and \"key\" (PEM) or \"pfx\", not both");
        else if (!pem && files.Pfx is null)
            yield return ("", "TLS needs \"certificate\" and \"key\" (PEM files) or \"pfx\" (a PKCS#12 file)");
        else if (pem && files.Certificate is null)
            yield return (".certificate", "is required with \"key\" (the PEM certificate file)");
        else if (pem && files.Key is null)
            yield return (".key", "is required with \"certificate\" (the PEM private key file)");
        else if (Refused(files, baseDirectory, access) is { } refused)
            yield return refused;
        else if (LoadCertificate(files, baseDirectory, out var error) is null)
            yield return (files.Pfx is not null ? ".pfx" : ".certificate", error!);
        if (files.Pfx is null && (files.Password is not null || files.PasswordEnv is not null))
            yield return (".password", "a password only applies to a \"pfx\" file");
        if (files.PasswordEnv is { } env && Environment.GetEnvironmentVariable(env) is null)
            yield return (".passwordEnv", $"environment variable '{env}' is not set");
    }

    /// <summary>The first certificate file <paramref name="access"/> does not allow to open, if any.</summary>
    private static (string Path, string Message)? Refused(CertificateFiles files, string baseDirectory, ConfigFileAccess access)
    {
        foreach (var (name, file) in new[] { (".pfx", files.Pfx), (".certificate", files.Certificate), (".key", files.Key) })
            if (file is not null && !access.TryResolve(baseDirectory, file, out _, out var error)) return (name, error!);
        return null;
    }

    /// <summary>The handshake options of the listener's own certificate: a new handshake reads them once, a reload replaces them whole.</summary>
    public SslServerAuthenticationOptions ServerOptions => Volatile.Read(ref _slots[0].Options);

    /// <summary>The options for the server name a client asked for (SNI): an exact "sni" host, else a "*." one, else the listener's own.</summary>
    public SslServerAuthenticationOptions SelectOptions(string? serverName)
    {
        if (_slots.Length == 1 || string.IsNullOrEmpty(serverName)) return ServerOptions;
        if (_exactNames.TryGetValue(serverName, out var slot)) return Volatile.Read(ref slot.Options);
        foreach (var (suffix, s) in _wildcards)
        {
            // "*.example.com" covers exactly one more label: a.example.com, not a.b.example.com
            if (serverName.Length > suffix.Length && serverName.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                && serverName.AsSpan(0, serverName.Length - suffix.Length).IndexOf('.') < 0)
                return Volatile.Read(ref s.Options);
        }
        return ServerOptions;
    }

    /// <summary>For SslStream.AuthenticateAsServerAsync: picks the certificate by the ClientHello's server name.</summary>
    public ValueTask<SslServerAuthenticationOptions> SelectOptionsAsync(SslStream stream, SslClientHelloInfo hello, object? state, CancellationToken cancel) =>
        new(SelectOptions(hello.ServerName));

    /// <summary>Starts checking the certificate files for changes (every <see cref="PollInterval"/>).</summary>
    public void StartWatching(TimeProvider? time = null)
    {
        _poll ??= (time ?? TimeProvider.System).CreateTimer(_ => Poll(), null, PollInterval, PollInterval);
    }

    private void Poll()
    {
        if (Interlocked.Exchange(ref _polling, 1) == 1) return;
        try
        {
            foreach (var slot in _slots)
            {
                var now = Stamp(WatchedFiles(slot.Files));
                if (now.AsSpan().SequenceEqual(slot.Stamps)) continue;
                // a writer may be half-way through replacing the pair: a failed load is retried on the next change
                slot.Stamps = now;
                Reload(slot);
            }
        }
        finally
        {
            Volatile.Write(ref _polling, 0);
        }
    }

    /// <summary>Loads every certificate again; on success new handshakes use them, on failure the old ones stay.</summary>
    public bool Reload()
    {
        bool all = true;
        foreach (var slot in _slots) all &= Reload(slot);
        return all;
    }

    private bool Reload(Slot slot)
    {
        var certificate = LoadCertificate(slot.Files, _baseDirectory, out var error);
        if (certificate is null)
        {
            _metrics.TlsCertificateReloads.WithLabels(slot.Label, "error").Inc();
            Logger?.LogError("listener {Listener}: certificate reload failed, the current certificate stays in use: {Error}", slot.Label, error);
            return false;
        }
        Install(slot, certificate);
        _metrics.TlsCertificateReloads.WithLabels(slot.Label, "ok").Inc();
        Logger?.LogInformation("listener {Listener}: certificate reloaded ({Subject}, expires {NotAfter:O})", slot.Label, certificate.Leaf.Subject, certificate.Leaf.NotAfter.ToUniversalTime());
        return true;
    }

    private SslServerAuthenticationOptions BuildOptions(ServerCertificate certificate) => new()
    {
        ServerCertificateContext = SslStreamCertificateContext.Create(certificate.Leaf, certificate.Intermediates, offline: true),
        EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        ApplicationProtocols = _alpn,
        AllowRenegotiation = false,
        ClientCertificateRequired = _config.ClientCertificate != ClientCertificateMode.None,
        RemoteCertificateValidationCallback = _config.ClientCertificate == ClientCertificateMode.None ? null : ValidateClientCertificate,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
    };

    /// <summary>
    /// A client certificate must chain to the listener's CA bundle (and nothing else: the system store is not
    /// consulted), be within its validity period and, when it names usages, allow client authentication.
    /// </summary>
    private bool ValidateClientCertificate(object sender, X509Certificate? certificate, X509Chain? presented, SslPolicyErrors errors)
    {
        if (certificate is null)
        {
            if (_config.ClientCertificate != ClientCertificateMode.Required) return true;
            _metrics.TlsClientCertificateRejections.WithLabels(_listener, "missing").Inc();
            return false;
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_clientRoots!);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(s_clientAuth);
        if (presented is not null)
            for (int i = 1; i < presented.ChainElements.Count; i++) chain.ChainPolicy.ExtraStore.Add(presented.ChainElements[i].Certificate);
        var leaf = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        bool ok = chain.Build(leaf);
        if (!ok) _metrics.TlsClientCertificateRejections.WithLabels(_listener, "untrusted").Inc();
        return ok;
    }

    private sealed record ServerCertificate(X509Certificate2 Leaf, X509Certificate2Collection Intermediates);

    private static ServerCertificate? LoadCertificate(CertificateFiles config, string baseDirectory, out string? error)
    {
        error = null;
        string? file = null;
        try
        {
            X509Certificate2 leaf;
            var intermediates = new X509Certificate2Collection();
            if (config.Pfx is { } pfx)
            {
                file = ConfigPath.Resolve(pfx, baseDirectory);
                var all = X509CertificateLoader.LoadPkcs12CollectionFromFile(file, config.ResolvePassword());
                X509Certificate2? withKey = null;
                foreach (var c in all)
                {
                    if (withKey is null && c.HasPrivateKey) withKey = c;
                    else intermediates.Add(c);
                }
                if (withKey is null)
                {
                    error = $"'{file}' holds no certificate with a private key";
                    return null;
                }
                leaf = withKey;
            }
            else
            {
                file = ConfigPath.Resolve(config.Certificate!, baseDirectory);
                string keyFile = ConfigPath.Resolve(config.Key!, baseDirectory);
                using var pemLeaf = X509Certificate2.CreateFromPemFile(file, keyFile);
                // a PKCS#12 round trip gives a certificate whose key every platform's TLS stack can use (Windows
                // refuses ephemeral keys)
                leaf = X509CertificateLoader.LoadPkcs12(pemLeaf.Export(X509ContentType.Pkcs12), null);
                var chain = new X509Certificate2Collection();
                chain.ImportFromPemFile(file);
                foreach (var c in chain)
                    if (c.Thumbprint != leaf.Thumbprint) intermediates.Add(c);
            }
            var now = DateTime.Now;
            if (leaf.NotAfter < now)
            {
                error = $"the certificate in '{file}' ({leaf.Subject}) expired on {leaf.NotAfter.ToUniversalTime():O}";
                return null;
            }
            return new ServerCertificate(leaf, intermediates);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            error = $"cannot load the certificate{(file is null ? "" : $" from '{file}'")}: {e.Message}";
            return null;
        }
    }

    private IEnumerable<string> WatchedFiles(CertificateFiles files)
    {
        if (files.Pfx is { } pfx) yield return ConfigPath.Resolve(pfx, _baseDirectory);
        if (files.Certificate is { } c) yield return ConfigPath.Resolve(c, _baseDirectory);
        if (files.Key is { } k) yield return ConfigPath.Resolve(k, _baseDirectory);
    }

    internal readonly record struct FileStamp(DateTime Written, long Length);

    private static FileStamp[] Stamp(IEnumerable<string> files) => files.Select(f =>
    {
        var info = new FileInfo(f);
        return info.Exists ? new FileStamp(info.LastWriteTimeUtc, info.Length) : default;
    }).ToArray();

    public void Dispose() => _poll?.Dispose();
}
