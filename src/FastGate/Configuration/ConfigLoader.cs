using System.Text.Json;

namespace FastGate.Configuration;

/// <summary>The outcome of reading a configuration: the config when it is valid, and every error found.</summary>
public sealed record ConfigLoadResult(GatewayConfig? Config, IReadOnlyList<ConfigError> Errors, string Text)
{
    public bool IsValid => Config is not null && Errors.Count == 0;
    /// <summary>Valid but risky settings (e.g. upstream certificate checks turned off), to print at load.</summary>
    public IReadOnlyList<ConfigError> Warnings { get; init; } = [];
}

/// <summary>
/// Reads config JSON (comments and trailing commas allowed) into <see cref="GatewayConfig"/>, then runs every
/// validator. Errors from all stages are collected; nothing is applied by this class.
/// </summary>
public static class ConfigLoader
{
    private static readonly JsonDocumentOptions s_options = new()
    {
        CommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        MaxDepth = 64,
    };

    /// <summary>The top-level properties: "$schema", the sections of <see cref="GatewayConfig"/> and the observability sections.</summary>
    internal static readonly string[] RootProperties =
        ["$schema", .. ConfigReader.Names(nameof(GatewayConfig.Listeners), nameof(GatewayConfig.Admin), nameof(GatewayConfig.Clusters),
        nameof(GatewayConfig.Routes), nameof(GatewayConfig.Limits), nameof(GatewayConfig.Http), nameof(GatewayConfig.Policies),
        nameof(GatewayConfig.DefaultAction), nameof(GatewayConfig.IpLists), nameof(GatewayConfig.RateLimits), nameof(GatewayConfig.Redis),
        nameof(GatewayConfig.Consumers), nameof(GatewayConfig.ApiKeys), nameof(GatewayConfig.Cors), nameof(GatewayConfig.JwtIssuers),
        nameof(GatewayConfig.Jwt), nameof(GatewayConfig.TrustedProxies), nameof(GatewayConfig.Devices), nameof(GatewayConfig.Mtls), nameof(GatewayConfig.Tracing),
        nameof(GatewayConfig.Waf)),
        .. TransportConfigBinder.Properties, .. Observability.ObservabilityConfigReader.SectionNames];

    public static ConfigLoadResult LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new ConfigLoadResult(null, [new ConfigError("$", $"cannot read '{path}': {e.Message}")], "");
        }
        return Load(text, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <param name="baseDirectory">Where relative paths in the config (e.g. ipLists files) resolve; default: the current directory.</param>
    /// <param name="files">Which files the validators may open (default: any).</param>
    public static ConfigLoadResult Load(string json, string? baseDirectory = null, ConfigFileAccess? files = null)
    {
        var errors = new List<ConfigError>();
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, s_options);
        }
        catch (JsonException e)
        {
            return new ConfigLoadResult(null, [new ConfigError("$", $"invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}")], json);
        }
        using (doc)
        {
            CheckDuplicateKeys(doc.RootElement, "$", errors);
            var reader = new ConfigReader(errors);
            var config = Bind(doc.RootElement, reader);
            if (config is not null)
            {
                var baseDir = baseDirectory ?? Directory.GetCurrentDirectory();
                config = ResolvePaths(config with { BaseDirectory = baseDir, Files = files ?? ConfigFileAccess.Any });
                ConfigValidator.Validate(config, errors);
            }
            return new ConfigLoadResult(errors.Count == 0 ? config : null, errors, json)
            {
                Warnings = config is null ? [] : ConfigValidator.Warnings(config),
            };
        }
    }

    /// <summary>Binds <paramref name="json"/> and returns what the binders checked and read (errors are ignored): for tests.</summary>
    internal static ConfigReader.BindingTrace TraceBinding(string json)
    {
        var trace = new ConfigReader.BindingTrace();
        using var doc = JsonDocument.Parse(json, s_options);
        Bind(doc.RootElement, new ConfigReader([], trace));
        return trace;
    }

    /// <summary>
    /// Paths used after loading rather than checked by a validator (the access log's) become full paths here, against
    /// the config's directory (<see cref="ConfigPath"/>), so where a file goes never depends on the working directory.
    /// </summary>
    private static GatewayConfig ResolvePaths(GatewayConfig config)
    {
        var log = config.Observability.AccessLog;
        if (log.Path is "stdout" or "") return config;
        string full;
        try
        {
            full = ConfigPath.Resolve(log.Path, config.BaseDirectory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            return config; // opening it reports the problem, as before
        }
        return config with { Observability = config.Observability with { AccessLog = log with { Path = full } } };
    }

    /// <summary>
    /// A key written twice in one object (JSON allows it; the parser would keep the last value silently) is an error
    /// at the second occurrence, in every object of the document.
    /// </summary>
    private static void CheckDuplicateKeys(JsonElement e, string path, List<ConfigError> errors)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            HashSet<string>? seen = null;
            foreach (var p in e.EnumerateObject())
            {
                var child = ConfigReader.Child(path, p.Name);
                if (!(seen ??= new HashSet<string>(StringComparer.Ordinal)).Add(p.Name))
                    errors.Add(new ConfigError(child, $"duplicate key '{p.Name}' in this object: give it once (JSON parsers keep only one of the values)"));
                CheckDuplicateKeys(p.Value, child, errors);
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var item in e.EnumerateArray()) CheckDuplicateKeys(item, ConfigReader.Index(path, i++), errors);
        }
    }

    private static string FirstSentence(string message)
    {
        int i = message.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? message[..i] : message;
    }

    private static GatewayConfig? Bind(JsonElement root, ConfigReader r)
    {
        const string path = "$";
        if (!r.IsObject(root, path)) return null;
        r.CheckUnknown(root, path, RootProperties);
        var limits = LimitsConfigBinder.Bind(root, path, r);
        var admin = ListenerConfigBinder.BindAdmin(root, path, r);
        return new GatewayConfig
        {
            Listeners = ListenerConfigBinder.BindListeners(root, path, r),
            Admin = admin,
            Clusters = ClusterConfigBinder.Bind(root, path, r),
            Routes = RouteConfigBinder.Bind(root, path, r),
            Limits = limits,
            Http = HttpConfigBinder.Bind(root, r),
            Tracing = TracingConfigBinder.Bind(root, r),
            Policies = Policy.PolicyConfigBinder.Policies(root, path, r),
            DefaultAction = Policy.PolicyConfigBinder.DefaultAction(root, path, r),
            IpLists = Policy.PolicyConfigBinder.IpLists(root, path, r),
            RateLimits = RateLimitConfigBinder.BindLimits(root, r),
            Redis = RateLimitConfigBinder.BindRedis(root, r),
            Consumers = Security.ApiKeyConfigBinder.BindConsumers(root, r),
            ApiKeys = Security.ApiKeyConfigBinder.BindOptions(root, r),
            Cors = Security.CorsConfigBinder.Bind(root, r),
            JwtIssuers = Security.JwtConfigBinder.BindIssuers(root, r),
            Jwt = Security.JwtConfigBinder.BindOptions(root, r),
            TrustedProxies = r.Strings(root, path, nameof(GatewayConfig.TrustedProxies)),
            Devices = Security.DeviceConfigBinder.BindDevices(root, r),
            Mtls = Security.DeviceConfigBinder.BindOptions(root, r),
            Observability = Observability.ObservabilityConfigReader.Bind(root, path, r),
            Waf = Waf.WafConfigBinder.Bind(root, path, r),
            Transport = TransportConfigBinder.BindTransport(root, r),
            NativeLoops = TransportConfigBinder.BindNativeLoops(root, r),
            NativeIo = TransportConfigBinder.BindNativeIo(root, r),
        };
    }
}
