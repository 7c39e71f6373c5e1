using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>One span as the OTLP wire carried it (opentelemetry/proto/trace/v1/trace.proto).</summary>
public sealed record OtlpSpan(string TraceId, string SpanId, string ParentSpanId, string Name, int Kind, int StatusCode,
    IReadOnlyDictionary<string, object> Attributes, string ServiceName, string Scope, ulong StartNanos, ulong EndNanos)
{
    public const int KindServer = 2, KindClient = 3, StatusError = 2;
}

/// <summary>
/// A minimal OTLP/HTTP collector: POST /v1/traces with an application/x-protobuf ExportTraceServiceRequest, decoded
/// here from the protobuf wire format per the OTLP proto files (the fields the gateway's spans use).
/// </summary>
public sealed class OtlpCollector : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<OtlpSpan> _spans = new();
    private readonly SemaphoreSlim _arrived = new(0);

    private OtlpCollector(WebApplication app) => _app = app;

    public string Endpoint { get; private set; } = "";
    public IReadOnlyCollection<OtlpSpan> Spans => _spans.ToArray();
    public int Requests;

    public static async Task<OtlpCollector> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var collector = new OtlpCollector(app);
        app.MapPost("/v1/traces", async (HttpContext context) =>
        {
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body);
            Interlocked.Increment(ref collector.Requests);
            int n = 0;
            foreach (var span in Decode(body.ToArray())) { collector._spans.Enqueue(span); n++; }
            collector._arrived.Release(n);
            context.Response.ContentType = "application/x-protobuf";
            return Results.Bytes([], "application/x-protobuf");
        });
        await app.StartAsync();
        collector.Endpoint = app.Urls.First();
        return collector;
    }

    /// <summary>Waits until <paramref name="count"/> spans in all have arrived.</summary>
    public async Task WaitForSpansAsync(int count, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(20));
        while (_spans.Count < count) await _arrived.WaitAsync(cts.Token);
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    // ---- protobuf wire format ----

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;
        public bool More => _pos < _data.Length;

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = _data[_pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
        }

        public (int Field, int Wire) Tag()
        {
            var t = Varint();
            return ((int)(t >> 3), (int)(t & 7));
        }

        public ReadOnlySpan<byte> Bytes()
        {
            int n = (int)Varint();
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        public ulong Fixed64()
        {
            var v = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(_data.Slice(_pos, 8));
            _pos += 8;
            return v;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: Bytes(); break;
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
        }
    }

    internal static List<OtlpSpan> Decode(ReadOnlySpan<byte> request)
    {
        var spans = new List<OtlpSpan>();
        var r = new Reader(request);
        while (r.More)
        {
            var (f, w) = r.Tag();
            if (f == 1 && w == 2) ResourceSpans(r.Bytes(), spans);
            else r.Skip(w);
        }
        return spans;
    }

    private static void ResourceSpans(ReadOnlySpan<byte> data, List<OtlpSpan> spans)
    {
        string service = "";
        var scopes = new List<byte[]>();
        var r = new Reader(data);
        while (r.More)
        {
            var (f, w) = r.Tag();
            if (f == 1 && w == 2) // Resource
            {
                var rr = new Reader(r.Bytes());
                while (rr.More)
                {
                    var (rf, rw) = rr.Tag();
                    if (rf == 1 && rw == 2)
                    {
                        var (k, v) = KeyValue(rr.Bytes());
                        if (k == "service.name") service = (string)v;
                    }
                    else rr.Skip(rw);
                }
            }
            else if (f == 2 && w == 2) scopes.Add(r.Bytes().ToArray());
            else r.Skip(w);
        }
        foreach (var s in scopes) ScopeSpans(s, service, spans);
    }

    private static void ScopeSpans(ReadOnlySpan<byte> data, string service, List<OtlpSpan> spans)
    {
        string scope = "";
        var raw = new List<byte[]>();
        var r = new Reader(data);
        while (r.More)
        {
            var (f, w) = r.Tag();
            if (f == 1 && w == 2)
            {
                var sr = new Reader(r.Bytes());
                while (sr.More)
                {
                    var (sf, sw) = sr.Tag();
                    if (sf == 1 && sw == 2) scope = System.Text.Encoding.UTF8.GetString(sr.Bytes());
                    else sr.Skip(sw);
                }
            }
            else if (f == 2 && w == 2) raw.Add(r.Bytes().ToArray());
            else r.Skip(w);
        }
        foreach (var s in raw) spans.Add(Span(s, service, scope));
    }

    private static OtlpSpan Span(ReadOnlySpan<byte> data, string service, string scope)
    {
        string trace = "", id = "", parent = "", name = "";
        int kind = 0, status = 0;
        ulong start = 0, end = 0;
        var attributes = new Dictionary<string, object>();
        var r = new Reader(data);
        while (r.More)
        {
            var (f, w) = r.Tag();
            switch (f, w)
            {
                case (1, 2): trace = Convert.ToHexStringLower(r.Bytes()); break;
                case (2, 2): id = Convert.ToHexStringLower(r.Bytes()); break;
                case (4, 2): parent = Convert.ToHexStringLower(r.Bytes()); break;
                case (5, 2): name = System.Text.Encoding.UTF8.GetString(r.Bytes()); break;
                case (6, 0): kind = (int)r.Varint(); break;
                case (7, 1): start = r.Fixed64(); break;
                case (8, 1): end = r.Fixed64(); break;
                case (9, 2):
                    var (k, v) = KeyValue(r.Bytes());
                    attributes[k] = v;
                    break;
                case (15, 2):
                    var st = new Reader(r.Bytes());
                    while (st.More)
                    {
                        var (sf, sw) = st.Tag();
                        if (sf == 3 && sw == 0) status = (int)st.Varint();
                        else st.Skip(sw);
                    }
                    break;
                default: r.Skip(w); break;
            }
        }
        return new OtlpSpan(trace, id, parent, name, kind, status, attributes, service, scope, start, end);
    }

    private static (string Key, object Value) KeyValue(ReadOnlySpan<byte> data)
    {
        string key = "";
        object value = "";
        var r = new Reader(data);
        while (r.More)
        {
            var (f, w) = r.Tag();
            if (f == 1 && w == 2) key = System.Text.Encoding.UTF8.GetString(r.Bytes());
            else if (f == 2 && w == 2)
            {
                var a = new Reader(r.Bytes());
                while (a.More)
                {
                    var (af, aw) = a.Tag();
                    switch (af, aw)
                    {
                        case (1, 2): value = System.Text.Encoding.UTF8.GetString(a.Bytes()); break;
                        case (2, 0): value = a.Varint() != 0; break;
                        case (3, 0): value = (long)a.Varint(); break;
                        case (4, 1): value = BitConverter.UInt64BitsToDouble(a.Fixed64()); break;
                        default: a.Skip(aw); break;
                    }
                }
            }
            else r.Skip(w);
        }
        return (key, value);
    }
}
