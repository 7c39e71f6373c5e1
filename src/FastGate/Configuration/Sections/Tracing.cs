namespace FastGate.Configuration;

public enum OtlpProtocol : byte { HttpProtobuf, Grpc }

/// <summary>The <c>tracing</c> section: OpenTelemetry spans for the gateway's part of each request (docs/observability.md, "Traces").</summary>
public sealed record TracingConfig
{
    /// <summary>Off by default; with it off no span is ever started and the request path allocates nothing for it.</summary>
    public bool Enabled { get; init; }
    /// <summary>The OTLP endpoint: for httpProtobuf the base URL ("/v1/traces" is appended), for grpc the collector's URL.</summary>
    public string Endpoint { get; init; } = "http://127.0.0.1:4318";
    public OtlpProtocol Protocol { get; init; } = OtlpProtocol.HttpProtobuf;
    /// <summary>Head sampling of new traces (0..1); an incoming traceparent's sampled flag is followed.</summary>
    public double SampleRatio { get; init; } = 1.0;
    /// <summary>Record every request and export the unsampled ones that end in an error (5xx or a gateway refusal other than 404).</summary>
    public bool AlwaysSampleErrors { get; init; }
    /// <summary>service.name of the resource.</summary>
    public string ServiceName { get; init; } = "fastgate";
    /// <summary>The batch exporter's delay between exports.</summary>
    public TimeSpan ExportInterval { get; init; } = TimeSpan.FromSeconds(5);
}

internal static class TracingConfigBinder
{
    internal static readonly string[] Properties =
        ConfigReader.Names(nameof(TracingConfig.Enabled), nameof(TracingConfig.Endpoint), nameof(TracingConfig.Protocol),
            nameof(TracingConfig.SampleRatio), nameof(TracingConfig.AlwaysSampleErrors), nameof(TracingConfig.ServiceName),
            nameof(TracingConfig.ExportInterval));

    private static readonly string s_name = ConfigReader.Names(nameof(GatewayConfig.Tracing))[0];
    private static string P(string property) => ConfigReader.Names(property)[0];

    public static TracingConfig Bind(System.Text.Json.JsonElement root, ConfigReader r)
    {
        string path = "$." + s_name;
        if (!r.TryGet(root, "$", s_name, false, out var e) || !r.IsObject(e, path)) return new TracingConfig();
        r.CheckUnknown(e, path, Properties);
        var d = new TracingConfig();
        var endpoint = r.String(e, path, P(nameof(TracingConfig.Endpoint))) ?? d.Endpoint;
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            r.Error(ConfigReader.Child(path, P(nameof(TracingConfig.Endpoint))), $"expected an http:// or https:// URL (found '{endpoint}')");
        var protocol = r.String(e, path, P(nameof(TracingConfig.Protocol))) switch
        {
            null => d.Protocol,
            "httpProtobuf" => OtlpProtocol.HttpProtobuf,
            "grpc" => OtlpProtocol.Grpc,
            var other => Invalid(r, ConfigReader.Child(path, P(nameof(TracingConfig.Protocol))), other),
        };
        var service = r.String(e, path, P(nameof(TracingConfig.ServiceName))) ?? d.ServiceName;
        if (service.Length == 0) r.Error(ConfigReader.Child(path, P(nameof(TracingConfig.ServiceName))), "must not be empty");
        var interval = r.Duration(e, path, P(nameof(TracingConfig.ExportInterval))) ?? d.ExportInterval;
        if (interval <= TimeSpan.Zero) r.Error(ConfigReader.Child(path, P(nameof(TracingConfig.ExportInterval))), "must be greater than 0");
        return new TracingConfig
        {
            Enabled = r.Bool(e, path, P(nameof(TracingConfig.Enabled))) ?? d.Enabled,
            Endpoint = endpoint,
            Protocol = protocol,
            SampleRatio = r.Number(e, path, P(nameof(TracingConfig.SampleRatio)), 0, 1) ?? d.SampleRatio,
            AlwaysSampleErrors = r.Bool(e, path, P(nameof(TracingConfig.AlwaysSampleErrors))) ?? d.AlwaysSampleErrors,
            ServiceName = service,
            ExportInterval = interval,
        };
    }

    private static OtlpProtocol Invalid(ConfigReader r, string path, string value)
    {
        r.Error(path, $"expected httpProtobuf or grpc (found '{value}')");
        return OtlpProtocol.HttpProtobuf;
    }
}
