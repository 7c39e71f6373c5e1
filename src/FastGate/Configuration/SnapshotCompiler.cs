using System.Net;
using System.Security.Cryptography;
using System.Text;
using FastGate.Http;
using FastGate.Observability;
using FastGate.Proxy;
using FastGate.Routing;

namespace FastGate.Configuration;

/// <summary>Turns a validated <see cref="GatewayConfig"/> into an immutable <see cref="GatewaySnapshot"/>.</summary>
public static class SnapshotCompiler
{
    /// <summary>The version of a config: a content hash of its text (the file watcher compares it too).</summary>
    public static string VersionOf(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..12];

    /// <param name="pools">The runtime's upstream pools; they count into <see cref="UpstreamPoolStore.Metrics"/>, the
    /// metrics the snapshot is compiled against (route and limiter children are resolved from them here).</param>
    public static GatewaySnapshot Compile(GatewayConfig config, string text, UpstreamPoolStore pools, TimeProvider? time = null,
        RateLimiting.RateLimiterStore? limiterStore = null, Security.JwtKeyStore? jwtKeys = null)
    {
        var metrics = pools.Metrics;
        if (limiterStore is not null && !ReferenceEquals(limiterStore.Metrics, metrics))
            throw new ArgumentException("the limiter store belongs to another gateway's metrics", nameof(limiterStore));
        if (jwtKeys is not null && !ReferenceEquals(jwtKeys.Metrics, metrics))
            throw new ArgumentException("the JWT key store belongs to another gateway's metrics", nameof(jwtKeys));
        // Limiters: the store returns the existing limiter for an unchanged definition, so its state survives.
        var limiters = new Dictionary<string, RateLimiting.CompiledLimiter>(StringComparer.Ordinal);
        if (limiterStore is not null)
        {
            foreach (var l in config.RateLimits)
                limiters[l.Id] = new RateLimiting.CompiledLimiter(limiterStore.GetOrCreate(l.Definition!), l.Key, metrics) { CountsTokens = l.CountsTokens };
            limiterStore.Retain(config.RateLimits.Select(l => l.Definition!));
        }
        else if (config.RateLimits.Count > 0)
        {
            throw new InvalidOperationException("rate limits are configured but no limiter store was given");
        }
        var limits = config.Limits;
        var clusters = new Dictionary<string, ClusterModel>(StringComparer.Ordinal);
        var clock = time ?? TimeProvider.System;
        foreach (var c in config.Clusters)
        {
            var destinations = c.Destinations.Select(d =>
            {
                var uri = new Uri(d.Address);
                EndPoint ep = IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip)
                    ? new IPEndPoint(ip, uri.Port)
                    : new DnsEndPoint(uri.Host, uri.Port);
                var tls = uri.Scheme == "https" ? UpstreamTlsModel.Create(uri.Host, c.Tls, config.BaseDirectory) : null;
                var pool = pools.GetOrCreate(c.Id, ep, c.MaxConnectionsPerDestination, c.MaxIdleConnectionsPerDestination, c.IdleConnectionTimeout, tls);
                return new DestinationModel(d.Address, uri.Authority, pool, d.Weight, pools.Health.GetOrCreate(c.Id, d.Address));
            }).ToArray();
            clusters[c.Id] = new ClusterModel(c.Id, destinations, new Traffic.ClusterTraffic(c, clock), new ClusterResilience(c.Id, c.Retry, c.CircuitBreaker, metrics))
            {
                Config = c,
                Http2 = pools.Http2Upstream(c, config, destinations),
            };
        }
        pools.Health.Retain(config.Clusters.SelectMany(c => c.Destinations.Select(d => (c.Id, d.Address))));

        var issuerIds = config.JwtIssuers.Select(i => i.Id).ToArray();
        var cors = config.Cors.ToDictionary(c => c.Id, c => new Security.CorsModel(c), StringComparer.Ordinal);
        var wafProfiles = Waf.WafProfileCompiler.Compile(config, metrics);
        var routes = new List<RouteModel>();
        var entries = new List<RouteEntry>();
        for (int i = 0; i < config.Routes.Count; i++)
        {
            var r = config.Routes[i];
            // key injection: header, prefix and the secret, read from the environment here and nowhere else
            var credential = r.UpstreamCredential is { } uc
                ? (uc.Resolve().Header, uc.Resolve().Prefix, Secret: Environment.GetEnvironmentVariable(uc.Env))
                : ((string Header, string Prefix, string? Secret)?)null;
            var model = new RouteModel
            {
                Id = r.Id,
                Cluster = clusters[r.Cluster],
                Metrics = new RouteMetrics(r.Id, metrics),
                StripPrefix = string.IsNullOrEmpty(r.StripPrefix) ? [] : Encoding.ASCII.GetBytes(r.StripPrefix.TrimEnd('/')),
                PreserveHost = r.PreserveHost,
                Order = i,
                Limiters = r.RateLimits.Select(id => limiters[id]).ToArray(),
                Auth = r.Auth.Count > 0 ? Security.AuthRequirement.Compile(r.Auth, r.Scopes, r.Claims, issuerIds) : null,
                Cors = r.Cors is null ? null : cors[r.Cors],
                HstsLine = r.Hsts is null ? null : System.Text.Encoding.ASCII.GetBytes($"Strict-Transport-Security: {r.Hsts}\r\n"),
                ForwardApiKey = r.ForwardApiKey,
                UpstreamCredentialName = credential is { } c ? Encoding.ASCII.GetBytes(c.Header) : null,
                UpstreamCredentialLine = credential is { } l ? Encoding.ASCII.GetBytes($"{l.Header}: {l.Prefix}{l.Secret}\r\n") : null,
                RequestTimeoutTicks = (r.RequestTimeout ?? limits.RequestTimeout) is { } rt ? GatewaySnapshot.ToTicks(rt) : 0,
                Waf = r.Waf is null ? null : wafProfiles[r.Waf],
                Ai = r.Ai is null ? null : FastGate.Ai.AiRoute.Compile(r.Id, r.Ai, clusters, metrics, time, config.BaseDirectory, limiters),
            };
            routes.Add(model);
            var m = r.Match;
            (PathMatchKind kind, string path) = m.Path is not null ? (PathMatchKind.Exact, m.Path)
                : m.PathPrefix is not null && m.PathPrefix != "/" ? (PathMatchKind.Prefix, m.PathPrefix)
                : (PathMatchKind.Any, "");
            var methods = MethodSet.Parse(m.Methods);
            var hosts = m.Hosts.Count == 0 ? ["*"] : m.Hosts;
            foreach (var host in hosts)
            {
                entries.Add(new RouteEntry
                {
                    Route = model,
                    Host = HostPattern.Parse(host),
                    PathKind = kind,
                    Path = Encoding.ASCII.GetBytes(path),
                    Methods = methods,
                });
            }
        }

        var clusterList = clusters.Values.ToArray();
        var policy = Policy.PolicyCompiler.Compile(config, routes.Select(r => r.Id).ToArray(), clusterList.Select(c => c.Id).ToArray());
        var authenticator = new Security.ApiKeyAuthenticator(config.Consumers, config.ApiKeys, config.Jwt);
        var devices = new Security.DeviceTable(config.Devices, config.Mtls);
        return new GatewaySnapshot
        {
            Config = config,
            Limits = new HttpLimits
            {
                MaxRequestLineBytes = limits.MaxRequestLineBytes,
                MaxHeaderBytes = limits.MaxHeaderBytes,
                MaxHeaderCount = limits.MaxHeaderCount,
                MaxBodyBytes = limits.MaxBodyBytes,
                EscapedSlashes = config.Http.EscapedSlashes,
                UnderscoreHeaders = config.Http.UnderscoreHeaders,
                ProtectedHeaderNames = ProtectedHeaderNames(routes, policy, authenticator, devices),
            },
            Router = new Router(entries),
            Routes = routes,
            Clusters = clusterList,
            Policy = policy,
            Authenticator = authenticator,
            Jwt = CompileJwt(config, time, jwtKeys, metrics),
            Metrics = metrics,
            Devices = devices,
            TrustedProxies = Policy.CidrSet.Build(config.TrustedProxies.Select(c => Policy.Cidr.TryParse(c, out var r, out _) ? r
                : throw new InvalidOperationException($"trustedProxies: {c} was not validated"))),
            RuleLimiters = policy.Rules.Select(rule => rule.RateLimiters.Select(id => limiters[id]).ToArray()).ToArray(),
            Version = VersionOf(text),
            LoadedAt = (time ?? TimeProvider.System).GetUtcNow(),
            HeaderTimeoutTicks = GatewaySnapshot.ToTicks(limits.HeaderTimeout),
            KeepAliveTimeoutTicks = GatewaySnapshot.ToTicks(limits.KeepAliveTimeout),
            UpstreamResponseTimeoutTicks = GatewaySnapshot.ToTicks(limits.UpstreamResponseTimeout),
            UpstreamConnectTimeout = limits.UpstreamConnectTimeout,
            DrainTimeout = limits.DrainTimeout,
            BodyIdleTimeoutTicks = GatewaySnapshot.ToTicks(limits.BodyIdleTimeout),
            MinRateGraceTicks = GatewaySnapshot.ToTicks(limits.MinRateGracePeriod),
            MinRequestBodyRate = limits.MinRequestBodyRate,
            MinResponseRate = limits.MinResponseRate,
            RequestBufferBytes = limits.RequestBufferBytes,
        };
    }

    /// <summary>
    /// The names a client may not spell with '_' (RequestCanonicalizer): the fixed forwarding and framing names, the
    /// configured identity headers, injected upstream credentials and every request header a rule sets or removes.
    /// </summary>
    private static byte[][] ProtectedHeaderNames(List<RouteModel> routes, Policy.CompiledPolicy policy,
        Security.ApiKeyAuthenticator authenticator, Security.DeviceTable devices)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Add(ReadOnlySpan<byte> name)
        {
            if (name.Contains((byte)'-')) names.Add(Encoding.ASCII.GetString(name).ToLowerInvariant());
        }
        foreach (var n in HttpLimits.DefaultProtectedHeaderNames) Add(n);
        Add(authenticator.ConsumerHeaderName);
        Add(authenticator.SubjectHeaderName);
        Add(authenticator.IssuerHeaderName);
        Add(authenticator.KeyHeaderName);
        Add(devices.HeaderName);
        foreach (var r in routes) if (r.UpstreamCredentialName is { } c) Add(c);
        foreach (var rule in policy.Rules)
        {
            foreach (var n in rule.SetRequestHeaderNames) Add(n);
            foreach (var n in rule.RemoveRequestHeaderNames) Add(n);
        }
        return names.Order(StringComparer.Ordinal).Select(Encoding.ASCII.GetBytes).ToArray();
    }

    private static Security.JwtAuthenticator CompileJwt(GatewayConfig config, TimeProvider? time, Security.JwtKeyStore? store, GatewayMetrics metrics)
    {
        if (config.JwtIssuers.Count == 0)
        {
            store?.Retain([]);
            return Security.JwtAuthenticator.Empty;
        }
        store ??= new Security.JwtKeyStore(time, metrics: metrics);
        var issuers = config.JwtIssuers.Select((c, i) => new Security.JwtIssuerModel
        {
            Index = i,
            Config = c,
            Keys = store.GetOrCreate(c, config.BaseDirectory),
            Algorithms = Security.JwtConfigBinder.EffectiveAlgorithms(c).ToArray(),
        }).ToArray();
        store.Retain(issuers.Select(i => i.Keys));
        return new Security.JwtAuthenticator(issuers, config.Jwt, config.ApiKeys.ConsumerHeader, metrics, time, config.Consumers);
    }
}
