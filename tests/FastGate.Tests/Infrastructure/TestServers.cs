using System.Net.Http;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using FastGate.Configuration;
using FastGate.DemoUpstream;
using FastGate.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>The demo upstream (a real Kestrel app) on an ephemeral loopback port.</summary>
public sealed class DemoUpstreamServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private DemoUpstreamServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    public Uri Address { get; }

    public static async Task<DemoUpstreamServer> StartAsync()
    {
        var app = DemoUpstreamApp.Build("http://127.0.0.1:0");
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new DemoUpstreamServer(app, new Uri(address));
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

/// <summary>A raw TCP upstream whose behaviour each test scripts byte by byte.</summary>
public sealed class RawUpstream : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;
    private int _connections;

    public RawUpstream(Func<NetworkStream, CancellationToken, Task> handler)
    {
        _listener.Start();
        _accept = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient client;
                try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
                catch (Exception) { return; }
                Interlocked.Increment(ref _connections);
                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        try { await handler(client.GetStream(), _stop.Token); }
                        catch (Exception) { /* scripted peers may be cut off */ }
                    }
                });
            }
        });
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    public string Address => $"http://127.0.0.1:{Port}";
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Reads one request head (up to the empty line) from the stream.</summary>
    public static async Task<string> ReadHeadAsync(Stream stream, CancellationToken cancel)
    {
        var sb = new StringBuilder();
        var one = new byte[1];
        while (!sb.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(one, cancel);
            if (n == 0) break;
            sb.Append((char)one[0]);
        }
        return sb.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _accept;
    }
}

/// <summary>A real gateway (Kestrel + FastGate) on an ephemeral port, from a config with {placeholders}.</summary>
public sealed class TestGateway : IAsyncDisposable
{
    private TestGateway(GatewayHost host) => Host = host;

    public GatewayHost Host { get; }
    /// <summary>This gateway's own metrics (its registry is what its /metrics exports; no other gateway counts there).</summary>
    public FastGate.Observability.GatewayMetrics Metrics => Host.Runtime.Metrics;
    public IPEndPoint EndPoint => Host.ListenerEndPoints[0];
    public Uri BaseUri => new($"http://{EndPoint}");
    public IPEndPoint? Admin => Host.AdminEndPoint;

    public static string Config(string upstream, string extraRoutes = "", string limits = "", string clusterExtra = "") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } {{clusterExtra}} ],
          "routes": [ {{extraRoutes}} { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend" } ],
          "limits": { {{limits}} }
        }
        """;

    public static async Task<TestGateway> StartAsync(string configJson, TimeProvider? time = null, CapturedLogs? logs = null)
    {
        var loaded = ConfigLoader.Load(configJson);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        var (host, _) = GatewayHost.FromConfig(loaded, logLevel: logs is null ? LogLevel.Warning : LogLevel.Information, time: time, logs: logs);
        await host!.StartAsync();
        return new TestGateway(host);
    }

    /// <summary>A gateway started from a file, with live reloads of that file.</summary>
    public static async Task<TestGateway> StartFromFileAsync(string path, CapturedLogs? logs = null)
    {
        var loaded = ConfigLoader.LoadFile(path);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        var (host, _) = GatewayHost.FromConfig(loaded, path, logs is null ? LogLevel.Critical : LogLevel.Information, logs: logs);
        await host!.StartAsync();
        return new TestGateway(host);
    }

    public HttpClient CreateAdminClient(string? token = null)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://{Admin}") };
        if (token is not null) http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    public HttpClient CreateClient() => new(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false })
    {
        BaseAddress = BaseUri,
        Timeout = TimeSpan.FromSeconds(30),
    };

    public async Task<string> ScrapeMetricsAsync()
    {
        using var http = new HttpClient();
        return await http.GetStringAsync($"http://{Admin}/metrics");
    }

    public async ValueTask DisposeAsync() => await Host.DisposeAsync();
}

/// <summary>A raw client socket: sends exact bytes and reads responses, so malformed input can be tested.</summary>
public sealed class RawClient : IDisposable
{
    private readonly TcpClient _client = new();
    private Stream _stream = null!;
    private readonly byte[] _buffer = new byte[65536];
    private int _start, _end;

    public static async Task<RawClient> ConnectAsync(IPEndPoint ep)
    {
        var c = new RawClient();
        await c._client.ConnectAsync(ep);
        c._stream = c._client.GetStream();
        return c;
    }

    /// <summary>
    /// Connects and completes a TLS handshake that trusts only <paramref name="trustedCa"/> for the server, offering
    /// <paramref name="clientCertificate"/> when given. Throws when the handshake fails.
    /// </summary>
    public static async Task<RawClient> ConnectTlsAsync(IPEndPoint ep, X509Certificate2 trustedCa, X509Certificate2? clientCertificate = null,
        SslProtocols protocols = SslProtocols.None, string targetHost = "localhost")
    {
        var c = new RawClient();
        await c._client.ConnectAsync(ep);
        var ssl = new SslStream(c._client.GetStream(), leaveInnerStreamOpen: false);
        c._stream = ssl;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = targetHost,
            EnabledSslProtocols = protocols,
            ApplicationProtocols = [SslApplicationProtocol.Http11],
            ClientCertificates = clientCertificate is null ? null : [clientCertificate],
            // no fallback to the system store: present exactly this certificate (or none)
            LocalCertificateSelectionCallback = (_, _, _, _, _) => clientCertificate!,
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                if (cert is null) return false;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(trustedCa);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(X509CertificateLoader.LoadCertificate(cert.GetRawCertData()));
            },
        }, cts.Token);
        return c;
    }

    /// <summary>The TLS session of a <see cref="ConnectTlsAsync"/> client (null for plain TCP).</summary>
    public SslStream? Tls => _stream as SslStream;

    public Task SendAsync(string text) => _stream.WriteAsync(Encoding.Latin1.GetBytes(text)).AsTask();
    public Task SendAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();

    /// <summary>Reads one response: status, headers (lower-cased names) and body by its framing.</summary>
    public async Task<RawResponse> ReadResponseAsync(bool headRequest = false, int timeoutMs = 10000)
    {
        using var cts = new CancellationTokenSource(timeoutMs);
        var head = await ReadLineBlockAsync(cts.Token);
        var lines = head.Split("\r\n");
        var statusParts = lines[0].Split(' ', 3);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var l in lines.Skip(1).Where(l => l.Length > 0))
        {
            int c = l.IndexOf(':');
            var name = l[..c];
            var value = l[(c + 1)..].Trim();
            headers[name] = headers.TryGetValue(name, out var prev) ? prev + ", " + value : value;
        }
        int status = int.Parse(statusParts[1]);
        string body = "";
        if (!headRequest && status is >= 200 and not 204 and not 304)
        {
            if (headers.TryGetValue("content-length", out var cl)) body = Encoding.Latin1.GetString(await ReadExactAsync(int.Parse(cl), cts.Token));
            else if (headers.TryGetValue("transfer-encoding", out var te) && te.EndsWith("chunked", StringComparison.OrdinalIgnoreCase))
            {
                var sb = new StringBuilder();
                while (true)
                {
                    var sizeLine = await ReadLineAsync(cts.Token);
                    int size = Convert.ToInt32(sizeLine.Split(';')[0], 16);
                    if (size == 0) { while ((await ReadLineAsync(cts.Token)).Length > 0) { } break; }
                    sb.Append(Encoding.Latin1.GetString(await ReadExactAsync(size, cts.Token)));
                    await ReadLineAsync(cts.Token);
                }
                body = sb.ToString();
            }
            else body = await ReadToEndAsync(cts.Token);
        }
        return new RawResponse(status, headers, body);
    }

    /// <summary>True when the server closes the connection (reads return 0) within the timeout.</summary>
    public async Task<bool> IsClosedByServerAsync(int timeoutMs = 5000)
    {
        using var cts = new CancellationTokenSource(timeoutMs);
        try
        {
            while (true)
            {
                if (_start < _end) { _start = _end; continue; }
                int n = await _stream.ReadAsync(_buffer, cts.Token);
                if (n == 0) return true;
            }
        }
        catch (OperationCanceledException) { return false; }
        catch (IOException) { return true; }
    }

    private async Task<string> ReadToEndAsync(CancellationToken cancel)
    {
        var sb = new StringBuilder(Encoding.Latin1.GetString(_buffer, _start, _end - _start));
        _start = _end = 0;
        int n;
        while ((n = await _stream.ReadAsync(_buffer, cancel)) > 0) sb.Append(Encoding.Latin1.GetString(_buffer, 0, n));
        return sb.ToString();
    }

    private async Task<bool> FillAsync(CancellationToken cancel)
    {
        if (_start == _end) _start = _end = 0;
        if (_end == _buffer.Length) throw new InvalidOperationException("response too large for the test buffer");
        int n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancel);
        _end += n;
        return n > 0;
    }

    private async Task<string> ReadLineAsync(CancellationToken cancel)
    {
        while (true)
        {
            int i = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n"u8);
            if (i >= 0)
            {
                var line = Encoding.Latin1.GetString(_buffer, _start, i);
                _start += i + 2;
                return line;
            }
            if (_start > 0) { Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start); _end -= _start; _start = 0; }
            if (!await FillAsync(cancel)) throw new IOException("connection closed while reading a line");
        }
    }

    private async Task<string> ReadLineBlockAsync(CancellationToken cancel)
    {
        var sb = new StringBuilder();
        while (true)
        {
            var line = await ReadLineAsync(cancel);
            if (line.Length == 0) return sb.ToString();
            sb.Append(line).Append("\r\n");
        }
    }

    private async Task<byte[]> ReadExactAsync(int count, CancellationToken cancel)
    {
        var result = new byte[count];
        int got = 0;
        while (got < count)
        {
            if (_start == _end && !await FillAsync(cancel)) throw new IOException("connection closed in a body");
            int n = Math.Min(count - got, _end - _start);
            Buffer.BlockCopy(_buffer, _start, result, got, n);
            _start += n;
            got += n;
        }
        return result;
    }

    public void Dispose() => _client.Dispose();
}

public sealed record RawResponse(int Status, Dictionary<string, string> Headers, string Body);
