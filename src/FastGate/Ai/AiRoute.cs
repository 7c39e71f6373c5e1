using System.Net.Http;
using System.Diagnostics;
using System.Net;
using Prometheus;

namespace FastGate.Ai;

public enum ProviderFamily : byte { OpenAi, Azure, Anthropic, Gemini }

/// <summary>One provider of an AI route: its wire family, base URL (or cluster), HTTP client and key pool.</summary>
public sealed class AiProvider
{
    public required string Id { get; init; }
    public required string Kind { get; init; }
    public required ProviderFamily Family { get; init; }
    public string? BaseUrl { get; init; }
    /// <summary>Base URLs as a cluster's destinations: Pick chooses, Report feeds its passive health.</summary>
    public Proxy.ClusterModel? Cluster { get; init; }
    public string? ApiVersion { get; init; }
    /// <summary>With a cluster: the API path after the destination's address.</summary>
    public string BasePath { get; init; } = "";
    /// <summary>The provider's client: the handler itself behind an HttpMessageInvoker (no HttpClient: its linked
    /// cancellation source and async box per call buy nothing here; the head timeout is the stage's own).</summary>
    public required HttpMessageInvoker Http { get; init; }
    public required AiKeyPool Keys { get; init; }
    /// <summary>How the provider's streamed bodies were waited for (ProviderStream.cs).</summary>
    public required ProviderWaits Waits { get; init; }
    /// <summary>A configured TLS server name (<c>tls.sni</c>): sent as the Host, which the handler sends as SNI and checks
    /// the certificate against; null: the URL's host.</summary>
    public string? TlsHost { get; init; }

    /// <summary>The Host a call to <paramref name="destination"/> (a cluster provider's pick, else null) carries, if not the URL's.</summary>
    public string? HostFor(Proxy.DestinationModel? destination) =>
        destination is null ? TlsHost
        : destination.Pool.Tls is { NameConfigured: true } tls ? tls.TargetHost
        : null;
}

/// <summary>
/// A provider key pool: keys from environment variables and files, spread round-robin; a key answered with 401/429
/// is parked for its Retry-After. A timer (off the request path) re-reads the sources and swaps the key set in when
/// it changed; a key that stays keeps its parking. Keys are never logged and never shown by the admin API.
/// </summary>
public sealed class AiKeyPool : IDisposable
{
    private sealed class Set(string[] keys)
    {
        public readonly string[] Keys = keys;
        public readonly long[] ParkedUntil = new long[keys.Length];
    }

    private readonly string[] _envs;
    private readonly string[] _files;
    private volatile Set _set;
    private readonly System.Threading.ITimer? _timer;
    private int _next = -1;

    public AiKeyPool(string[] envs, string[] files, TimeSpan reloadInterval, TimeProvider time)
    {
        _envs = envs;
        _files = files;
        _set = new Set(Read());
        if (envs.Length + files.Length > 0)
        {
            // the timer holds the pool weakly: a pool of a replaced snapshot is collected and its timer stops
            var weak = new WeakReference<AiKeyPool>(this);
            System.Threading.ITimer? timer = null;
            timer = time.CreateTimer(_ =>
            {
                if (weak.TryGetTarget(out var pool)) pool.Reload();
                else timer?.Dispose();
            }, null, reloadInterval, reloadInterval);
            _timer = timer;
        }
    }

    public int Count => _set.Keys.Length;
    /// <summary>How many times a changed key set was swapped in.</summary>
    public int Reloads { get; private set; }

    internal static IEnumerable<string> ReadFile(string path) =>
        File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'));

    private string[] Read()
    {
        var keys = new List<string>();
        foreach (var e in _envs) if (Environment.GetEnvironmentVariable(e) is { Length: > 0 } v) keys.Add(v);
        foreach (var f in _files)
        {
            try { keys.AddRange(ReadFile(f).Where(k => !k.Any(ch => ch is < ' ' or > '~'))); }
            catch (IOException) { /* being rewritten: the next check reads it */ }
            catch (UnauthorizedAccessException) { }
        }
        return keys.ToArray();
    }

    /// <summary>Re-reads the sources; swaps in a changed set (parking kept for keys that stay).</summary>
    public void Reload()
    {
        var keys = Read();
        var old = _set;
        if (keys.Length == 0 || keys.AsSpan().SequenceEqual(old.Keys)) return;
        var next = new Set(keys);
        for (int i = 0; i < keys.Length; i++)
        {
            int j = Array.IndexOf(old.Keys, keys[i]);
            if (j >= 0) next.ParkedUntil[i] = Volatile.Read(ref old.ParkedUntil[j]);
        }
        _set = next;
        Reloads++;
    }

    /// <summary>The next usable key (null key and -1: none configured; -2: all parked).</summary>
    public int Next(long now, out string? key)
    {
        var set = _set;
        key = null;
        if (set.Keys.Length == 0) return -1;
        for (int tries = 0; tries < set.Keys.Length; tries++)
        {
            int i = (int)((uint)Interlocked.Increment(ref _next) % (uint)set.Keys.Length);
            if (Volatile.Read(ref set.ParkedUntil[i]) <= now)
            {
                key = set.Keys[i];
                return i;
            }
        }
        return -2;
    }

    /// <summary>Parks <paramref name="key"/> (looked up in the current set: a reload may have happened meanwhile).</summary>
    public void Park(string key, long until)
    {
        var set = _set;
        int i = Array.IndexOf(set.Keys, key);
        if (i >= 0) Volatile.Write(ref set.ParkedUntil[i], until);
    }

    public void Dispose() => _timer?.Dispose();
}

/// <summary>One "provider:model" target of a model alias, with its cooldown after a failure.</summary>
public sealed class AiTarget
{
    public required AiProvider Provider { get; init; }
    public required string Model { get; init; }
    public long Weight { get; init; } = 1;
    /// <summary>Price of a prompt / completion token in 10^-12 currency units (the price table's per-1M price x 10^6); 0: unpriced.</summary>
    public long PromptPricePico { get; init; }
    public long CompletionPricePico { get; init; }
    public long CostPico(long prompt, long completion) => prompt * PromptPricePico + completion * CompletionPricePico;
    private long _coolUntil;
    public bool IsCool(long now) => Volatile.Read(ref _coolUntil) <= now;
    public void CoolDown(long until) => Volatile.Write(ref _coolUntil, until);
}

public sealed class AiModel
{
    public required string Name { get; init; }
    public required AiTarget[] Targets { get; init; }
    public required long TotalWeight { get; init; }
}

/// <summary>
/// A token quota per consumer and model: a token rate limit (its state in the runtime's RateLimiterStore, kept across
/// reloads) whose key is the limiter's own key (e.g. the consumer) followed by the model alias, so each model has a
/// budget of its own.
/// </summary>
public sealed class AiQuota
{
    public required RateLimiting.CompiledLimiter Limiter { get; init; }
    /// <summary>null: every model of the route.</summary>
    public HashSet<string>? Models { get; init; }
    /// <summary>null: every caller.</summary>
    public HashSet<string>? Consumers { get; init; }

    public bool AppliesTo(string? consumer, string model) =>
        (Models is null || Models.Contains(model)) && (Consumers is null || (consumer is not null && Consumers.Contains(consumer)));
}

/// <summary>The compiled <c>ai</c> block of a route (immutable, per snapshot; target cooldowns and key parking live here).</summary>
public sealed class AiRoute
{
    public required string RouteId { get; init; }
    public required Dictionary<string, AiModel> Models { get; init; }
    public required string[] ModelNames { get; init; }
    public required long MaxBodyBytes { get; init; }
    public required long MaxResponseBytes { get; init; }
    public required long ResponseTimeoutTicks { get; init; }
    public required long CooldownTicks { get; init; }
    public PromptGuard? Guard { get; init; }
    public required AiMetrics Metrics { get; init; }
    public required TimeProvider Time { get; init; }
    /// <summary>The most (consumer, model, provider) usage series this route keeps; later ones count as "other".</summary>
    public int MaxUsageSeries { get; init; } = 1000;

    /// <summary>Token quotas per consumer and model (checked before the call, charged the reported tokens after it).</summary>
    public AiQuota[] Quotas { get; init; } = [];
    public byte[] RouteIdBytes { get; init; } = [];
    /// <summary>Prompt templates by path (after stripPrefix).</summary>
    public Dictionary<string, AiTemplate> Templates { get; init; } = new(StringComparer.Ordinal);
    public bool TemplatesOnly { get; init; }

    /// <summary>The usage series of a call (lock-free once the series exists).</summary>
    public AiUsageSeries Usage(string? consumer, string model, string provider) =>
        Metrics.Usage.Get(new AiUsageKey(RouteId, consumer ?? "", model, provider), MaxUsageSeries);
    /// <summary>Consumer → allowed model names; null: every caller may use every model.</summary>
    public Dictionary<string, HashSet<string>>? Access { get; init; }

    public bool Allows(string? consumer, string model) =>
        Access is null || (consumer is not null && Access.TryGetValue(consumer, out var models) && models.Contains(model));

    public static AiRoute Compile(string routeId, AiRouteConfig c, IReadOnlyDictionary<string, Proxy.ClusterModel> clusters,
        Observability.GatewayMetrics metrics, TimeProvider? time, string baseDirectory,
        IReadOnlyDictionary<string, RateLimiting.CompiledLimiter>? limiters = null)
    {
        var aiMetrics = AiMetrics.For(metrics);
        var providers = new Dictionary<string, AiProvider>(StringComparer.Ordinal);
        foreach (var p in c.Providers)
        {
            var waits = new ProviderWaits();
            // TLS trust: a baseUrl provider's own tls (or the system store), a cluster provider's cluster's
            Proxy.UpstreamTlsModel? tls = null;
            if (p.BaseUrl is { } url && url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
                tls = Proxy.UpstreamTlsModel.Create(new Uri(url).Host, p.Tls, baseDirectory);
            else if (p.Cluster is { } clusterId)
                tls = clusters[clusterId].Destinations.Select(d => d.Pool.Tls).FirstOrDefault(t => t is not null);
            var handler = new SocketsHttpHandler
            {
                ConnectTimeout = c.ConnectTimeout,
                PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
                MaxConnectionsPerServer = 256,
                UseProxy = false,
                AllowAutoRedirect = false,
                AutomaticDecompression = DecompressionMethods.None,
                MaxResponseHeadersLength = 64,
                // every connection's plaintext (over the socket or over TLS) through a ProviderStream: the streamed
                // relay waits for the network itself, so the handler's reads do not (ProviderStream.cs)
                PlaintextStreamFilter = (context, _) => new ValueTask<Stream>(new ProviderStream(context.PlaintextStream, waits)),
            };
            if (tls is not null) handler.SslOptions = tls.CreateHandlerOptions();
            providers[p.Id] = new AiProvider
            {
                Id = p.Id,
                Kind = p.Kind,
                Family = p.Kind switch
                {
                    "anthropic" => ProviderFamily.Anthropic,
                    "gemini" => ProviderFamily.Gemini,
                    "azure-openai" => ProviderFamily.Azure,
                    _ => ProviderFamily.OpenAi,
                },
                BaseUrl = p.BaseUrl?.TrimEnd('/'),
                Cluster = p.Cluster is null ? null : clusters[p.Cluster],
                ApiVersion = p.ApiVersion,
                BasePath = p.BasePath?.TrimEnd('/') ?? "",
                Http = new HttpMessageInvoker(handler),
                Waits = waits,
                TlsHost = p.Tls?.Sni,
                Keys = new AiKeyPool(p.KeyEnv.ToArray(), p.KeyFiles.Select(f => Configuration.ConfigPath.Resolve(f, baseDirectory)).ToArray(),
                    p.KeyReloadInterval, time ?? TimeProvider.System),
            };
        }
        var prices = c.Prices.ToDictionary(p => p.Target, StringComparer.Ordinal);
        var models = new Dictionary<string, AiModel>(StringComparer.Ordinal);
        foreach (var m in c.Models)
        {
            var targets = m.Targets.Select((t, i) =>
            {
                prices.TryGetValue(t, out var price);
                return new AiTarget
                {
                    Provider = providers[t[..t.IndexOf(':')]],
                    Model = t[(t.IndexOf(':') + 1)..],
                    Weight = m.Weights.Count > i ? m.Weights[i] : 1,
                    PromptPricePico = price is null ? 0 : AiPriceConfig.PerTokenPico(price.Input),
                    CompletionPricePico = price is null ? 0 : AiPriceConfig.PerTokenPico(price.Completion),
                };
            }).ToArray();
            models[m.Name] = new AiModel { Name = m.Name, Targets = targets, TotalWeight = targets.Sum(t => t.Weight) };
        }
        return new AiRoute
        {
            RouteId = routeId,
            Models = models,
            ModelNames = c.Models.Select(m => m.Name).ToArray(),
            MaxBodyBytes = c.MaxBodyBytes,
            MaxResponseBytes = c.MaxResponseBytes,
            ResponseTimeoutTicks = (long)(c.ResponseTimeout.TotalSeconds * Stopwatch.Frequency),
            CooldownTicks = (long)(c.Cooldown.TotalSeconds * Stopwatch.Frequency),
            Guard = c.Guard is null ? null : new PromptGuard(c.Guard, routeId, aiMetrics.Guard),
            Metrics = aiMetrics,
            Time = time ?? TimeProvider.System,
            MaxUsageSeries = c.MaxUsageSeries,
            Quotas = c.Quotas.Select(q => new AiQuota
            {
                Limiter = limiters![q.RateLimit],
                Models = q.Models.Count == 0 ? null : q.Models.ToHashSet(StringComparer.Ordinal),
                Consumers = q.Consumers.Count == 0 ? null : q.Consumers.ToHashSet(StringComparer.Ordinal),
            }).ToArray(),
            RouteIdBytes = System.Text.Encoding.ASCII.GetBytes(routeId),
            Templates = c.Templates.ToDictionary(t => t.Path, AiTemplate.Compile, StringComparer.Ordinal),
            TemplatesOnly = c.TemplatesOnly,
            Access = c.Access.Count == 0 ? null
                : c.Access.GroupBy(a => a.Consumer, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.SelectMany(a => a.Models).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal),
        };
    }

    /// <summary>The order targets are tried in: the first by weight among those not cooling down, then the rest in order.</summary>
    public AiTarget[] Order(AiModel model, long now)
    {
        var t = model.Targets;
        if (t.Length == 1) return t;
        long total = 0;
        foreach (var x in t) if (x.IsCool(now)) total += x.Weight;
        int first = 0;
        if (total == 0)
        {
            // no weighted target ready: the first one in list order that is (weight-0 fallbacks included)
            for (int i = 0; i < t.Length; i++) if (t[i].IsCool(now)) { first = i; break; }
        }
        else
        {
            long r = Random.Shared.NextInt64(total);
            for (int i = 0; i < t.Length; i++)
            {
                if (!t[i].IsCool(now)) continue;
                if (r < t[i].Weight) { first = i; break; }
                r -= t[i].Weight;
            }
        }
        var order = new List<AiTarget>(t.Length) { t[first] };
        for (int i = 0; i < t.Length; i++) if (i != first && t[i].IsCool(now)) order.Add(t[i]);
        for (int i = 0; i < t.Length; i++) if (i != first && !t[i].IsCool(now)) order.Add(t[i]); // cooling ones last, still a chance
        return order.ToArray();
    }
}

/// <summary>The AI gateway's metrics on the runtime's registry.</summary>
public sealed class AiMetrics
{
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Observability.GatewayMetrics, AiMetrics> s_byGateway = new();

    public static AiMetrics For(Observability.GatewayMetrics metrics) => s_byGateway.GetValue(metrics, m => new AiMetrics(m));

    private AiMetrics(Observability.GatewayMetrics m)
    {
        var f = Prometheus.Metrics.WithCustomRegistry(m.Registry);
        Requests = f.CreateCounter("fastgate_ai_requests_total",
            "AI endpoint calls by route, consumer, model, provider and outcome (ok; error: the provider answered 400 or more; failed: no provider answered, provider \"\").",
            "route", "consumer", "model", "provider", "outcome");
        Tokens = f.CreateCounter("fastgate_ai_tokens_total", "Tokens reported by providers, by route, consumer, model, provider and kind (prompt, completion).",
            "route", "consumer", "model", "provider", "kind");
        Failovers = f.CreateCounter("fastgate_ai_failovers_total", "Tries that failed over to the next target, by route, provider and reason.", "route", "provider", "reason");
        KeysParked = f.CreateCounter("fastgate_ai_keys_parked_total", "Provider keys parked after 401/429, by route and provider.", "route", "provider");
        Guard = f.CreateCounter("fastgate_ai_guard_total", "Prompt guard findings by route, kind and action.", "route", "kind", "action");
        FirstToken = f.CreateHistogram("fastgate_ai_first_token_seconds",
            "Time from the request to the first token sent to the caller (a stream's first event; a whole response once written), by route, consumer, model and provider.",
            new HistogramConfiguration { LabelNames = ["route", "consumer", "model", "provider"], Buckets = Histogram.ExponentialBuckets(0.001, 2, 16) });
        Cost = f.CreateCounter("fastgate_ai_cost_total",
            "Cost of the tokens providers reported, by the route's price table (ai.prices, per 1M tokens; unpriced targets cost 0), by route, consumer, model and provider.",
            "route", "consumer", "model", "provider");
        Usage = new AiUsageStore(this);
    }

    public Counter Requests { get; }
    public Counter Tokens { get; }
    public Counter Failovers { get; }
    public Counter KeysParked { get; }
    public Counter Guard { get; }
    public Histogram FirstToken { get; }
    public Counter Cost { get; }
    /// <summary>The usage series behind the metrics above and /admin/usage (bounded per route, kept across reloads).</summary>
    public AiUsageStore Usage { get; }
}
