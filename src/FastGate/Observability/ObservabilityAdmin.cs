using System.Buffers;
using System.Text.Json;
using FastGate.Observability.Alerts;
using Microsoft.AspNetCore.Http;

namespace FastGate.Observability;

/// <summary>
/// The admin endpoints of the observability hub: <c>GET /admin/alerts</c> (active and recent alerts),
/// <c>GET /admin/blocks</c> (temporary blocks) and <c>DELETE /admin/blocks/{identity}</c>. The admin listener should
/// be bound to loopback or a management network (it has no authentication of its own yet).
/// </summary>
public static class ObservabilityAdmin
{
    public static async Task<bool> TryHandleAsync(HttpContext context, GatewayObservability hub)
    {
        var path = context.Request.Path.Value ?? "/";
        var method = context.Request.Method;
        if (path == "/admin/alerts" && HttpMethods.IsGet(method))
        {
            await WriteJsonAsync(context, 200, w => WriteAlerts(w, hub));
            return true;
        }
        if (path == "/admin/blocks" && HttpMethods.IsGet(method))
        {
            await WriteJsonAsync(context, 200, w => WriteBlocks(w, hub));
            return true;
        }
        if (path == "/admin/blocks" && HttpMethods.IsPost(method))
        {
            await ManualBlockAsync(context, hub);
            return true;
        }
        if (path == "/admin/blocks" && HttpMethods.IsDelete(method))
        {
            // lifts every block (in cluster mode on every gateway: each removal is shared)
            var all = hub.Blocks.List();
            foreach (var b in all) hub.Blocks.Remove(b.Identity);
            await WriteJsonAsync(context, 200, w =>
            {
                w.WriteStartObject();
                w.WriteNumber("removed", all.Count);
                w.WriteEndObject();
            });
            return true;
        }
        if (path.StartsWith("/admin/blocks/", StringComparison.Ordinal) && HttpMethods.IsDelete(method))
        {
            var identity = Uri.UnescapeDataString(path["/admin/blocks/".Length..]);
            bool removed = hub.Blocks.Remove(identity);
            await WriteJsonAsync(context, removed ? 200 : 404, w =>
            {
                w.WriteStartObject();
                w.WriteString("identity", identity);
                w.WriteBoolean("removed", removed);
                w.WriteEndObject();
            });
            return true;
        }
        return false;
    }

    /// <summary><c>POST /admin/blocks</c> {"identity": "203.0.113.7", "ttl": "10m", "reason": "..."}: an operator's block.</summary>
    private static async Task ManualBlockAsync(HttpContext context, GatewayObservability hub)
    {
        string? identity = null, reason = null;
        TimeSpan? ttl = null;
        string? error = null;
        try
        {
            using var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) error = "the body must be a JSON object";
            else
            {
                if (root.TryGetProperty("identity", out var id) && id.ValueKind == JsonValueKind.String) identity = id.GetString();
                if (root.TryGetProperty("reason", out var re) && re.ValueKind == JsonValueKind.String) reason = re.GetString();
                if (root.TryGetProperty("ttl", out var t))
                {
                    if (t.ValueKind == JsonValueKind.String && Configuration.ConfigReader.TryParseDuration(t.GetString()!, out var d)) ttl = d;
                    else error = "ttl must be a duration such as \"10m\"";
                }
            }
        }
        catch (JsonException) { error = "the body is not JSON"; }
        if (error is null && string.IsNullOrWhiteSpace(identity)) error = "identity is required";
        if (error is null && ttl is { } v && (v <= TimeSpan.Zero || v > TimeSpan.FromDays(30))) error = "ttl must be in (0, 30d]";
        if (error is not null)
        {
            await WriteJsonAsync(context, 400, w => { w.WriteStartObject(); w.WriteString("error", error); w.WriteEndObject(); });
            return;
        }
        var span = ttl ?? TimeSpan.FromHours(1);
        hub.Blocks.Block(identity!, span, "manual: " + (reason ?? "admin"));
        await WriteJsonAsync(context, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("identity", identity);
            w.WriteNumber("ttlSeconds", span.TotalSeconds);
            w.WriteEndObject();
        });
    }

    private static void WriteAlerts(Utf8JsonWriter w, GatewayObservability hub)
    {
        w.WriteStartObject();
        w.WriteStartArray("active");
        foreach (var a in hub.Alerts.Active()) WriteAlert(w, a);
        w.WriteEndArray();
        w.WriteStartArray("recent");
        foreach (var a in hub.Alerts.Recent()) WriteAlert(w, a);
        w.WriteEndArray();
        w.WriteStartArray("rules");
        foreach (var r in hub.Alerts.Config.Rules) w.WriteStringValue(r.Id);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteAlert(Utf8JsonWriter w, AlertInstance a)
    {
        w.WriteStartObject();
        w.WriteString("status", a.IsFiring ? "firing" : "resolved");
        Notifier.WriteAlertFields(w, a);
        w.WriteEndObject();
    }

    private static void WriteBlocks(Utf8JsonWriter w, GatewayObservability hub)
    {
        w.WriteStartObject();
        w.WriteStartArray("blocks");
        foreach (var b in hub.Blocks.List())
        {
            w.WriteStartObject();
            w.WriteString("identity", b.Identity);
            w.WriteString("blockedAt", b.BlockedAt);
            w.WriteString("expiresAt", b.ExpiresAt);
            w.WriteString("reason", b.Reason);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static async Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(4096);
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true })) write(w);
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
    }
}
