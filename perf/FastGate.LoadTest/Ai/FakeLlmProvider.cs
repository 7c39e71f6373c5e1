using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;

namespace FastGate.LoadTest.Ai;

/// <summary>Which wire format a fake provider speaks.</summary>
public enum FakeWire { OpenAi, Anthropic }

/// <summary>
/// A fake LLM provider on 127.0.0.1 that speaks the real wire format: OpenAI chat completions (<c>/v1/chat/completions</c>,
/// JSON or SSE) or Anthropic Messages (<c>/v1/messages</c>, JSON or SSE). HTTP/1.1 keep-alive, chunked SSE, one chunk
/// per event. The prompt text steers it: <c>events=N</c> (content events of a stream, default 5) and <c>gap=MS</c>
/// (a pause after every 10th event, or after every <c>every=N</c>th: <c>every=1</c> paces each event, as a live model does). <see cref="Kill"/> closes the listener and every open connection at once (what a
/// killed process does to its sockets).
/// </summary>
public sealed partial class FakeLlmProvider : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly FakeWire _wire;
    private readonly X509Certificate2? _certificate;
    private readonly ConcurrentDictionary<Socket, byte> _open = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;
    private volatile bool _killed;
    private long _requests;

    /// <param name="certificate">Speak TLS with this certificate (an https:// provider), else plain http.</param>
    public FakeLlmProvider(int port, FakeWire wire, X509Certificate2? certificate = null)
    {
        _wire = wire;
        _certificate = certificate;
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
        _listener.Listen(512);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _accept = AcceptLoopAsync();
    }

    public int Port { get; }
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>Closes the listener and every connection (mid-stream ones included), as a killed process would.</summary>
    public int Kill()
    {
        _killed = true;
        int n = 0;
        _listener.Close();
        foreach (var s in _open.Keys)
        {
            try { s.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            s.Close();
            n++;
        }
        return n;
    }

    /// <summary>Responses that were being written when the connection broke.</summary>
    public long BrokenAnswers => Interlocked.Read(ref _broken);
    private long _broken;

    private async Task AcceptLoopAsync()
    {
        while (!_killed)
        {
            Socket s;
            try { s = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException) { return; }
            s.NoDelay = true;
            _open[s] = 0;
            _ = ServeAsync(s);
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        Stream stream = new NetworkStream(socket, ownsSocket: true);
        var buf = new byte[65536];
        int len = 0;
        try
        {
            if (_certificate is not null)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = ssl;
                await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = _certificate }, _stop.Token).ConfigureAwait(false);
            }
            while (!_killed)
            {
                int headEnd;
                while ((headEnd = buf.AsSpan(0, len).IndexOf("\r\n\r\n"u8)) < 0)
                {
                    int n = await stream.ReadAsync(buf.AsMemory(len)).ConfigureAwait(false);
                    if (n == 0) return;
                    len += n;
                }
                var head = Encoding.ASCII.GetString(buf, 0, headEnd);
                int bodyStart = headEnd + 4;
                int contentLength = 0;
                foreach (var line in head.Split("\r\n"))
                    if (line.StartsWith("content-length:", StringComparison.OrdinalIgnoreCase))
                        contentLength = int.Parse(line.AsSpan(15).Trim(), CultureInfo.InvariantCulture);
                while (len < bodyStart + contentLength)
                {
                    int n = await stream.ReadAsync(buf.AsMemory(len)).ConfigureAwait(false);
                    if (n == 0) return;
                    len += n;
                }
                var body = Encoding.UTF8.GetString(buf, bodyStart, contentLength);
                int consumed = bodyStart + contentLength;
                buf.AsSpan(consumed, len - consumed).CopyTo(buf);
                len -= consumed;
                Interlocked.Increment(ref _requests);
                try { await AnswerAsync(stream, body).ConfigureAwait(false); }
                catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { Interlocked.Increment(ref _broken); throw; }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException or System.Security.Authentication.AuthenticationException) { }
        finally
        {
            _open.TryRemove(socket, out _);
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task AnswerAsync(Stream stream, string body)
    {
        int events = Number(EventsRegex().Match(body), 5);
        int gap = Number(GapRegex().Match(body), 0);
        int every = Math.Max(1, Number(EveryRegex().Match(body), 10));
        bool streamed = body.Contains("\"stream\":true", StringComparison.Ordinal);
        if (!streamed)
        {
            var text = string.Concat(Enumerable.Repeat("tok ", Math.Min(events, 1000)));
            var json = _wire == FakeWire.OpenAi
                ? "{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"fake\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""
                  + text + "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":" + events.ToString(CultureInfo.InvariantCulture) + ",\"total_tokens\":" + (10 + events).ToString(CultureInfo.InvariantCulture) + "}}"
                : "{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-fake\",\"content\":[{\"type\":\"text\",\"text\":\""
                  + text + "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":" + events.ToString(CultureInfo.InvariantCulture) + "}}";
            var bytes = Encoding.UTF8.GetBytes(json);
            await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + bytes.Length.ToString(CultureInfo.InvariantCulture) + "\r\n\r\n")).ConfigureAwait(false);
            await stream.WriteAsync(bytes).ConfigureAwait(false);
            return;
        }
        await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"u8.ToArray()).ConfigureAwait(false);
        if (_wire == FakeWire.OpenAi)
        {
            for (int i = 0; i < events; i++)
            {
                await ChunkAsync(stream, i == 0 ? OpenAiFirst : OpenAiDelta).ConfigureAwait(false);
                if (gap > 0 && i % every == every - 1) await Task.Delay(gap).ConfigureAwait(false);
            }
            await ChunkAsync(stream, OpenAiFinish).ConfigureAwait(false);
            await ChunkAsync(stream, Encoding.ASCII.GetBytes("data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"fake\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":"
                + events.ToString(CultureInfo.InvariantCulture) + ",\"total_tokens\":" + (10 + events).ToString(CultureInfo.InvariantCulture) + "}}\n\ndata: [DONE]\n\n")).ConfigureAwait(false);
        }
        else
        {
            await ChunkAsync(stream, AnthropicStart).ConfigureAwait(false);
            for (int i = 0; i < events; i++)
            {
                await ChunkAsync(stream, AnthropicDelta).ConfigureAwait(false);
                if (gap > 0 && i % every == every - 1) await Task.Delay(gap).ConfigureAwait(false);
            }
            await ChunkAsync(stream, Encoding.ASCII.GetBytes("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":" + events.ToString(CultureInfo.InvariantCulture) + "}}\n\n"
                + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")).ConfigureAwait(false);
        }
        await stream.WriteAsync("0\r\n\r\n"u8.ToArray()).ConfigureAwait(false);
    }

    private static readonly byte[] OpenAiFirst = Encoding.ASCII.GetBytes("data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"tok \"},\"finish_reason\":null}]}\n\n");
    private static readonly byte[] OpenAiDelta = Encoding.ASCII.GetBytes("data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n");
    private static readonly byte[] OpenAiFinish = Encoding.ASCII.GetBytes("data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    private static readonly byte[] AnthropicStart = Encoding.ASCII.GetBytes(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-fake\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
        + "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    private static readonly byte[] AnthropicDelta = Encoding.ASCII.GetBytes("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n");

    private static async Task ChunkAsync(Stream stream, byte[] data)
    {
        var size = Encoding.ASCII.GetBytes(data.Length.ToString("x", CultureInfo.InvariantCulture) + "\r\n");
        var frame = new byte[size.Length + data.Length + 2];
        size.CopyTo(frame, 0);
        data.CopyTo(frame, size.Length);
        frame[^2] = (byte)'\r';
        frame[^1] = (byte)'\n';
        await stream.WriteAsync(frame).ConfigureAwait(false);
    }

    private static int Number(Match m, int fallback) => m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : fallback;

    [GeneratedRegex(@"events=(\d+)")]
    private static partial Regex EventsRegex();

    [GeneratedRegex(@"gap=(\d+)")]
    private static partial Regex GapRegex();

    [GeneratedRegex(@"every=(\d+)")]
    private static partial Regex EveryRegex();

    public async ValueTask DisposeAsync()
    {
        if (!_killed) _ = Kill();
        await _stop.CancelAsync().ConfigureAwait(false);
        try { await _accept.ConfigureAwait(false); } catch (OperationCanceledException) { }
        _stop.Dispose();
    }
}
