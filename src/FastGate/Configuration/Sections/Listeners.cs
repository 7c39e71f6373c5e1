using System.Net;
using System.Text.Json;

namespace FastGate.Configuration;

// The listeners and admin sections: what the user writes, how it is bound (errors with their JSON path) and checked.

public sealed record ListenerConfig
{
    public string Name { get; init; } = "";
    public string Address { get; init; } = "";
    /// <summary>TLS termination on this listener (null: plain HTTP/1.1).</summary>
    public ListenerTlsConfig? Tls { get; init; }
    /// <summary>
    /// Also serve HTTP/2 (docs/http2.md): h2 by ALPN on a TLS listener, h2c with prior knowledge on a plain one;
    /// HTTP/1.1 connections still go to the strict HTTP/1.1 loop. Off by default.
    /// </summary>
    public bool Http2 { get; init; }
}

public enum ClientCertificateMode : byte { None, Optional, Required }

/// <summary>A listener's TLS settings: a PEM certificate and key, or a PKCS#12 (PFX) file; client certificates (mTLS).</summary>
public sealed record ListenerTlsConfig
{
    /// <summary>The listener's own certificate ("certificate"/"key" or "pfx"/"password"/"passwordEnv").</summary>
    public CertificateFiles Files { get; init; } = new(null, null, null, null, null);
    public ClientCertificateMode ClientCertificate { get; init; } = ClientCertificateMode.None;
    /// <summary>PEM bundle of the CA certificates client certificates must chain to (required unless clientCertificate is none).</summary>
    public string? ClientCa { get; init; }
    /// <summary>More certificates, chosen by the server name the client asks for (SNI); this one serves every other name.</summary>
    public IReadOnlyList<SniCertificateConfig> Sni { get; init; } = [];
}

/// <summary>A certificate for the server names in <see cref="Hosts"/> ("api.example.com" or "*.example.com").</summary>
public sealed record SniCertificateConfig
{
    public IReadOnlyList<string> Hosts { get; init; } = [];
    public CertificateFiles Files { get; init; } = new(null, null, null, null, null);
}

/// <summary>
/// Where one server certificate comes from: a PEM pair (the certificate file may carry intermediates after it; the
/// key unencrypted), or a PKCS#12 file and its password (or the environment variable holding it).
/// </summary>
public sealed record CertificateFiles(string? Certificate, string? Key, string? Pfx, string? Password, string? PasswordEnv)
{
    public string? ResolvePassword() =>
        !string.IsNullOrEmpty(Password) ? Password : PasswordEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
}

public sealed record AdminConfig
{
    public string Address { get; init; } = "127.0.0.1:9901";
    /// <summary>Bearer token for /admin/*; required when the admin listener is not on a loopback address.</summary>
    public string? Token { get; init; }
    /// <summary>Name of an environment variable holding the token (keeps it out of the file).</summary>
    public string? TokenEnv { get; init; }

    public string? ResolveToken() =>
        !string.IsNullOrEmpty(Token) ? Token : TokenEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
}

/// <summary>Binds and checks <c>listeners</c> (with their TLS settings) and <c>admin</c>.</summary>
internal static class ListenerConfigBinder
{
    /// <summary><c>admin</c>.</summary>
    internal static readonly string[] AdminProperties =
        ConfigReader.Names(nameof(AdminConfig.Address), nameof(AdminConfig.Token), nameof(AdminConfig.TokenEnv));

    /// <summary><c>listeners[]</c>.</summary>
    internal static readonly string[] ListenerProperties =
        ConfigReader.Names(nameof(ListenerConfig.Name), nameof(ListenerConfig.Address), nameof(ListenerConfig.Tls), nameof(ListenerConfig.Http2));

    /// <summary>A certificate source (<see cref="CertificateFiles"/>), in listeners[].tls and its sni[] entries.</summary>
    internal static readonly string[] CertificateFileProperties =
        ConfigReader.Names(nameof(CertificateFiles.Certificate), nameof(CertificateFiles.Key), nameof(CertificateFiles.Pfx),
        nameof(CertificateFiles.Password), nameof(CertificateFiles.PasswordEnv));

    /// <summary><c>listeners[].tls</c>.</summary>
    internal static readonly string[] ListenerTlsProperties =
        [.. CertificateFileProperties, .. ConfigReader.Names(nameof(ListenerTlsConfig.ClientCertificate),
        nameof(ListenerTlsConfig.ClientCa), nameof(ListenerTlsConfig.Sni))];

    /// <summary><c>listeners[].tls.sni[]</c>.</summary>
    internal static readonly string[] SniProperties =
        [.. ConfigReader.Names(nameof(SniCertificateConfig.Hosts)), .. CertificateFileProperties];

    public static List<ListenerConfig> BindListeners(JsonElement root, string path, ConfigReader r) =>
        r.Objects(root, path, nameof(GatewayConfig.Listeners), true, (e, p) =>
        {
            r.CheckUnknown(e, p, ListenerProperties);
            return new ListenerConfig
            {
                Name = r.String(e, p, nameof(ListenerConfig.Name)) ?? "",
                Address = r.String(e, p, nameof(ListenerConfig.Address), required: true) ?? "",
                Tls = BindListenerTls(e, p, r),
                Http2 = r.Bool(e, p, nameof(ListenerConfig.Http2)) ?? false,
            };
        });

    public static AdminConfig? BindAdmin(JsonElement root, string path, ConfigReader r)
    {
        AdminConfig? admin = null;
        if (r.TryGet(root, path, nameof(GatewayConfig.Admin), false, out var a) && r.IsObject(a, ConfigReader.Child(path, nameof(GatewayConfig.Admin))))
        {
            var ap = ConfigReader.Child(path, nameof(GatewayConfig.Admin));
            r.CheckUnknown(a, ap, AdminProperties);
            admin = new AdminConfig
            {
                Address = r.String(a, ap, nameof(AdminConfig.Address), required: true) ?? "",
                Token = r.String(a, ap, nameof(AdminConfig.Token)),
                TokenEnv = r.String(a, ap, nameof(AdminConfig.TokenEnv)),
            };
        }
        return admin;
    }

    private static ListenerTlsConfig? BindListenerTls(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, nameof(ListenerConfig.Tls), false, out var t) || !r.IsObject(t, ConfigReader.Child(p, nameof(ListenerConfig.Tls)))) return null;
        var tp = ConfigReader.Child(p, nameof(ListenerConfig.Tls));
        r.CheckUnknown(t, tp, ListenerTlsProperties);
        var mode = ClientCertificateMode.None;
        if (r.String(t, tp, nameof(ListenerTlsConfig.ClientCertificate)) is { } m)
        {
            switch (m)
            {
                case "none": mode = ClientCertificateMode.None; break;
                case "optional": mode = ClientCertificateMode.Optional; break;
                case "required": mode = ClientCertificateMode.Required; break;
                default: r.Error(ConfigReader.Child(tp, nameof(ListenerTlsConfig.ClientCertificate)), $"'{m}' is not one of none, optional, required"); break;
            }
        }
        return new ListenerTlsConfig
        {
            Files = BindCertificateFiles(t, tp, r),
            ClientCertificate = mode,
            ClientCa = r.String(t, tp, nameof(ListenerTlsConfig.ClientCa)),
            Sni = r.Objects(t, tp, nameof(ListenerTlsConfig.Sni), false, (se, sp) =>
            {
                r.CheckUnknown(se, sp, SniProperties);
                return new SniCertificateConfig { Hosts = r.Strings(se, sp, nameof(SniCertificateConfig.Hosts)), Files = BindCertificateFiles(se, sp, r) };
            }),
        };
    }

    private static CertificateFiles BindCertificateFiles(JsonElement e, string p, ConfigReader r) => new(
        r.String(e, p, nameof(CertificateFiles.Certificate)), r.String(e, p, nameof(CertificateFiles.Key)), r.String(e, p, nameof(CertificateFiles.Pfx)),
        r.String(e, p, nameof(CertificateFiles.Password)), r.String(e, p, nameof(CertificateFiles.PasswordEnv)));

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        if (config.Listeners.Count == 0) errors.Add(new ConfigError("$.listeners", "at least one listener is required"));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var addresses = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Listeners.Count; i++)
        {
            var l = config.Listeners[i];
            string p = $"$.listeners[{i}]";
            if (l.Name.Length > 0 && !names.Add(l.Name)) errors.Add(new ConfigError(p + ".name", $"duplicate listener name '{l.Name}'"));
            if (!ConfigValidator.TryParseEndPoint(l.Address, out var ep))
                errors.Add(new ConfigError(p + ".address", $"'{l.Address}' is not an address of the form 127.0.0.1:8080 or [::1]:8080"));
            else if (ep.Port != 0 && !addresses.Add(ep.ToString()))
                errors.Add(new ConfigError(p + ".address", $"address {ep} is used by another listener"));
            if (l.Tls is { } tls)
                foreach (var (sub, message) in Security.ListenerTls.Check(tls, config.BaseDirectory, config.Files))
                    errors.Add(new ConfigError(p + ".tls" + sub, message));
        }
        if (config.Admin is { } admin)
        {
            if (!ConfigValidator.TryParseEndPoint(admin.Address, out var adminEp))
                errors.Add(new ConfigError("$.admin.address", $"'{admin.Address}' is not an address of the form 127.0.0.1:9901"));
            else if (!IPAddress.IsLoopback(adminEp.Address) && string.IsNullOrEmpty(admin.ResolveToken()))
                errors.Add(new ConfigError("$.admin", $"the admin listener on {adminEp} is not loopback-only: set \"token\" or \"tokenEnv\" (a bearer token for /admin/*)"));
            ValidateAdminToken(admin, errors);
        }
    }

    /// <summary>Shortest admin token accepted (a bearer secret: 16 characters at the very least; use 32 random bytes).</summary>
    public const int MinAdminTokenLength = 16;

    private static void ValidateAdminToken(AdminConfig admin, List<ConfigError> errors)
    {
        if (admin.Token is { } token)
        {
            if (TokenProblem(token) is { } problem) errors.Add(new ConfigError("$.admin.token", problem));
        }
        else if (admin.TokenEnv is { } env)
        {
            var value = env.Length == 0 ? null : Environment.GetEnvironmentVariable(env);
            if (string.IsNullOrEmpty(value))
                errors.Add(new ConfigError("$.admin.tokenEnv", $"environment variable '{env}' is not set: the admin API would run without a token"));
            else if (TokenProblem(value) is { } problem)
                errors.Add(new ConfigError("$.admin.tokenEnv", $"the value of '{env}' {problem}"));
        }
    }

    private static string? TokenProblem(string token)
    {
        if (token.Any(c => c is <= ' ' or > '~'))
            return "must be visible ASCII without spaces (a presented token is trimmed, so spaces could never match)";
        if (token.Length < MinAdminTokenLength)
            return $"must be at least {MinAdminTokenLength} characters (found {token.Length}); `fastgate new-key` makes one";
        return null;
    }
}
