using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Observability;

/// <summary>A real webhook receiver: a small Kestrel app on 127.0.0.1 that records every JSON body it is posted.</summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Channel<JsonDocument> _received = Channel.CreateUnbounded<JsonDocument>();
    private readonly TaskCompletionSource _firstRequest = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _count;

    private WebhookReceiver(WebApplication app) => _app = app;

    /// <summary>Status the receiver answers with (500 makes the notifier retry).</summary>
    public int StatusCode { get; set; } = 200;
    public int Count => Volatile.Read(ref _count);
    /// <summary>Completes when the first request (accepted or not) has arrived.</summary>
    public Task FirstRequest => _firstRequest.Task;
    public string Url { get; private set; } = "";

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var receiver = new WebhookReceiver(app);
        app.Run(async context =>
        {
            var doc = await JsonDocument.ParseAsync(context.Request.Body);
            Interlocked.Increment(ref receiver._count);
            receiver._firstRequest.TrySetResult();
            context.Response.StatusCode = receiver.StatusCode;
            if (receiver.StatusCode < 300) await receiver._received.Writer.WriteAsync(doc);
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        receiver.Url = address.TrimEnd('/') + "/hook";
        return receiver;
    }

    /// <summary>The next accepted payload (fails the test after 15 s: a missing notification, not a timing check).</summary>
    public async Task<JsonElement> NextAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        try
        {
            return (await _received.Reader.ReadAsync(cts.Token)).RootElement;
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException("the webhook receiver got no notification");
        }
    }

    public bool TryNext(out JsonElement payload)
    {
        payload = default;
        if (!_received.Reader.TryRead(out var doc)) return false;
        payload = doc.RootElement;
        return true;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

/// <summary>A webhook that accepts connections and never answers: the dead receiver.</summary>
public sealed class DeadWebhook : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly List<TcpClient> _held = [];
    private readonly TaskCompletionSource _firstAccepted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _accepted;

    public DeadWebhook()
    {
        _listener.Start();
        _ = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var c = await _listener.AcceptTcpClientAsync();
                    lock (_held) _held.Add(c);
                    Interlocked.Increment(ref _accepted);
                    _firstAccepted.TrySetResult();
                }
            }
            catch (Exception) { }
        });
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/hook";
    public int Accepted => Volatile.Read(ref _accepted);
    /// <summary>Completes when the first connection has been accepted (and is then never answered).</summary>
    public Task FirstAccepted => _firstAccepted.Task;

    public void Dispose()
    {
        _listener.Stop();
        lock (_held) foreach (var c in _held) c.Dispose();
    }
}

/// <summary>A scripted upstream whose status can be switched while it runs.</summary>
public sealed class SwitchableUpstream : IAsyncDisposable
{
    private readonly Infrastructure.RawUpstream _raw;
    private volatile int _status = 200;

    public SwitchableUpstream()
    {
        _raw = new Infrastructure.RawUpstream(async (stream, cancel) =>
        {
            while (true)
            {
                var head = await Infrastructure.RawUpstream.ReadHeadAsync(stream, cancel);
                if (head.Length == 0) return;
                LastHead = head;
                int status = _status;
                var body = "body"u8.ToArray();
                var bytes = System.Text.Encoding.ASCII.GetBytes($"HTTP/1.1 {status} X\r\nContent-Length: {body.Length}\r\n\r\n");
                await stream.WriteAsync(bytes.Concat(body).ToArray(), cancel);
            }
        });
    }

    public int Status { get => _status; set => _status = value; }
    public string Address => _raw.Address;
    public volatile string LastHead = "";

    public async ValueTask DisposeAsync() => await _raw.DisposeAsync();
}

public static class ObsConfig
{
    public static string Gateway(string upstream, string extraSections, string routeId = "api") => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "{{routeId}}-cluster", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [ { "id": "{{routeId}}", "match": { "pathPrefix": "/" }, "cluster": "{{routeId}}-cluster" } ],
          {{extraSections}}
        }
        """;
}
