using System.Net.WebSockets;
using System.Text;
using FastGate.DemoUpstream;

// A small upstream for `make run` and the tests: fixed text, echo, server-sent events, WebSocket echo, slow replies.
var url = args.Length > 0 ? args[0] : Environment.GetEnvironmentVariable("DEMO_URL") ?? "http://127.0.0.1:9001";
await using var app = DemoUpstreamApp.Build(url);
Console.WriteLine($"demo upstream on {url}");
await app.RunAsync();

namespace FastGate.DemoUpstream
{
    public static class DemoUpstreamApp
    {
        public static WebApplication Build(string url)
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseUrls(url);
            builder.WebHost.ConfigureKestrel(k => { k.Limits.MaxRequestBodySize = null; k.AddServerHeader = false; });
            var app = builder.Build();
            app.UseWebSockets();
            Map(app);
            return app;
        }

        private static void Map(WebApplication app)
        {
            app.MapGet("/", () => Results.Text("Hello from the FastGate demo upstream\n"));
            app.MapMethods("/hello", ["GET", "HEAD"], () => Results.Text("Hello, World!"));
            app.Map("/echo", async (HttpContext ctx) =>
            {
                ctx.Response.ContentType = "application/json";
                var headers = string.Join(",", ctx.Request.Headers.Select(h => $"\"{Escape(h.Key)}\":\"{Escape(h.Value.ToString())}\""));
                long bodyBytes = 0;
                var buffer = new byte[64 * 1024];
                int n;
                while ((n = await ctx.Request.Body.ReadAsync(buffer)) > 0) bodyBytes += n;
                await ctx.Response.WriteAsync(
                    $"{{\"method\":\"{ctx.Request.Method}\",\"path\":\"{Escape(ctx.Request.Path + ctx.Request.QueryString)}\",\"bodyBytes\":{bodyBytes},\"headers\":{{{headers}}}}}");
            });
            app.MapGet("/events", async (HttpContext ctx, int? count, int? intervalMs) =>
            {
                ctx.Response.ContentType = "text/event-stream";
                for (int i = 0; i < (count ?? 5); i++)
                {
                    await ctx.Response.WriteAsync($"data: event {i}\n\n");
                    await ctx.Response.Body.FlushAsync();
                    await Task.Delay(intervalMs ?? 200);
                }
            });
            app.MapGet("/bytes/{size:long}", async (HttpContext ctx, long size) =>
            {
                ctx.Response.ContentType = "application/octet-stream";
                ctx.Response.ContentLength = size;
                var chunk = new byte[64 * 1024];
                for (long sent = 0; sent < size;)
                {
                    int n = (int)Math.Min(chunk.Length, size - sent);
                    await ctx.Response.Body.WriteAsync(chunk.AsMemory(0, n));
                    sent += n;
                }
            });
            app.MapGet("/delay/{ms:int}", async (int ms) =>
            {
                await Task.Delay(ms);
                return Results.Text("late\n");
            });
            app.Map("/status/{code:int}", (int code) => code is 204 or 304 ? Results.StatusCode(code) : Results.Text($"status {code}\n", statusCode: code));
            app.Map("/ws", async (HttpContext ctx) =>
            {
                if (!ctx.WebSockets.IsWebSocketRequest)
                {
                    ctx.Response.StatusCode = 400;
                    return;
                }
                using var ws = await ctx.WebSockets.AcceptWebSocketAsync();
                var buffer = new byte[4096];
                while (true)
                {
                    var r = await ws.ReceiveAsync(buffer, CancellationToken.None);
                    if (r.MessageType == WebSocketMessageType.Close)
                    {
                        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                        return;
                    }
                    await ws.SendAsync(buffer.AsMemory(0, r.Count), r.MessageType, r.EndOfMessage, CancellationToken.None);
                }
            });
        }

        private static string Escape(string s) => s.Replace("\\", "\\\\").Replace("\"", "\\\"");
    }
}
