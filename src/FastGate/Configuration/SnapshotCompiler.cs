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
    public static GatewaySnapshot Compile(GatewayConfig config, string text, UpstreamPoolStore pools, TimeProvider? time = null,
        RateLimiting.RateLimiterStore? limiterStore = null, Security.JwtKeyStore? jwtKeys = null)
    {
        // Limiters: the store returns the existing limiter for an unchanged definition, so its state survives.
        var limiters = new Dictionary<string, RateLimiting.CompiledLimiter>(StringComparer.Ordinal);
        if (limiterStore is not null)
        {
            foreach (var l in config.RateLimits)
                limiters[l.Id] = new RateLimiting.CompiledLimiter(limiterStore.GetOrCreate(l.Definition!), l.Key) { CountsTokens = l.CountsTokens };
            limiterStore.Retain(config.RateLimits.Select(l => l.Definition!));
        }
        else if (config.RateLimits.Count > 0)
        {
            throw new InvalidOperationException("rate limits are configured but no limiter store was given");
        }
        var limits = config.Limits;
        var clusters = new Dictionary<string, ClusterModel>(StringComparer.Ordinal);
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
                return new DestinationModel(d.Address, uri.Authority, pool);
            }).ToArray();
            clusters[c.Id] = new ClusterModel(c.Id, destinations);
        }

        var issuerIds = config.JwtIssuers.Select(i => i.Id).ToArray();
        var cors = config.Cors.ToDictionary(c => c.Id, c => new Security.CorsModel(c), StringComparer.Ordinal);
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
                Metrics = new RouteMetrics(r.Id),
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
            };
            routes.Add(model);
            var m = r.Match;
            (PathMatchKind kind, string path) = m.Path is not null ? (PathMatchKind.Exact, m.Path)
                : m.PathPrefix is not null && m.PathPrefix != "/" ? (PathMatchKind.Prefix, m.PathPrefix)
                : (PathMatchKind.Any, "");
            uint mask = 0;
            var other = new List<byte[]>();
            foreach (var method in m.Methods)
            {
                var bytes = Encoding.ASCII.GetBytes(method);
                var known = HttpRequestParser.ClassifyMethod(bytes);
                if (known == Http.HttpMethod.Other) other.Add(bytes);
                else mask |= 1u << (int)known;
            }
            var hosts = m.Hosts.Count == 0 ? ["*"] : m.Hosts;
            foreach (var host in hosts)
            {
                (HostMatchKind hk, string h) = host == "*" ? (HostMatchKind.Any, "")
                    : host.StartsWith("*.", StringComparison.Ordinal) ? (HostMatchKind.Suffix, host[1..].ToLowerInvariant())
                    : (HostMatchKind.Exact, host.ToLowerInvariant());
                entries.Add(new RouteEntry
                {
                    Route = model,
                    HostKind = hk,
                    Host = Encoding.ASCII.GetBytes(h),
                    PathKind = kind,
                    Path = Encoding.ASCII.GetBytes(path),
                    MethodMask = mask,
                    OtherMethods = other.ToArray(),
                });
            }
        }

        var clusterList = clusters.Values.ToArray();
        var policy = Policy.PolicyCompiler.Compile(config, routes.Select(r => r.Id).ToArray(), clusterList.Select(c => c.Id).ToArray());
        return new GatewaySnapshot
        {
            Config = config,
            Limits = new HttpLimits
            {
                MaxRequestLineBytes = limits.MaxRequestLineBytes,
                MaxHeaderBytes = limits.MaxHeaderBytes,
                MaxHeaderCount = limits.MaxHeaderCount,
                MaxBodyBytes = limits.MaxBodyBytes,
            },
            Router = new Router(entries),
            Routes = routes,
            Clusters = clusterList,
            Policy = policy,
            Authenticator = new Security.ApiKeyAuthenticator(config.Consumers, config.ApiKeys),
            Jwt = CompileJwt(config, time, jwtKeys),
            Devices = new Security.DeviceTable(config.Devices, config.Mtls),
            TrustedProxies = Policy.CidrSet.Build(config.TrustedProxies.Select(c => Policy.Cidr.TryParse(c, out var r, out _) ? r
                : throw new InvalidOperationException($"trustedProxies: {c} was not validated"))),
            RuleLimiters = policy.Rules.Select(rule => rule.RateLimiters.Select(id => limiters[id]).ToArray()).ToArray(),
            Version = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..12],
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

    private static Security.JwtAuthenticator CompileJwt(GatewayConfig config, TimeProvider? time, Security.JwtKeyStore? store)
    {
        if (config.JwtIssuers.Count == 0)
        {
            store?.Retain([]);
            return Security.JwtAuthenticator.Empty;
        }
        store ??= new Security.JwtKeyStore(time);
        var issuers = config.JwtIssuers.Select((c, i) => new Security.JwtIssuerModel
        {
            Index = i,
            Config = c,
            Keys = store.GetOrCreate(c, config.BaseDirectory),
            Algorithms = Security.JwtConfigBinder.EffectiveAlgorithms(c).ToArray(),
        }).ToArray();
        store.Retain(issuers.Select(i => i.Keys));
        return new Security.JwtAuthenticator(issuers, config.Jwt, config.ApiKeys.ConsumerHeader, time);
    }
}
