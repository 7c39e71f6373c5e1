using System.Collections.Concurrent;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Ai;

/// <summary>One request a fake provider received: its request line, headers and JSON body.</summary>
public sealed record ProviderRequest(string Method, string Target, Dictionary<string, string> Headers, string Body)
{
    public JsonElement Json => JsonDocument.Parse(Body).RootElement;
}

/// <summary>
/// A fake LLM provider on a real socket (127.0.0.1, ephemeral port): it records each request and answers with the
/// bytes its script returns, each element written separately (so SSE events arrive split at the script's bytes).
/// </summary>
public sealed class FakeProvider : IAsyncDisposable
{
    private readonly RawUpstream _server;
    public ConcurrentQueue<ProviderRequest> Requests { get; } = new();

    /// <param name="certificate">Speak TLS with this server certificate (an https:// provider), else plain http.</param>
    public FakeProvider(Func<ProviderRequest, IReadOnlyList<byte[]>> script, X509Certificate2? certificate = null)
    {
        _tls = certificate is not null;
        _server = new RawUpstream(async (network, cancel) =>
        {
            Stream stream = network;
            if (certificate is not null)
            {
                var ssl = new SslStream(network, leaveInnerStreamOpen: false);
                await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
                {
                    ServerCertificateSelectionCallback = (_, name) => { ServerNames.Enqueue(name ?? ""); return certificate; },
                }, cancel);
                stream = ssl;
            }
            while (true)
            {
                var head = await RawUpstream.ReadHeadAsync(stream, cancel);
                if (head.Length == 0) return;
                var lines = head.Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
                var first = lines[0].Split(' ');
                var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                foreach (var line in lines.Skip(1))
                {
                    int colon = line.IndexOf(':');
                    headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
                }
                var body = "";
                if (headers.TryGetValue("Content-Length", out var cl) && int.Parse(cl) > 0)
                {
                    var bytes = new byte[int.Parse(cl)];
                    await stream.ReadExactlyAsync(bytes, cancel);
                    body = Encoding.UTF8.GetString(bytes);
                }
                var request = new ProviderRequest(first[0], first[1], headers, body);
                Requests.Enqueue(request);
                foreach (var piece in script(request))
                {
                    await stream.WriteAsync(piece, cancel);
                    await stream.FlushAsync(cancel);
                    await Task.Yield();
                }
            }
        });
    }

    private readonly bool _tls;
    /// <summary>The server name (SNI) of each TLS handshake ("" without one).</summary>
    public ConcurrentQueue<string> ServerNames { get; } = new();
    public string Address => _tls ? $"https://127.0.0.1:{_server.Port}" : _server.Address;

    public static byte[] Ascii(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>A whole JSON response.</summary>
    public static IReadOnlyList<byte[]> Json(int status, string json, string extraHeaders = "") =>
        [Ascii($"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(json)}\r\n{extraHeaders}\r\n{json}")];

    /// <summary>An SSE response (chunked) whose body is cut into pieces at the given byte lengths, each its own TCP write.</summary>
    public static IReadOnlyList<byte[]> Sse(string events, int cut)
    {
        var pieces = new List<byte[]> { Ascii("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n") };
        var bytes = Encoding.UTF8.GetBytes(events);
        for (int i = 0; i < bytes.Length; i += cut)
        {
            var part = bytes.AsSpan(i, Math.Min(cut, bytes.Length - i));
            pieces.Add([.. Ascii($"{part.Length:x}\r\n"), .. part, .. "\r\n"u8]);
        }
        pieces.Add(Ascii("0\r\n\r\n"));
        return pieces;
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();
}

/// <summary>A gateway with one AI route, and a client for it.</summary>
public static class AiGatewayKit
{
    public static string Config(string providers, string models, string guard = "", string extraClusters = "") => $$"""
        {
          "listeners": [ { "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "none", "destinations": [ { "address": "http://127.0.0.1:9" } ] } {{extraClusters}} ],
          "routes": [
            { "id": "ai", "match": { "pathPrefix": "/ai" }, "cluster": "none", "stripPrefix": true,
              "ai": { "providers": [ {{providers}} ], "models": [ {{models}} ], "connectTimeout": "2s", "responseTimeout": "10s" {{guard}} } }
          ]
        }
        """;

    public static async Task<RawResponse> PostAsync(TestGateway gateway, string path, string json)
    {
        using var client = await RawClient.ConnectAsync(gateway.EndPoint);
        var bytes = Encoding.UTF8.GetBytes(json);
        await client.SendAsync(Encoding.ASCII.GetBytes($"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {bytes.Length}\r\n\r\n"));
        await client.SendAsync(bytes);
        return await client.ReadResponseAsync();
    }

    /// <summary>One chunk of a chunked body.</summary>
    public static byte[] Chunk(string data)
    {
        var bytes = Encoding.UTF8.GetBytes(data);
        return [.. FakeProvider.Ascii(bytes.Length.ToString("x", System.Globalization.CultureInfo.InvariantCulture) + "\r\n"), .. bytes, .. "\r\n"u8];
    }

    /// <summary>
    /// A streamed chat through the gateway at a live model's pace: after the caller has received event i ("t{i} ") it
    /// releases <paramref name="received"/>, which the test's provider waits on before it writes event i + 1; returns
    /// once [DONE] is in.
    /// </summary>
    public static async Task PacedStreamAsync(TestGateway gateway, int events, SemaphoreSlim received)
    {
        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(gateway.EndPoint);
        var s = client.GetStream();
        var json = Encoding.UTF8.GetBytes("""{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}""");
        await s.WriteAsync(Encoding.ASCII.GetBytes($"POST /ai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {json.Length}\r\n\r\n"));
        await s.WriteAsync(json);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var text = new StringBuilder();
        var buffer = new byte[8192];
        for (int i = 0; i <= events; i++)
        {
            string until = i < events ? $"\"t{i} \"" : "[DONE]";
            while (!text.ToString().Contains(until, StringComparison.Ordinal))
            {
                int n = await s.ReadAsync(buffer, cts.Token);
                Assert.True(n > 0);
                text.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
            if (i < events) received.Release();
        }
    }

    /// <summary>The data of each SSE event of a (decoded) stream body.</summary>
    public static List<string> Events(string body) =>
        body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e.StartsWith("data: ", StringComparison.Ordinal) ? e[6..] : e).ToList();
}
