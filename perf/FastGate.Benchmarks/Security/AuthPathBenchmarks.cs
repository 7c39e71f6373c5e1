using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using BenchmarkDotNet.Attributes;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Proxy;
using FastGate.RateLimiting;
using FastGate.Routing;
using FastGate.Security;

namespace FastGate.Benchmarks.Security;

/// <summary>
/// The authenticated request path as ProxyConnection runs it, on one keep-alive connection: parse the head, route,
/// authenticate (an API key, or a bearer token found in the validated-token cache), evaluate the policy, check the
/// route's auth requirement, build the per-consumer limiter key and acquire, write the upstream head with the
/// consumer header. The plain variant (no auth, no limiter) is the baseline. Every variant must be 0 B/op.
/// </summary>
[MemoryDiagnoser]
public class AuthPathBenchmarks
{
    private const string Secret = "bench-secret-bench-secret-bench-secret-0123456789";
    private static readonly byte[] ClientIp = "127.0.0.1"u8.ToArray();
    private static readonly byte[] RequestId = "0123456789abcdef0123456789abcdef"u8.ToArray();
    private static readonly ClientAddress Client = ClientAddress.From(IPAddress.Loopback);

    private readonly RequestHead _request = new();
    private readonly PolicyResult _decision = new();
    private FastGate.Pipeline.Exchange _exchange = null!;
    private readonly byte[] _keyBuffer = new byte[512];
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 0, useSynchronizationContext: false));
    private GatewaySnapshot _snapshot = null!;
    private UpstreamPoolStore _pools = null!;
    private RateLimiterStore _limiters = null!;
    private byte[] _plain = null!, _apiKey = null!, _jwt = null!;

    [GlobalSetup]
    public void Setup()
    {
        var config = $$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "clusters": [ { "id": "b", "destinations": [ { "address": "http://127.0.0.1:9001" } ] } ],
              "consumers": [ { "id": "bench", "apiKeys": [ "{{ApiKeys.Hash("bench-key")}}" ], "jwt": [ { "issuer": "local", "subject": "bench" } ] } ],
              "jwtIssuers": [ { "id": "local", "issuer": "https://issuer.example", "audiences": ["fastgate"], "secret": "{{Secret}}" } ],
              "rateLimits": [ { "id": "per-consumer", "algorithm": "gcra", "rate": 10000000, "per": "1s", "burst": 1000000000, "key": "consumer" } ],
              "routes": [
                { "id": "apikey", "match": { "pathPrefix": "/key" }, "cluster": "b", "auth": ["apiKey"], "rateLimits": ["per-consumer"] },
                { "id": "jwt", "match": { "pathPrefix": "/jwt" }, "cluster": "b", "auth": ["jwt"], "rateLimits": ["per-consumer"] },
                { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "b" }
              ]
            }
            """;
        var loaded = ConfigLoader.Load(config);
        if (!loaded.IsValid) throw new InvalidOperationException(string.Join("; ", loaded.Errors));
        var metrics = new FastGate.Observability.GatewayMetrics();
        _pools = new UpstreamPoolStore(metrics);
        _limiters = new RateLimiterStore(metrics: metrics);
        _snapshot = SnapshotCompiler.Compile(loaded.Config!, config, _pools, limiterStore: _limiters);

        const string head = "Host: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n";
        _plain = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\n" + head + "\r\n");
        _apiKey = Encoding.ASCII.GetBytes("GET /key HTTP/1.1\r\n" + head + "X-API-Key: bench-key\r\n\r\n");
        _jwt = Encoding.ASCII.GetBytes("GET /jwt HTTP/1.1\r\n" + head + "Authorization: Bearer " + MintHs256(Secret) + "\r\n\r\n");

        // The first token validation (a cache miss) happens here; the measured calls are cache hits.
        if (Run(_apiKey).Result != 1) throw new InvalidOperationException("the API key was not accepted");
        if (Run(_jwt).Result != 1) throw new InvalidOperationException("the bearer token was not accepted");
        if (Run(_plain).Result != 0) throw new InvalidOperationException("the plain request was not proxied");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pools.Dispose();
        _limiters.Dispose();
    }

    [Benchmark(Baseline = true)]
    public int Plain() => Run(_plain).Result;

    [Benchmark]
    public int ApiKeyAndPerConsumerLimit() => Run(_apiKey).Result;

    [Benchmark]
    public int JwtCachedAndPerConsumerLimit() => Run(_jwt).Result;

    /// <summary>The API-key lookup alone (an accepted key: a cache hit after the first request).</summary>
    [Benchmark]
    public ConsumerModel? ApiKeyAuthenticateOnly()
    {
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(_apiKey), _snapshot.Limits, _request, out _, out _);
        return _snapshot.Authenticator.Authenticate(_request);
    }

    /// <summary>The bearer-token lookup alone (a validated-token cache hit).</summary>
    [Benchmark]
    public ConsumerModel? JwtAuthenticateOnly()
    {
        HttpRequestParser.TryParse(new ReadOnlySequence<byte>(_jwt), _snapshot.Limits, _request, out _, out _);
        return _snapshot.Jwt.AuthenticateAsync(_request).Result.Consumer;
    }

    /// <summary>1 when a consumer was authenticated and admitted, 0 for an anonymous request on an open route; throws otherwise.</summary>
    private async ValueTask<int> Run(byte[] bytes)
    {
        var snapshot = _snapshot;
        if (HttpRequestParser.TryParse(new ReadOnlySequence<byte>(bytes), snapshot.Limits, _request, out _, out _) != ParseStatus.Complete)
            throw new InvalidOperationException("parse");
        // the admission decision as the request path makes it (Pipeline/Admission), then the rate limits and the rewrite
        _exchange ??= new FastGate.Pipeline.Exchange(_request, _decision);
        var x = _exchange;
        x.Begin(ClientIp, Client, null);
        var verdict = FastGate.Pipeline.Admission.Decide(snapshot, x, null);
        if (verdict == FastGate.Pipeline.AdmissionVerdict.NeedsToken)
        {
            x.CompleteToken(await x.PendingToken.ConfigureAwait(false));
            verdict = FastGate.Pipeline.Admission.Decide(snapshot, x, null);
        }
        if (verdict != FastGate.Pipeline.AdmissionVerdict.Forward) throw new InvalidOperationException("refused: " + verdict);
        var route = x.Route!;
        var consumer = x.Consumer;
        long now = TimeProvider.System.GetTimestamp();
        foreach (var limiter in route.Limiters)
        {
            int n = limiter.BuildKey(_keyBuffer, _request, ClientIp, route.IdBytes, consumer);
            var pending = n >= 0 ? limiter.Limiter.AcquireAsync(_keyBuffer.AsSpan(0, n), 1, now) : limiter.Limiter.AcquireWithoutKeyAsync(1);
            var decision = pending.IsCompletedSuccessfully ? pending.Result : await pending.ConfigureAwait(false);
            if (!decision.IsAllowed) throw new InvalidOperationException("rate limited");
            limiter.Allowed.Inc();
        }
        HeadRewriter.WriteUpstreamRequest(_pipe.Writer, x, x.Cluster!.Next(), RequestId, tls: false);
        await _pipe.Writer.FlushAsync().ConfigureAwait(false);
        _pipe.Reader.TryRead(out var result);
        _pipe.Reader.AdvanceTo(result.Buffer.End);
        return consumer is null ? 0 : 1;
    }

    /// <summary>An HS256 token for the benchmark issuer, valid for a day.</summary>
    internal static string MintHs256(string secret)
    {
        static string B64(ReadOnlySpan<byte> b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        long exp = DateTimeOffset.UtcNow.AddDays(1).ToUnixTimeSeconds();
        string signingInput = B64("""{"alg":"HS256","typ":"JWT"}"""u8) + "." +
            B64(Encoding.UTF8.GetBytes("{\"iss\":\"https://issuer.example\",\"aud\":\"fastgate\",\"sub\":\"bench\",\"exp\":" + exp + "}"));
        return signingInput + "." + B64(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.ASCII.GetBytes(signingInput)));
    }
}
