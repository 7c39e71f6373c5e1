using System.Diagnostics;
using FastGate.Configuration;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace FastGate.Observability;

/// <summary>
/// OpenTelemetry traces of one runtime: a server span per request and a client span for its upstream part, made
/// with the SDK's sampler and exported by its OTLP exporter (batched, off the request path). Exists only when
/// <c>tracing.enabled</c>: a runtime without it never starts an activity, so the request path allocates nothing.
/// </summary>
public sealed class GatewayTracing : IDisposable
{
    public const string SourceName = "FastGate";
    private static readonly ActivitySource s_source = new(SourceName, typeof(GatewayTracing).Assembly.GetName().Version?.ToString(3));
    private readonly TracerProvider _provider;

    private GatewayTracing(TracerProvider provider, bool alwaysSampleErrors)
    {
        _provider = provider;
        AlwaysSampleErrors = alwaysSampleErrors;
    }

    public bool AlwaysSampleErrors { get; }

    public static GatewayTracing? Create(TracingConfig config, string serviceVersion)
    {
        if (!config.Enabled) return null;
        Sampler sampler = new ParentBasedSampler(new TraceIdRatioBasedSampler(config.SampleRatio));
        if (config.AlwaysSampleErrors) sampler = new RecordUnsampled(sampler);
        var provider = Sdk.CreateTracerProviderBuilder()
            .AddSource(SourceName)
            .SetSampler(sampler)
            .SetResourceBuilder(ResourceBuilder.CreateEmpty().AddService(config.ServiceName, serviceVersion: serviceVersion))
            .AddOtlpExporter(o =>
            {
                o.Protocol = config.Protocol == OtlpProtocol.Grpc ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
                var endpoint = config.Endpoint.TrimEnd('/');
                o.Endpoint = new Uri(config.Protocol == OtlpProtocol.HttpProtobuf && !endpoint.EndsWith("/v1/traces", StringComparison.Ordinal)
                    ? endpoint + "/v1/traces" : endpoint);
                o.ExportProcessorType = ExportProcessorType.Batch;
                o.BatchExportProcessorOptions = new BatchExportActivityProcessorOptions
                {
                    ScheduledDelayMilliseconds = (int)Math.Max(1, config.ExportInterval.TotalMilliseconds),
                    MaxQueueSize = 8192,
                    MaxExportBatchSize = 512,
                };
            })
            .Build();
        return new GatewayTracing(provider, config.AlwaysSampleErrors);
    }

    /// <summary>The server span of a request, parented on the incoming traceparent when it was valid.</summary>
    public Activity? StartServer(in TraceParent incoming, bool incomingValid, DateTimeOffset start)
    {
        var parent = incomingValid
            ? new ActivityContext(incoming.ToTraceId(), incoming.ToSpanId(), incoming.Sampled ? ActivityTraceFlags.Recorded : ActivityTraceFlags.None, isRemote: true)
            : default;
        return s_source.StartActivity("gateway", ActivityKind.Server, parent, startTime: start);
    }

    /// <summary>The upstream span, a child of <paramref name="server"/>; its ids are what the upstream receives as traceparent.</summary>
    public static Activity? StartClient(Activity server, DateTimeOffset start) =>
        s_source.StartActivity("upstream", ActivityKind.Client, server.Context, startTime: start);

    /// <summary>Makes a span that was only recorded (not sampled) exported after all: it ended in an error.</summary>
    public static void Keep(Activity activity) => activity.ActivityTraceFlags |= ActivityTraceFlags.Recorded;

    /// <summary>Exports what is queued (tests, shutdown).</summary>
    public bool Flush(int timeoutMilliseconds = 5000) => _provider.ForceFlush(timeoutMilliseconds);

    public void Dispose() => _provider.Dispose();

    /// <summary>Records (but does not sample) what the inner sampler drops, so an error can still be exported at its end.</summary>
    private sealed class RecordUnsampled(Sampler inner) : Sampler
    {
        public override SamplingResult ShouldSample(in SamplingParameters parameters)
        {
            var result = inner.ShouldSample(parameters);
            return result.Decision == SamplingDecision.Drop ? new SamplingResult(SamplingDecision.RecordOnly) : result;
        }
    }
}
