using System.Buffers;
using System.Numerics;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using FastGate.Http;

namespace FastGate.Observability;

/// <summary>
/// The access log: one JSON object per line, written by a background thread. The request path only copies the
/// record's fields into a preallocated ring of fixed-size entries (a bounded multi-producer queue in the style of
/// Vyukov's array queue: a ticket per slot, no locks, no allocation). When the ring is full the entry is dropped and
/// counted (fastgate_access_log_dropped_total): a slow disk never blocks a request.
/// </summary>
/// <remarks>
/// Only the fields listed in docs/observability.md are logged: no header is ever copied, so API keys,
/// Authorization and cookies cannot appear. The query string is replaced by "?REDACTED" unless includeQuery, and
/// even then the values of credential-like parameters (api_key, token, password, ...) are redacted.
/// </remarks>
public sealed class AccessLog : IAsyncDisposable
{
    private readonly Entry[] _ring;
    private readonly int _mask;
    private long _enqueue;
    private long _dequeue; // written by the writer thread only; producers read it to see how full the ring is
    private readonly AccessLogConfig _config;
    private readonly TimeProvider _time;
    private readonly Prometheus.Counter _writtenMetric, _droppedMetric;
    private readonly Thread _thread;
    private readonly AutoResetEvent _signal = new(false);
    private readonly AccessLogSink _sink;
    private int _writerWaiting;
    private volatile bool _stopping;
    private long _dropped;
    private long _written;
    private readonly uint _sampleThreshold;
    private readonly byte[] _pathScratch = new byte[1024 + 16];
    private readonly long _wakeDepth;
    /// <summary>How long a line may wait in the ring before the writer writes it (unless the ring fills first).</summary>
    internal const int FlushIntervalMilliseconds = 50;

    /// <param name="metrics">Where the written and dropped entries are counted (unexported metrics of its own when omitted).</param>
    public AccessLog(AccessLogConfig config, TimeProvider? time = null, Stream? output = null, GatewayMetrics? metrics = null)
    {
        _writtenMetric = (metrics ??= new GatewayMetrics()).AccessLogWritten;
        _droppedMetric = metrics.AccessLogDropped;
        _config = config;
        _time = time ?? TimeProvider.System;
        int capacity = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, config.BufferEntries));
        _ring = new Entry[capacity];
        for (int i = 0; i < capacity; i++) _ring[i] = new Entry { Sequence = i };
        _mask = capacity - 1;
        _wakeDepth = capacity / 2;
        _sampleThreshold = config.SampleRate >= 1 ? uint.MaxValue : (uint)(config.SampleRate * uint.MaxValue);
        _sink = output is not null ? new AccessLogSink(output) : AccessLogSink.Open(config);
        _thread = new Thread(WriterLoop) { IsBackground = true, Name = "fastgate-access-log" };
        _thread.Start();
    }

    public int Capacity => _ring.Length;
    public long Dropped => Volatile.Read(ref _dropped);
    public long Written => Volatile.Read(ref _written);

    /// <summary>Copies the record into the ring. False when sampled out or dropped (full). Never blocks.</summary>
    public bool TryWrite(in RequestRecord r)
    {
        bool error = r.Status >= 400 || r.Reason != RejectReason.None;
        if (!error && _sampleThreshold != uint.MaxValue && (uint)Random.Shared.Next() * 2u >= _sampleThreshold) return false;
        long pos = Volatile.Read(ref _enqueue);
        Entry e;
        while (true)
        {
            e = _ring[pos & _mask];
            long seq = Volatile.Read(ref e.Sequence);
            long diff = seq - pos;
            if (diff == 0)
            {
                if (Interlocked.CompareExchange(ref _enqueue, pos + 1, pos) == pos) break;
                pos = Volatile.Read(ref _enqueue);
            }
            else if (diff < 0)
            {
                Interlocked.Increment(ref _dropped);
                _droppedMetric.Inc();
                return false;
            }
            else pos = Volatile.Read(ref _enqueue);
        }
        e.Fill(r, _time.GetUtcNow().UtcDateTime.Ticks);
        Volatile.Write(ref e.Sequence, pos + 1);
        // The writer wakes by itself every FlushInterval and writes what gathered as one batch; a request wakes it
        // early only when the ring is half full. (Waking it per request cost a futex wake, a thread switch and a
        // write(2) per line: +17 µs CPU per request measured on the plain row.)
        if (pos + 1 - Volatile.Read(ref _dequeue) >= _wakeDepth
            && Volatile.Read(ref _writerWaiting) != 0 && Interlocked.Exchange(ref _writerWaiting, 0) != 0) _signal.Set();
        return true;
    }

    private void WriterLoop()
    {
        var buffer = new ArrayBufferWriter<byte>(64 * 1024);
        var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true });
        while (true)
        {
            int batch = 0;
            while (TryDequeue(out var e, out long pos))
            {
                json.Reset(buffer);
                Format(json, e);
                json.Flush();
                buffer.Write("\n"u8);
                Volatile.Write(ref e.Sequence, pos + _ring.Length); // the slot is free again
                batch++;
                if (buffer.WrittenCount >= 48 * 1024) Flush(buffer, ref batch);
            }
            Flush(buffer, ref batch);
            if (_stopping)
            {
                if (TryPeek()) continue;
                _sink.Dispose();
                return;
            }
            Volatile.Write(ref _writerWaiting, 1);
            if (TryPeek()) { Volatile.Write(ref _writerWaiting, 0); continue; }
            _signal.WaitOne(FlushIntervalMilliseconds);
            Volatile.Write(ref _writerWaiting, 0);
        }
    }

    private void Flush(ArrayBufferWriter<byte> buffer, ref int batch)
    {
        if (batch == 0 && buffer.WrittenCount == 0) return;
        try
        {
            _sink.Write(buffer.WrittenSpan, _config);
            Interlocked.Add(ref _written, batch);
            _writtenMetric.Inc(batch);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            Interlocked.Add(ref _dropped, batch);
            _droppedMetric.Inc(batch);
        }
        buffer.ResetWrittenCount();
        batch = 0;
    }

    private bool TryPeek()
    {
        long pos = _dequeue;
        return Volatile.Read(ref _ring[pos & _mask].Sequence) == pos + 1;
    }

    private bool TryDequeue(out Entry entry, out long pos)
    {
        pos = _dequeue;
        entry = _ring[pos & _mask];
        if (Volatile.Read(ref entry.Sequence) != pos + 1) return false;
        Volatile.Write(ref _dequeue, pos + 1);
        return true;
    }

    /// <summary>Writes one entry as a JSON object (off the request path).</summary>
    private void Format(Utf8JsonWriter w, Entry e)
    {
        w.WriteStartObject();
        Span<byte> ts = stackalloc byte[32];
        new DateTime(e.UtcTicks, DateTimeKind.Utc).TryFormat(ts, out int tsLength, "yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture);
        w.WriteString("ts"u8, ts[..tsLength]);
        WriteBytes(w, "request_id"u8, e.Get(Field.RequestId));
        WriteBytes(w, "trace_id"u8, e.Get(Field.TraceId));
        WriteBytes(w, "client_ip"u8, e.Get(Field.ClientIp));
        WriteBytes(w, "method"u8, e.Get(Field.Method));
        WriteBytes(w, "host"u8, e.Get(Field.Host));
        WritePath(w, e);
        w.WriteString("route"u8, e.Route ?? "");
        w.WriteString("consumer"u8, e.Consumer ?? "");
        if (e.Subject is not null) w.WriteString("subject"u8, e.Subject);
        if (e.Device is not null) w.WriteString("device"u8, e.Device);
        w.WriteNumber("status"u8, e.Status);
        w.WriteNumber("bytes_in"u8, e.BytesIn);
        w.WriteNumber("bytes_out"u8, e.BytesOut);
        w.WriteString("upstream"u8, e.Upstream ?? "");
        if (e.UpstreamStart != 0 && e.UpstreamEnd >= e.UpstreamStart)
            w.WriteNumber("upstream_ms"u8, Math.Round(Stopwatch.GetElapsedTime(e.UpstreamStart, e.UpstreamEnd).TotalMilliseconds, 3));
        else w.WriteNull("upstream_ms"u8);
        w.WriteNumber("total_ms"u8, e.Start == 0 ? 0 : Math.Round(Stopwatch.GetElapsedTime(e.Start, e.End).TotalMilliseconds, 3));
        w.WriteString("decision"u8, e.Decision ?? (e.Reason == RejectReason.None ? "forwarded" : RejectReasons.Name(e.Reason)));
        w.WriteString("rule"u8, e.Rule ?? "");
        if (e.Waf is not null) w.WriteString("waf"u8, e.Waf); // WAF routes only: matched rule ids and the anomaly score
        if (e.AiModel is not null)
        {
            // AI routes only, once a model alias was resolved: the alias, the provider that answered ("" when none) and the tokens it reported
            w.WriteString("model"u8, e.AiModel);
            w.WriteString("provider"u8, e.AiProvider ?? "");
            w.WriteNumber("prompt_tokens"u8, e.PromptTokens);
            w.WriteNumber("completion_tokens"u8, e.CompletionTokens);
        }
        if (e.AiGuard is not null) w.WriteString("guard"u8, e.AiGuard); // AI calls with guard findings: kinds and counts, never a value
        w.WriteEndObject();
    }

    private void WritePath(Utf8JsonWriter w, Entry e)
    {
        var path = e.Get(Field.Path);
        var query = e.Get(Field.Query);
        if (query.IsEmpty && !e.Truncated)
        {
            WriteBytes(w, "path"u8, path);
            return;
        }
        if (!_config.IncludeQuery || query.IsEmpty)
        {
            // path + "?REDACTED" + "..." assembled in the writer's scratch buffer: no allocation per line
            var scratch = _pathScratch;
            path.CopyTo(scratch);
            int n = path.Length;
            if (!query.IsEmpty) { "?REDACTED"u8.CopyTo(scratch.AsSpan(n)); n += 9; }
            if (e.Truncated) { "..."u8.CopyTo(scratch.AsSpan(n)); n += 3; }
            WriteBytes(w, "path"u8, scratch.AsSpan(0, n));
            return;
        }
        var sb = new StringBuilder(Decode(path));
        sb.Append(QueryRedaction.Redact(Decode(query)));
        if (e.Truncated) sb.Append("...");
        w.WriteString("path"u8, sb.ToString());
    }

    private static void WriteBytes(Utf8JsonWriter w, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        if (Utf8.IsValid(value)) w.WriteString(name, value);
        else w.WriteString(name, Encoding.Latin1.GetString(value));
    }

    private static string Decode(ReadOnlySpan<byte> value) => Utf8.IsValid(value) ? Encoding.UTF8.GetString(value) : Encoding.Latin1.GetString(value);

    /// <summary>Stops the writer after it wrote what is buffered.</summary>
    public ValueTask DisposeAsync()
    {
        _stopping = true;
        _signal.Set();
        _thread.Join(TimeSpan.FromSeconds(5));
        // _signal is not disposed: a request that read this log just before a reload swapped it out may still Set it.
        return ValueTask.CompletedTask;
    }

    private enum Field { RequestId, TraceId, ClientIp, Method, Host, Path, Query, Count }

    /// <summary>One ring slot: fixed-size byte storage for the text fields, plain fields for the rest.</summary>
    private sealed class Entry
    {
        private static readonly int[] Caps = [64, 32, 64, 24, 256, 1024, 1024];
        private static readonly int[] Offsets = ComputeOffsets();
        private readonly byte[] _text = new byte[Offsets[^1]];
        private readonly int[] _lengths = new int[(int)Field.Count];
        public long Sequence;
        public long UtcTicks;
        public string? Route, Upstream, Consumer, Subject, Device, Decision, Rule, Waf, AiModel, AiProvider, AiGuard;
        public int Status;
        public RejectReason Reason;
        public long BytesIn, BytesOut, Start, UpstreamStart, UpstreamEnd, End, PromptTokens, CompletionTokens;
        public bool Truncated;

        private static int[] ComputeOffsets()
        {
            var o = new int[Caps.Length + 1];
            for (int i = 0; i < Caps.Length; i++) o[i + 1] = o[i] + Caps[i];
            return o;
        }

        public ReadOnlySpan<byte> Get(Field f) => _text.AsSpan(Offsets[(int)f], _lengths[(int)f]);

        private bool Set(Field f, ReadOnlySpan<byte> value)
        {
            int cap = Caps[(int)f];
            int n = Math.Min(value.Length, cap);
            value[..n].CopyTo(_text.AsSpan(Offsets[(int)f], cap));
            _lengths[(int)f] = n;
            return n == value.Length;
        }

        public void Fill(in RequestRecord r, long utcTicks)
        {
            UtcTicks = utcTicks;
            Set(Field.RequestId, r.RequestId);
            Set(Field.TraceId, r.TraceId);
            Set(Field.ClientIp, r.ClientIp);
            Set(Field.Method, r.Method);
            Set(Field.Host, r.Host);
            Truncated = !Set(Field.Path, r.Path) | !Set(Field.Query, r.Query);
            Route = r.Route?.Route;
            Upstream = r.Upstream;
            Consumer = r.Consumer;
            Subject = r.Subject;
            Device = r.Device;
            Decision = r.Decision;
            Rule = r.Rule;
            Waf = r.Waf;
            AiModel = r.AiModel;
            AiProvider = r.AiProvider;
            AiGuard = r.AiGuard;
            PromptTokens = r.PromptTokens;
            CompletionTokens = r.CompletionTokens;
            Status = r.Status;
            Reason = r.Reason;
            BytesIn = r.BytesIn;
            BytesOut = r.BytesOut;
            Start = r.StartTimestamp;
            UpstreamStart = r.UpstreamStartTimestamp;
            UpstreamEnd = r.UpstreamEndTimestamp;
            End = r.EndTimestamp != 0 ? r.EndTimestamp : Stopwatch.GetTimestamp();
        }
    }
}

/// <summary>Redacts the values of credential-like query parameters.</summary>
public static class QueryRedaction
{
    private static readonly string[] Sensitive =
    [
        "api_key", "apikey", "api-key", "key", "token", "access_token", "id_token", "refresh_token", "auth", "authorization",
        "password", "passwd", "pwd", "secret", "client_secret", "signature", "sig", "session", "sessionid", "code", "jwt",
    ];

    /// <summary>"?a=1&amp;token=x" → "?a=1&amp;token=REDACTED".</summary>
    public static string Redact(string query)
    {
        if (query.Length == 0) return query;
        var sb = new StringBuilder(query.Length);
        int start = query[0] == '?' ? 1 : 0;
        if (start == 1) sb.Append('?');
        var parts = query[start..].Split('&');
        for (int i = 0; i < parts.Length; i++)
        {
            if (i > 0) sb.Append('&');
            var part = parts[i];
            int eq = part.IndexOf('=');
            var name = eq < 0 ? part : part[..eq];
            var decoded = Uri.UnescapeDataString(name.Replace('+', ' '));
            bool secret = false;
            foreach (var s in Sensitive)
                if (decoded.Equals(s, StringComparison.OrdinalIgnoreCase) || decoded.EndsWith("_" + s, StringComparison.OrdinalIgnoreCase)) { secret = true; break; }
            if (secret && eq >= 0) sb.Append(name).Append("=REDACTED");
            else sb.Append(part);
        }
        return sb.ToString();
    }
}

/// <summary>Where access log lines go: a stream (stdout), or a file rotated by size (path, path.1, ... path.N-1).</summary>
internal sealed class AccessLogSink : IDisposable
{
    private Stream _stream;
    private readonly string? _path;
    private long _size;

    public AccessLogSink(Stream stream) => _stream = stream;

    private AccessLogSink(string path)
    {
        _path = path;
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        _stream = OpenFile(path);
        _size = _stream.Length;
    }

    public static AccessLogSink Open(AccessLogConfig config) =>
        config.Path == "stdout" ? new AccessLogSink(Console.OpenStandardOutput()) : new AccessLogSink(config.Path);

    private static FileStream OpenFile(string path) =>
        new(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None);

    /// <summary>Writes whole lines; a file never grows past maxFileBytes unless one line alone is larger.</summary>
    public void Write(ReadOnlySpan<byte> lines, AccessLogConfig config)
    {
        while (!lines.IsEmpty)
        {
            var chunk = lines;
            if (_path is not null && _size + lines.Length > config.MaxFileBytes)
            {
                long room = config.MaxFileBytes - _size;
                int cut = room <= 0 ? -1 : lines[..(int)Math.Min(room, lines.Length)].LastIndexOf((byte)'\n');
                if (cut < 0)
                {
                    if (_size > 0)
                    {
                        Rotate(config.MaxFiles);
                        continue;
                    }
                    cut = lines.IndexOf((byte)'\n'); // one line larger than a file: it gets a file of its own
                    if (cut < 0) cut = lines.Length - 1;
                }
                chunk = lines[..(cut + 1)];
            }
            _stream.Write(chunk);
            _size += chunk.Length;
            lines = lines[chunk.Length..];
        }
        _stream.Flush();
    }

    private void Rotate(int maxFiles)
    {
        _stream.Dispose();
        if (maxFiles <= 1) File.Delete(_path!);
        else
        {
            File.Delete($"{_path}.{maxFiles - 1}");
            for (int i = maxFiles - 2; i >= 1; i--)
                if (File.Exists($"{_path}.{i}")) File.Move($"{_path}.{i}", $"{_path}.{i + 1}");
            File.Move(_path!, $"{_path}.1");
        }
        _stream = OpenFile(_path!);
        _size = 0;
    }

    public void Dispose() => _stream.Dispose();
}
