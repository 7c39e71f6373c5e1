using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Proxy;
using FastGate.Routing;

namespace FastGate.Benchmarks.Proxy;

/// <summary>
/// The per-request work between the sockets: parse the client head, pick the route, write the upstream head,
/// parse the upstream response head and write the client response head. Must be 0 B/op.
/// </summary>
[MemoryDiagnoser]
public class HeadRewriteBenchmarks
{
    private static readonly byte[] RequestBytes = Encoding.ASCII.GetBytes(
        "GET /api/orders/1?x=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
        "X-Forwarded-For: 10.0.0.1\r\nUser-Agent: bench\r\n\r\n");
    private static readonly byte[] ResponseBytes = Encoding.ASCII.GetBytes(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\nKeep-Alive: timeout=5\r\n\r\n");
    private static readonly byte[] ClientIp = "127.0.0.1"u8.ToArray();
    private static readonly byte[] RequestId = "0123456789abcdef0123456789abcdef"u8.ToArray();

    private readonly RequestHead _request = new();
    private readonly PolicyResult _decision = new();
    private FastGate.Pipeline.Exchange _exchange = null!;
    private static readonly ClientAddress Client = ClientAddress.From(IPAddress.Loopback);
    private readonly ResponseHead _response = new();
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 0, useSynchronizationContext: false));
    private GatewaySnapshot _snapshot = null!;
    private UpstreamPoolStore _pools = null!;

    [GlobalSetup]
    public void Setup()
    {
        var config = """
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
              "routes": [
                { "id": "health", "match": { "path": "/healthz" }, "cluster": "b" },
                { "id": "admin", "match": { "hosts": ["admin.example.com"], "pathPrefix": "/" }, "cluster": "b" },
                { "id": "api", "match": { "hosts": ["*.example.com"], "pathPrefix": "/api", "methods": ["GET", "POST"] }, "cluster": "b", "stripPrefix": true },
                { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "b" }
              ],
              "policies": [
                { "id": "block-admin", "match": { "paths": ["/admin/*"], "not": { "clientIps": ["10.0.0.0/8"] } },
                  "actions": [ { "type": "deny", "status": 403, "message": "forbidden" } ] },
                { "id": "tag", "match": { "methods": ["GET"] }, "actions": [ { "type": "setRequestHeaders", "headers": { "X-Gateway": "fastgate" } } ] }
              ]
            }
            """;
        var loaded = ConfigLoader.Load(config);
        if (!loaded.IsValid) throw new InvalidOperationException(string.Join("; ", loaded.Errors));
        _pools = new UpstreamPoolStore(new FastGate.Observability.GatewayMetrics());
        _snapshot = SnapshotCompiler.Compile(loaded.Config!, config, _pools);
    }

    [GlobalCleanup]
    public void Cleanup() => _pools.Dispose();

    [Benchmark]
    public long ParseRouteAndRewriteBothHeads()
    {
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(RequestBytes), _snapshot.Limits, _request, out _, out _);
        // the admission decision as the request path makes it, then both rewrites from the exchange
        _exchange ??= new FastGate.Pipeline.Exchange(_request, _decision);
        _exchange.Begin(ClientIp, Client, null);
        if (FastGate.Pipeline.Admission.Decide(_snapshot, _exchange, null) != FastGate.Pipeline.AdmissionVerdict.Forward)
            throw new InvalidOperationException("not admitted");
        HeadRewriter.WriteUpstreamRequest(_pipe.Writer, _exchange, _exchange.Cluster!.Next(), RequestId, tls: false);
        HttpResponseParser.TryParse(new ReadOnlySequence<byte>(ResponseBytes), _snapshot.Limits, _response, _request.Method, out _, out _);
        HeadRewriter.WriteClientResponse(_pipe.Writer, _response, _exchange, RequestId, close: false, interim: false);
        return Drain();
    }

    [Benchmark]
    public RouteModel? RouteOnly()
    {
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(RequestBytes), _snapshot.Limits, _request, out _, out _);
        return _snapshot.Router.Match(_request);
    }

    private long Drain()
    {
        _pipe.Writer.FlushAsync().GetAwaiter().GetResult();
        _pipe.Reader.TryRead(out var result);
        long n = result.Buffer.Length;
        _pipe.Reader.AdvanceTo(result.Buffer.End);
        return n;
    }
}
