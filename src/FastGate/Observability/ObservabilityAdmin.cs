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
