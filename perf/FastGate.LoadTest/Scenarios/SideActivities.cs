using System.Net.Sockets;
using System.Text;

namespace FastGate.LoadTest.Scenarios;

/// <summary>
/// The hostile client: malformed requests on fresh connections, slowloris connections that dribble a header
/// every few seconds, and requests with unknown API keys. It is not measured; it is counted (side counters).
/// </summary>
public sealed class HostileClient : ISideActivity
{
    public string Name => "hostile";

    /// <summary>Requests no server should accept. Each goes on a new connection.</summary>
    public static IReadOnlyList<(string Name, byte[] Bytes)> Malformed { get; } =
    [
        ("garbage", "\x01\x02\x03 not http at all\r\n\r\n"u8.ToArray()),
        ("no-version", "GET /\r\nHost: x\r\n\r\n"u8.ToArray()),
        ("bad-version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n"u8.ToArray()),
        ("space-in-name", "GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"u8.ToArray()),
        ("cl-and-te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"u8.ToArray()),
        ("bad-content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"u8.ToArray()),
        ("duplicate-content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"u8.ToArray()),
        ("huge-header", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + new string('a', 64 * 1024) + "\r\n\r\n")),
        ("bare-lf", "GET / HTTP/1.1\nHost: x\n\n"u8.ToArray()),
        ("no-host", "GET / HTTP/1.1\r\n\r\n"u8.ToArray()),
    ];

    public async Task RunAsync(SideContext ctx, CancellationToken ct)
    {
        var tasks = new List<Task> { MalformedLoopAsync(ctx, ct), UnknownKeysLoopAsync(ctx, ct) };
        for (int i = 0; i < ctx.Options.SlowlorisConnections; i++) tasks.Add(SlowlorisAsync(ctx, ct));
        try { await Task.WhenAll(tasks).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
    }

    private static TimeSpan Interval(SideContext ctx) => TimeSpan.FromSeconds(1.0 / Math.Max(0.1, ctx.Options.HostileRate));

    private static async Task MalformedLoopAsync(SideContext ctx, CancellationToken ct)
    {
        int i = 0;
        using var timer = new PeriodicTimer(Interval(ctx));
        var buf = new byte[4096];
        while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
        {
            var (name, bytes) = Malformed[i++ % Malformed.Count];
            using var s = new Socket(ctx.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                using var oneCt = CancellationTokenSource.CreateLinkedTokenSource(ct);
                oneCt.CancelAfter(TimeSpan.FromSeconds(2));
                await s.ConnectAsync(ctx.Endpoint, oneCt.Token).ConfigureAwait(false);
                await s.SendAsync(bytes, SocketFlags.None, oneCt.Token).ConfigureAwait(false);
                ctx.Count("hostile.malformed.sent");
                int n = await s.ReceiveAsync(buf, SocketFlags.None, oneCt.Token).ConfigureAwait(false);
                if (n >= 12 && buf.AsSpan(0, 5).SequenceEqual("HTTP/"u8)) ctx.Count($"hostile.malformed.status{(char)buf[9]}xx");
                else ctx.Count("hostile.malformed.closed-without-response");
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { ctx.Count("hostile.malformed.no-answer-2s"); }
            catch (SocketException) { ctx.Count("hostile.malformed.reset"); }
            _ = name;
        }
    }

    private static async Task UnknownKeysLoopAsync(SideContext ctx, CancellationToken ct)
    {
        long i = 0;
        using var timer = new PeriodicTimer(Interval(ctx));
        var buf = new byte[8192];
        Socket? s = null;
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                try
                {
                    if (s is null)
                    {
                        s = new Socket(ctx.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                        await s.ConnectAsync(ctx.Endpoint, ct).ConfigureAwait(false);
                    }
                    var req = Encoding.ASCII.GetBytes($"GET {ctx.Options.Path} HTTP/1.1\r\nHost: {ctx.Host}\r\nX-API-Key: unknown-{i++:x8}\r\n\r\n");
                    await s.SendAsync(req, SocketFlags.None, ct).ConfigureAwait(false);
                    using var oneCt = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    oneCt.CancelAfter(TimeSpan.FromSeconds(2));
                    int n = await s.ReceiveAsync(buf, SocketFlags.None, oneCt.Token).ConfigureAwait(false);
                    if (n >= 12 && buf.AsSpan(0, 5).SequenceEqual("HTTP/"u8))
                    {
                        ctx.Count("hostile.unknown-key.status" + Encoding.ASCII.GetString(buf, 9, 3));
                    }
                    // Bodies are small canned responses; drop the connection after each answer to stay in sync.
                    s.Dispose();
                    s = null;
                }
                catch (Exception e) when (e is SocketException || (e is OperationCanceledException && !ct.IsCancellationRequested))
                {
                    ctx.Count("hostile.unknown-key.failed");
                    s?.Dispose();
                    s = null;
                }
            }
        }
        catch (OperationCanceledException) { }
        finally { s?.Dispose(); }
    }

    private static async Task SlowlorisAsync(SideContext ctx, CancellationToken ct)
    {
        var buf = new byte[1024];
        while (!ct.IsCancellationRequested)
        {
            using var s = new Socket(ctx.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await s.ConnectAsync(ctx.Endpoint, ct).ConfigureAwait(false);
                ctx.Count("hostile.slowloris.opened");
                await s.SendAsync(Encoding.ASCII.GetBytes($"GET {ctx.Options.Path} HTTP/1.1\r\nHost: {ctx.Host}\r\n"), SocketFlags.None, ct).ConfigureAwait(false);
                for (int i = 0; !ct.IsCancellationRequested; i++)
                {
                    // One header line every 2 s, never the blank line that ends the head.
                    var read = s.ReceiveAsync(buf, SocketFlags.None, ct).AsTask();
                    var done = await Task.WhenAny(read, Task.Delay(2000, ct)).ConfigureAwait(false);
                    if (done == read)
                    {
                        ctx.Count(await read.ConfigureAwait(false) > 0 ? "hostile.slowloris.answered" : "hostile.slowloris.closed-by-server");
                        break;
                    }
                    await s.SendAsync(Encoding.ASCII.GetBytes($"X-Slow-{i}: x\r\n"), SocketFlags.None, ct).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) { return; }
            catch (SocketException) { ctx.Count("hostile.slowloris.reset"); }
            try { await Task.Delay(500, ct).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
        }
    }
}

/// <summary>
/// Rewrites the policy file every interval (alternating a trailing newline, so the content really changes
/// while staying valid) by writing a temporary file and renaming it over the original; restores it at the end.
/// </summary>
public sealed class PolicyRewriter : ISideActivity
{
    public string Name => "reload";

    public async Task RunAsync(SideContext ctx, CancellationToken ct)
    {
        string path = ctx.Options.PolicyFile ?? throw new InvalidOperationException("--policy-file is required for reloads");
        string original = await File.ReadAllTextAsync(path, CancellationToken.None).ConfigureAwait(false);
        string variant = original.EndsWith('\n') ? original.TrimEnd('\n') : original + "\n";
        using var timer = new PeriodicTimer(ctx.Options.ReloadInterval);
        int i = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                Replace(path, ++i % 2 == 1 ? variant : original);
                ctx.Count("reload.rewrites");
            }
        }
        catch (OperationCanceledException) { }
        finally
        {
            Replace(path, original);
        }
    }

    private static void Replace(string path, string content)
    {
        string tmp = path + ".loadtest.tmp";
        File.WriteAllText(tmp, content);
        File.Move(tmp, path, overwrite: true);
    }
}
