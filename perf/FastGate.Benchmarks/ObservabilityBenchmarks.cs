using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using FastGate.Observability;

namespace FastGate.Benchmarks;

/// <summary>
/// The request path's observability cost: the one Observe call (counters, anomaly table, access-log ring copy) and
/// the traceparent helper. Hot path: must show 0 B.
/// </summary>
[MemoryDiagnoser]
public class ObservabilityBenchmarks
{
    private GatewayObservability _hub = null!;
    private GatewayObservability _hubWithLog = null!;
    private readonly RouteMetrics _route = new("bench", new GatewayMetrics());
    private readonly byte[] _ip = "203.0.113.7"u8.ToArray();
    private readonly byte[] _incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"u8.ToArray();
    private readonly byte[] _outgoing = new byte[TraceContext.TraceParentLength];

    [GlobalSetup]
    public void Setup()
    {
        _hub = new GatewayObservability(new ObservabilityConfig { Anomaly = new AnomalyConfig { Enabled = true } });
        _hubWithLog = new GatewayObservability(new ObservabilityConfig
        {
            Anomaly = new AnomalyConfig { Enabled = true },
            AccessLog = new AccessLogConfig { Enabled = true, BufferEntries = 1 << 16 },
        }, accessLogStream: Stream.Null);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _hub.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _hubWithLog.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    private RequestRecord Record(long start) => new()
    {
        Route = _route, Cluster = "c", Upstream = "http://10.0.0.1:80", ClientIp = _ip, Method = "GET"u8, Host = "api.example"u8,
        Path = "/v1/orders/42"u8, Query = "?page=2"u8, RequestId = "0123456789abcdef0123456789abcdef"u8,
        TraceId = "0af7651916cd43dd8448eb211c80319c"u8, Status = 200, BytesIn = 200, BytesOut = 1200,
        StartTimestamp = start, UpstreamStartTimestamp = start, UpstreamEndTimestamp = start + 100, EndTimestamp = start + 200,
    };

    [Benchmark]
    public void Observe_CountersAndAnomaly() => _hub.OnRequest(Record(Stopwatch.GetTimestamp()));

    [Benchmark]
    public void Observe_WithAccessLog() => _hubWithLog.OnRequest(Record(Stopwatch.GetTimestamp()));

    [Benchmark]
    public TraceParent TraceParent_Continue() => TraceContext.WriteOutgoing(_incoming, _outgoing);

    [Benchmark]
    public TraceParent TraceParent_New() => TraceContext.WriteOutgoing([], _outgoing);
}
