using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Security;

/// <summary>
/// A device known by its client certificate (mTLS): the SHA-256 of the certificate's SubjectPublicKeyInfo (stays
/// the same when a certificate is re-issued for the same key) or the certificate's thumbprint (SHA-1 or SHA-256 of
/// the whole certificate, in hex).
/// </summary>
public sealed record DeviceConfig
{
    public string Id { get; init; } = "";
    public string? SpkiSha256 { get; init; }
    public string? Thumbprint { get; init; }
}

/// <summary>What is forwarded about the device.</summary>
public sealed record MtlsOptionsConfig
{
    /// <summary>The header that carries the device id upstream; a client's copy is always removed.</summary>
    public string DeviceHeader { get; init; } = "X-Device-Id";
}

/// <summary>An allowlisted device, as the request path sees it.</summary>
public sealed class DeviceModel
{
    public required string Id { get; init; }
    /// <summary>"&lt;deviceHeader&gt;: &lt;id&gt;\r\n", written as is into the upstream head.</summary>
    public required byte[] ForwardedHeaderLine { get; init; }
}

/// <summary>
/// The fingerprints of one connection's client certificate, computed once after the handshake: lower-case hex of the
/// SPKI SHA-256, the SHA-256 thumbprint and the SHA-1 thumbprint. Requests look them up in the current
/// <see cref="DeviceTable"/> (string keys precomputed here, so the lookup allocates nothing).
/// </summary>
public sealed class ClientCertificateFingerprints
{
    private ClientCertificateFingerprints(string spki, string sha256, string sha1)
    {
        SpkiSha256 = spki;
        ThumbprintSha256 = sha256;
        ThumbprintSha1 = sha1;
    }

    public string SpkiSha256 { get; }
    public string ThumbprintSha256 { get; }
    public string ThumbprintSha1 { get; }

    public static ClientCertificateFingerprints From(X509Certificate2 certificate) => new(
        SpkiSha256Hex(certificate),
        Convert.ToHexStringLower(certificate.GetCertHash(HashAlgorithmName.SHA256)),
        Convert.ToHexStringLower(certificate.GetCertHash(HashAlgorithmName.SHA1)));

    /// <summary>Hex SHA-256 of the DER SubjectPublicKeyInfo, as `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum` prints it.</summary>
    public static string SpkiSha256Hex(X509Certificate2 certificate) =>
        Convert.ToHexStringLower(SHA256.HashData(certificate.PublicKey.ExportSubjectPublicKeyInfo()));
}

/// <summary>The allowlist of one snapshot: fingerprint (hex) → device.</summary>
public sealed class DeviceTable
{
    public static readonly DeviceTable Empty = new([], new MtlsOptionsConfig());

    private readonly Dictionary<string, DeviceModel> _byFingerprint = new(StringComparer.Ordinal);

    public DeviceTable(IReadOnlyList<DeviceConfig> devices, MtlsOptionsConfig options)
    {
        HeaderName = Encoding.ASCII.GetBytes(options.DeviceHeader);
        foreach (var d in devices)
        {
            var model = new DeviceModel { Id = d.Id, ForwardedHeaderLine = Encoding.UTF8.GetBytes($"{options.DeviceHeader}: {d.Id}\r\n") };
            if (Normalize(d.SpkiSha256) is { } spki) _byFingerprint[spki] = model;
            if (Normalize(d.Thumbprint) is { } thumb) _byFingerprint[thumb] = model;
        }
    }

    /// <summary>The device header's name (a client's copy of it is never forwarded).</summary>
    public byte[] HeaderName { get; }
    public int Count => _byFingerprint.Count;

    /// <summary>The device a certificate belongs to, or null when none is allowlisted for it.</summary>
    public DeviceModel? Find(ClientCertificateFingerprints? certificate)
    {
        if (certificate is null || _byFingerprint.Count == 0) return null;
        if (_byFingerprint.TryGetValue(certificate.SpkiSha256, out var d)) return d;
        if (_byFingerprint.TryGetValue(certificate.ThumbprintSha256, out d)) return d;
        return _byFingerprint.TryGetValue(certificate.ThumbprintSha1, out d) ? d : null;
    }

    /// <summary>Lower-case hex without separators (":" and spaces, as tools print them, are dropped).</summary>
    internal static string? Normalize(string? hex) =>
        string.IsNullOrWhiteSpace(hex) ? null : hex.Replace(":", "", StringComparison.Ordinal).Replace(" ", "", StringComparison.Ordinal).ToLowerInvariant();
}

internal static class DeviceConfigBinder
{
    /// <summary><c>devices[]</c>.</summary>
    internal static readonly string[] DeviceProperties =
        ConfigReader.Names(nameof(DeviceConfig.Id), nameof(DeviceConfig.SpkiSha256), nameof(DeviceConfig.Thumbprint));
    /// <summary><c>mtls</c>.</summary>
    internal static readonly string[] MtlsProperties = ConfigReader.Names(nameof(MtlsOptionsConfig.DeviceHeader));

    public static List<DeviceConfig> BindDevices(JsonElement root, ConfigReader r) =>
        r.Objects(root, "$", nameof(GatewayConfig.Devices), false, (e, p) =>
        {
            r.CheckUnknown(e, p, DeviceProperties);
            return new DeviceConfig
            {
                Id = r.String(e, p, nameof(DeviceConfig.Id), required: true) ?? "",
                SpkiSha256 = r.String(e, p, nameof(DeviceConfig.SpkiSha256)),
                Thumbprint = r.String(e, p, nameof(DeviceConfig.Thumbprint)),
            };
        });

    public static MtlsOptionsConfig BindOptions(JsonElement root, ConfigReader r)
    {
        var d = new MtlsOptionsConfig();
        if (!r.TryGet(root, "$", nameof(GatewayConfig.Mtls), false, out var e) || !r.IsObject(e, "$.mtls")) return d;
        r.CheckUnknown(e, "$.mtls", MtlsProperties);
        return new MtlsOptionsConfig { DeviceHeader = r.String(e, "$.mtls", nameof(MtlsOptionsConfig.DeviceHeader)) ?? d.DeviceHeader };
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var prints = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Devices.Count; i++)
        {
            var d = config.Devices[i];
            string p = $"$.devices[{i}]";
            if (d.Id.Length > 0 && !ids.Add(d.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate device id '{d.Id}'"));
            if (d.Id.Length > 0 && !IsHeaderValue(d.Id)) errors.Add(new ConfigError(p + ".id", "a device id is forwarded in a header: use visible ASCII characters only"));
            if (d.SpkiSha256 is null && d.Thumbprint is null)
                errors.Add(new ConfigError(p, "a device needs \"spkiSha256\" (SHA-256 of the certificate's public key) or \"thumbprint\""));
            Check(d.SpkiSha256, p + ".spkiSha256", [64], "64 hex digits (SHA-256 of the SubjectPublicKeyInfo)");
            Check(d.Thumbprint, p + ".thumbprint", [40, 64], "40 (SHA-1) or 64 (SHA-256) hex digits");

            void Check(string? value, string path, int[] lengths, string expected)
            {
                if (value is null) return;
                var hex = DeviceTable.Normalize(value) ?? "";
                if (!lengths.Contains(hex.Length) || !hex.All(char.IsAsciiHexDigit)) errors.Add(new ConfigError(path, $"expected {expected}"));
                else if (prints.TryGetValue(hex, out var owner)) errors.Add(new ConfigError(path, $"this certificate already belongs to device '{owner}'"));
                else prints[hex] = d.Id;
            }
        }
        if (!ConfigValidator.IsToken(config.Mtls.DeviceHeader)) errors.Add(new ConfigError("$.mtls.deviceHeader", $"'{config.Mtls.DeviceHeader}' is not a header name"));
        if (config.Devices.Count > 0 && !config.Listeners.Any(l => l.Tls is { ClientCertificate: not ClientCertificateMode.None }))
            errors.Add(new ConfigError("$.devices", "devices are identified by client certificates: set tls.clientCertificate to \"optional\" or \"required\" on a listener"));
    }

    private static bool IsHeaderValue(string s) => s.All(c => c is >= '!' and <= '~');
}
