using System.Buffers;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace FastGate.Observability.Alerts;

/// <summary>
/// Delivers alert notifications for one configured notifier from its own bounded queue on its own task, so a slow
/// or dead webhook never touches the request path or the evaluation loop: when the queue is full the oldest
/// notification is dropped (and counted). Each delivery is retried with exponential backoff (1s, 2s, 4s, ...).
/// </summary>
internal sealed class Notifier : IDisposable
{
    private static readonly HttpClient s_http = new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),
        ConnectTimeout = TimeSpan.FromSeconds(5),
    }) { Timeout = Timeout.InfiniteTimeSpan };

    private readonly Channel<AlertInstance> _queue;
    private readonly AlertEngine _engine;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _worker;
    private readonly Prometheus.Counter.Child _sent, _failed, _dropped, _suppressed;
    private long _sentCount, _failedCount, _attempts;

    public Notifier(NotifierConfig config, AlertEngine engine, TimeProvider time, ILogger logger, GatewayMetrics metrics)
    {
        Config = config;
        _engine = engine;
        _time = time;
        _logger = logger;
        _sent = metrics.AlertNotifications.WithLabels(config.Id, "sent");
        _failed = metrics.AlertNotifications.WithLabels(config.Id, "failed");
        _dropped = metrics.AlertNotifications.WithLabels(config.Id, "dropped");
        _suppressed = metrics.AlertNotifications.WithLabels(config.Id, "suppressed");
        _queue = Channel.CreateBounded<AlertInstance>(new BoundedChannelOptions(100)
        {
            FullMode = BoundedChannelFullMode.DropOldest,
            SingleReader = true,
        }, _ => _dropped.Inc());
        _worker = Task.Run(RunAsync);
    }

    public NotifierConfig Config { get; }
    public long Sent => Interlocked.Read(ref _sentCount);
    public long Failed => Interlocked.Read(ref _failedCount);
    public long Attempts => Interlocked.Read(ref _attempts);

    public void Enqueue(AlertInstance alert) => _queue.Writer.TryWrite(alert);

    public void CountSuppressed() => _suppressed.Inc();

    private async Task RunAsync()
    {
        try
        {
            await foreach (var alert in _queue.Reader.ReadAllAsync(_stop.Token).ConfigureAwait(false))
                await DeliverAsync(alert).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
    }

    private async Task DeliverAsync(AlertInstance alert)
    {
        if (Config.Type == "log")
        {
            _logger.LogWarning("[{Status}] {Rule} ({Severity}): {Summary}", alert.IsFiring ? "FIRING" : "RESOLVED", alert.Rule, alert.Severity, alert.Summary);
            Interlocked.Increment(ref _sentCount);
            _sent.Inc();
            return;
        }
        var body = Config.Type == "slack" ? SlackPayload(alert) : JsonPayload(alert);
        for (int attempt = 0; ; attempt++)
        {
            Interlocked.Increment(ref _attempts);
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                timeout.CancelAfter(Config.Timeout);
                using var content = new ByteArrayContent(body);
                content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
                using var response = await s_http.PostAsync(Config.Url, content, timeout.Token).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    Interlocked.Increment(ref _sentCount);
                    _sent.Inc();
                    return;
                }
                if ((int)response.StatusCode is >= 400 and < 500 and not 408 and not 429)
                {
                    Fail(alert, $"HTTP {(int)response.StatusCode}");
                    return; // a permanent rejection: retrying would not help
                }
                if (attempt >= Config.MaxRetries) { Fail(alert, $"HTTP {(int)response.StatusCode}"); return; }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException)
            {
                if (_stop.IsCancellationRequested) return;
                if (attempt >= Config.MaxRetries) { Fail(alert, e.Message); return; }
            }
            var delay = TimeSpan.FromTicks(Math.Min(_engine.RetryBaseDelay.Ticks << Math.Min(attempt, 16), TimeSpan.FromSeconds(60).Ticks));
            try
            {
                await Task.Delay(delay, _time, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private void Fail(AlertInstance alert, string why)
    {
        Interlocked.Increment(ref _failedCount);
        _failed.Inc();
        _logger.LogWarning("alert notifier {Notifier} could not deliver {Rule}: {Why}", Config.Id, alert.Rule, why);
    }

    /// <summary>The generic JSON payload (fields listed in docs/observability.md).</summary>
    internal static byte[] JsonPayload(AlertInstance a)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("status", a.IsFiring ? "firing" : "resolved");
            WriteAlertFields(w, a);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    internal static void WriteAlertFields(Utf8JsonWriter w, AlertInstance a)
    {
        w.WriteString("rule", a.Rule);
        w.WriteString("type", a.Type);
        w.WriteString("severity", a.Severity);
        if (a.Route is not null) w.WriteString("route", a.Route); else w.WriteNull("route");
        if (a.Cluster is not null) w.WriteString("cluster", a.Cluster); else w.WriteNull("cluster");
        w.WriteNumber("value", Math.Round(a.Value, 6));
        w.WriteNumber("threshold", a.Threshold);
        w.WriteString("window", AlertEngine.Format(a.Window));
        w.WriteString("startedAt", a.StartedAt);
        if (a.ResolvedAt is { } r) w.WriteString("resolvedAt", r); else w.WriteNull("resolvedAt");
        w.WriteString("summary", a.Summary);
        WriteArray(w, "sampleRequestIds", a.SampleRequestIds);
        WriteArray(w, "sampleTraceIds", a.SampleTraceIds);
        WriteArray(w, "identities", a.Identities);
    }

    private static void WriteArray(Utf8JsonWriter w, string name, IReadOnlyList<string> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteStringValue(v);
        w.WriteEndArray();
    }

    /// <summary>Slack-compatible incoming-webhook payload: {"text": "..."}.</summary>
    internal static byte[] SlackPayload(AlertInstance a)
    {
        var text = new StringBuilder();
        text.Append(a.IsFiring ? ":rotating_light: *[FIRING]* " : ":white_check_mark: *[RESOLVED]* ");
        text.Append('`').Append(a.Rule).Append("` (").Append(a.Severity).Append("): ").Append(a.Summary);
        if (a.SampleTraceIds.Count > 0) text.Append("\ntrace ids: ").Append(string.Join(", ", a.SampleTraceIds.Take(3)));
        if (a.Identities.Count > 0) text.Append("\nclients: ").Append(string.Join(", ", a.Identities.Take(5)));
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("text", text.ToString());
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Lets queued notifications go out (bounded by <paramref name="timeout"/>), then stops.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        _queue.Writer.TryComplete();
        var done = await Task.WhenAny(_worker, Task.Delay(timeout)).ConfigureAwait(false);
        if (done != _worker) _stop.Cancel();
        try { await _worker.ConfigureAwait(false); } catch (OperationCanceledException) { }
    }

    public void Dispose()
    {
        _queue.Writer.TryComplete();
        _stop.Cancel();
    }
}
