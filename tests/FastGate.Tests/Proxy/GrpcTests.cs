using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Http;
using FastGate.Security;
using FastGate.Tests.Grpc;
using FastGate.Tests.Infrastructure;
using global::Grpc.Core;
using global::Grpc.Net.Client;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Proxy;

/// <summary>What the test's gRPC service waits on and reports (one per test class instance).</summary>
public sealed class EchoSignals
{
    /// <summary>Completed by the test once it has received the first streamed reply.</summary>
    public TaskCompletionSource FirstReplySeen { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>A real gRPC service (Grpc.AspNetCore): one method of each kind.</summary>
public sealed class EchoService(EchoSignals signals) : Echo.EchoBase
{
    private static EchoReply Reply(string text, int index, ServerCallContext context) => new()
    {
        Text = text,
        Index = index,
        Consumer = context.RequestHeaders.GetValue("x-consumer-id") ?? "",
        ForwardedFor = context.RequestHeaders.GetValue("x-forwarded-for") ?? "",
    };

    public override Task<EchoReply> Unary(EchoRequest request, ServerCallContext context)
    {
        if (request.Text == "fail") throw new RpcException(new Status(StatusCode.NotFound, "no such thing"));
        context.ResponseTrailers.Add("x-echo-trailer", "done");
        return Task.FromResult(Reply(request.Text, 0, context));
    }

    public override async Task ServerStream(EchoRequest request, IServerStreamWriter<EchoReply> responseStream, ServerCallContext context)
    {
        await responseStream.WriteAsync(Reply(request.Text, 0, context));
        // the second reply only once the client has the first: a relay that buffered would never deliver it
        await signals.FirstReplySeen.Task.WaitAsync(TimeSpan.FromSeconds(20), context.CancellationToken);
        for (int i = 1; i < request.Count; i++) await responseStream.WriteAsync(Reply(request.Text, i, context));
    }

    public override async Task<EchoReply> ClientStream(IAsyncStreamReader<EchoRequest> requestStream, ServerCallContext context)
    {
        var texts = new List<string>();
        await foreach (var r in requestStream.ReadAllAsync(context.CancellationToken)) texts.Add(r.Text);
        return Reply(string.Join(",", texts), texts.Count, context);
    }

    public override async Task Bidi(IAsyncStreamReader<EchoRequest> requestStream, IServerStreamWriter<EchoReply> responseStream, ServerCallContext context)
    {
        int i = 0;
        await foreach (var r in requestStream.ReadAllAsync(context.CancellationToken)) await responseStream.WriteAsync(Reply(r.Text.ToUpperInvariant(), i++, context));
    }
}

/// <summary>
/// gRPC through the gateway (docs/http2.md): a real Grpc.AspNetCore server behind an "h2" cluster (h2c), a real
/// Grpc.Net.Client in front of an "http2" listener. Unary, server streaming, client streaming and bidirectional calls
/// (each stream relayed as it flows), trailers relayed, the gateway's own rejections as gRPC statuses, and
/// grpc-timeout honoured by the gateway against an upstream that never answers.
/// </summary>
public sealed class GrpcTests : IAsyncLifetime
{
    private const string Key = "grpc-test-key-alice";
    private readonly EchoSignals _signals = new();
    private WebApplication _grpcServer = null!;
    private WebApplication _silent = null!;
    private TestGateway _gateway = null!;

    private static async Task<(WebApplication App, string Address)> StartH2cAsync(Action<WebApplicationBuilder> services, Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        services(builder);
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, address.TrimEnd('/'));
    }

    public async Task InitializeAsync()
    {
        (_grpcServer, var grpcAddress) = await StartH2cAsync(b =>
        {
            b.Services.AddGrpc();
            b.Services.AddSingleton(_signals);
        }, app => app.MapGrpcService<EchoService>());
        // an h2 upstream that takes the call and never answers: only the gateway's deadline can end it
        (_silent, var silentAddress) = await StartH2cAsync(_ => { }, app => app.Run(async ctx =>
        {
            try { await Task.Delay(Timeout.Infinite, ctx.RequestAborted); }
            catch (OperationCanceledException) { }
        }));
        _gateway = await TestGateway.StartAsync($$"""
            {
              "listeners": [ { "name": "h2c", "address": "127.0.0.1:0", "http2": true } ],
              "admin": { "address": "127.0.0.1:0" },
              "clusters": [
                { "id": "grpc", "protocol": "h2", "destinations": [ { "address": "{{grpcAddress}}" } ] },
                { "id": "silent", "protocol": "h2", "destinations": [ { "address": "{{silentAddress}}" } ] }
              ],
              "consumers": [ { "id": "alice", "apiKeys": [ "{{ApiKeys.Hash(Key)}}" ] } ],
              "rateLimits": [ { "id": "one-per-bucket", "algorithm": "gcra", "rate": 1, "per": "1h", "burst": 1, "key": "header:X-Bucket", "missingKey": "allow" } ],
              "policies": [ { "id": "no-bidi-for-bob", "match": { "paths": ["/fastgate.test.Echo/Bidi"], "headers": [ { "name": "x-user", "equals": "bob" } ] }, "actions": [ { "type": "deny" } ] } ],
              "routes": [
                { "id": "echo", "match": { "pathPrefix": "/fastgate.test.Echo/" }, "cluster": "grpc", "auth": ["apiKey"], "rateLimits": ["one-per-bucket"] },
                { "id": "silent", "match": { "pathPrefix": "/silent.Service/" }, "cluster": "silent" }
              ]
            }
            """);
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _grpcServer.DisposeAsync();
        await _silent.DisposeAsync();
    }

    private Uri GatewayUri => new($"http://127.0.0.1:{_gateway.EndPoint.Port}");

    private GrpcChannel Channel() => GrpcChannel.ForAddress(GatewayUri, new GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler { UseProxy = false },
    });

    private static CallOptions Options(string? key = Key, params (string, string)[] headers)
    {
        var metadata = new Metadata();
        if (key is not null) metadata.Add("x-api-key", key);
        metadata.Add("x-consumer-id", "mallory"); // a spoofed identity: the gateway's own must win
        foreach (var (name, value) in headers) metadata.Add(name, value);
        return new CallOptions(metadata, deadline: DateTime.UtcNow.AddSeconds(30));
    }

    [Fact]
    public async Task Unary_ThroughTheGateway_RepliesWithTheGatewaysIdentityAndRelaysTrailers()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        var call = client.UnaryAsync(new EchoRequest { Text = "hi" }, Options());
        var reply = await call;
        Assert.Equal("hi", reply.Text);
        Assert.Equal("alice", reply.Consumer);
        Assert.Equal("127.0.0.1", reply.ForwardedFor);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        Assert.Equal("done", call.GetTrailers().GetValue("x-echo-trailer"));
    }

    [Fact]
    public async Task Unary_UpstreamError_StatusAndMessageRelayed()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.UnaryAsync(new EchoRequest { Text = "fail" }, Options()));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Equal("no such thing", e.Status.Detail);
    }

    [Fact]
    public async Task ServerStreaming_EachReplyArrivesAsItIsSent()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        using var call = client.ServerStream(new EchoRequest { Text = "s", Count = 3 }, Options());
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(0, call.ResponseStream.Current.Index);
        _signals.FirstReplySeen.TrySetResult(); // the server sends the rest only now
        var rest = new List<int>();
        while (await call.ResponseStream.MoveNext(CancellationToken.None)) rest.Add(call.ResponseStream.Current.Index);
        Assert.Equal([1, 2], rest);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task ClientStreaming_AllMessagesReachTheServer()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        using var call = client.ClientStream(Options());
        foreach (var t in new[] { "a", "b", "c" }) await call.RequestStream.WriteAsync(new EchoRequest { Text = t });
        await call.RequestStream.CompleteAsync();
        var reply = await call;
        Assert.Equal("a,b,c", reply.Text);
        Assert.Equal(3, reply.Index);
    }

    [Fact]
    public async Task Bidirectional_EachMessageAnsweredBeforeTheNextIsSent()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        using var call = client.Bidi(Options());
        foreach (var (t, i) in new[] { ("one", 0), ("two", 1), ("three", 2) })
        {
            // ping-pong: without both directions flowing, the reply to this message never comes
            await call.RequestStream.WriteAsync(new EchoRequest { Text = t });
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(t.ToUpperInvariant(), call.ResponseStream.Current.Text);
            Assert.Equal(i, call.ResponseStream.Current.Index);
        }
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Rejections_AreGrpcStatuses()
    {
        using var channel = Channel();
        var client = new Echo.EchoClient(channel);
        // 401 → UNAUTHENTICATED
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.UnaryAsync(new EchoRequest { Text = "x" }, Options(key: null)));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        Assert.Equal("authentication_required", e.Status.Detail);
        // 403 (policy deny) → PERMISSION_DENIED
        using (var denied = client.Bidi(Options(Key, ("x-user", "bob"))))
        {
            var d = await Assert.ThrowsAsync<RpcException>(async () => await denied.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(StatusCode.PermissionDenied, d.StatusCode);
        }
        // 429 → RESOURCE_EXHAUSTED (one call per bucket)
        await client.UnaryAsync(new EchoRequest { Text = "x" }, Options(Key, ("x-bucket", "b1")));
        var limited = await Assert.ThrowsAsync<RpcException>(async () => await client.UnaryAsync(new EchoRequest { Text = "x" }, Options(Key, ("x-bucket", "b1"))));
        Assert.Equal(StatusCode.ResourceExhausted, limited.StatusCode);
        // 404 (no route) → UNIMPLEMENTED
        var unrouted = new Method<EchoRequest, EchoReply>(MethodType.Unary, "other.Service", "Call",
            Marshallers.Create(r => r.ToByteArray(), EchoRequest.Parser.ParseFrom), Marshallers.Create(r => r.ToByteArray(), EchoReply.Parser.ParseFrom));
        var none = await Assert.ThrowsAsync<RpcException>(async () =>
            await channel.CreateCallInvoker().AsyncUnaryCall(unrouted, null, Options(), new EchoRequest()));
        Assert.Equal(StatusCode.Unimplemented, none.StatusCode);
    }

    [Fact]
    public async Task GrpcTimeout_TheGatewayEndsACallTheUpstreamNeverAnswers_DeadlineExceeded()
    {
        // a raw gRPC request with grpc-timeout and no client-side deadline: only the gateway can end it
        using var http = new HttpMessageInvoker(new SocketsHttpHandler { UseProxy = false });
        var message = new EchoRequest { Text = "wait" }.ToByteArray();
        var frame = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
        message.CopyTo(frame, 5);
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(GatewayUri, "/silent.Service/Call"))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(frame),
        };
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation("grpc-timeout", "300m");
        var watch = Stopwatch.StartNew();
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var response = await http.SendAsync(request, cancel.Token);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("4", response.Headers.GetValues("grpc-status").Single()); // DEADLINE_EXCEEDED
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), $"took {watch.Elapsed}"); // the 30 s response timeout did not end it
    }

    [Fact]
    public async Task Http11RequestToAnH2Cluster_Is505()
    {
        using var client = await RawClient.ConnectAsync(_gateway.EndPoint);
        await client.SendAsync("POST /silent.Service/Call HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(505, response.Status);
        Assert.Contains("http2_required", response.Body);
    }

    [Fact]
    public async Task Unary_OverTlsToAnH2Upstream_VerifiedWithTheClustersCa()
    {
        using var ca = new TestCertificateAuthority("FastGate gRPC Upstream CA");
        using var certificate = ca.IssueServerCertificate("localhost");
        await OverTlsAsync(certificate, ca, async channel =>
        {
            var reply = await new Echo.EchoClient(channel).UnaryAsync(new EchoRequest { Text = "tls" }, Options(key: null));
            Assert.Equal("tls", reply.Text);
        });
    }

    [Fact]
    public async Task OverTls_AnUpstreamCertificateOutsideTheCa_IsUnavailable()
    {
        using var trusted = new TestCertificateAuthority("FastGate trusted CA");
        using var other = new TestCertificateAuthority("FastGate other CA");
        using var certificate = other.IssueServerCertificate("localhost");
        await OverTlsAsync(certificate, trusted, async channel =>
        {
            var e = await Assert.ThrowsAsync<RpcException>(async () =>
                await new Echo.EchoClient(channel).UnaryAsync(new EchoRequest { Text = "tls" }, Options(key: null)));
            Assert.Equal(StatusCode.Unavailable, e.StatusCode); // 502 upstream_tls_failed
            Assert.Equal("upstream_tls_failed", e.Status.Detail);
        });
    }

    /// <summary>A gRPC server over TLS (h2 only) with <paramref name="certificate"/>, a gateway whose h2 cluster trusts
    /// <paramref name="clusterCa"/>, and an h2c channel to the gateway for <paramref name="call"/>.</summary>
    private static async Task OverTlsAsync(System.Security.Cryptography.X509Certificates.X509Certificate2 certificate, TestCertificateAuthority clusterCa,
        Func<GrpcChannel, Task> call)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o =>
        {
            o.Protocols = HttpProtocols.Http2;
            o.UseHttps(certificate);
        }));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(new EchoSignals());
        await using var app = builder.Build();
        app.MapGrpcService<EchoService>();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        var caFile = clusterCa.WritePem();
        try
        {
            await using var gateway = await TestGateway.StartAsync($$"""
                {
                  "listeners": [ { "address": "127.0.0.1:0", "http2": true } ],
                  "clusters": [ { "id": "grpc", "protocol": "h2", "tls": { "ca": {{System.Text.Json.JsonSerializer.Serialize(caFile)}} },
                                  "destinations": [ { "address": "{{address}}" } ] } ],
                  "routes": [ { "id": "echo", "match": { "pathPrefix": "/fastgate.test.Echo/" }, "cluster": "grpc" } ]
                }
                """);
            using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{gateway.EndPoint.Port}", new GrpcChannelOptions { HttpHandler = new SocketsHttpHandler { UseProxy = false } });
            await call(channel);
        }
        finally
        {
            File.Delete(caFile);
        }
    }
}
