using FastGate.LoadTest.Client;
using FastGate.LoadTest.Load;

namespace FastGate.LoadTest.Scenarios;

/// <summary>How hard and how long the built-in scenarios push (from the command line).</summary>
public sealed record LoadProfile
{
    public double Rate { get; init; } = 1000;
    /// <summary>When set, the arrival rate ramps from this to <see cref="Rate"/> over the duration.</summary>
    public double? RampFrom { get; init; }
    /// <summary>When set, a closed model with this many users replaces the arrival rate.</summary>
    public int? Users { get; init; }
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(2);

    public LoadPhase[] Phases()
    {
        var phases = new List<LoadPhase>();
        if (Warmup > TimeSpan.Zero)
        {
            phases.Add(Users is int u
                ? new FixedConcurrency(u, Warmup) { Warmup = true }
                : new ConstantRate(RampFrom ?? Rate, Warmup) { Warmup = true });
        }
        if (Users is int users) phases.Add(new FixedConcurrency(users, Duration));
        else if (RampFrom is double from) phases.Add(new RampingRate(from, Rate, Duration));
        else phases.Add(new ConstantRate(Rate, Duration));
        return [.. phases];
    }
}

/// <summary>The scenarios <c>--scenario</c> can name. Each is only a request factory and thresholds: it sends
/// traffic to <c>--target</c> and starts nothing (perf/load.sh starts the gateway and upstream).</summary>
public static class BuiltInScenarios
{
    public sealed record Entry(string Name, string Description, Func<LoadProfile, ScenarioOptions, Scenario> Build);

    public static IReadOnlyList<Entry> All { get; } =
    [
        new("proxy", "GET <path> through a plain route; expects 200", Proxy),
        new("auth-apikey", "GET <path> with X-API-Key (per-user keys from --api-keys); expects 200 and no 429", AuthApiKey),
        new("rate-limited", "one consumer at about twice its limit; expects 200 or 429 (429s with Retry-After/RateLimit headers), about half 429", RateLimited),
        new("jwt", "GET <path> with Authorization: Bearer <--bearer-token, or one minted with --jwt-secret>; expects 200", Jwt),
        new("mixed", "authenticated reads and JSON writes, some 404s, some bad keys, some rate limited", Mixed),
        new("hostile", "proxy traffic (measured) while a second client sends malformed requests, slowloris connections and unknown API keys", Hostile),
        new("reload", "constant load while --policy-file is rewritten every second; zero errors", Reload),
    ];

    public static Entry? Find(string name) => All.FirstOrDefault(e => e.Name.Equals(name, StringComparison.OrdinalIgnoreCase));

    public static Scenario Proxy(LoadProfile load, ScenarioOptions o) => Scenario.Create("proxy")
        .WithDescription("plain GET through a route")
        .WithRequests(_ => [RequestSpec.Get(o.Path)])
        .WithLoad(load.Phases())
        .WithThresholds("errors<0.1%");

    public static Scenario AuthApiKey(LoadProfile load, ScenarioOptions o) => Scenario.Create("auth-apikey")
        .WithDescription("API-key route, limit high enough never to reject")
        .WithRequests(vu => [RequestSpec.Get(o.Path, ("X-API-Key", o.KeyFor(vu.Index)))])
        .WithLoad(load.Phases())
        .WithThresholds("errors<0.1%", "status429==0");

    public static Scenario RateLimited(LoadProfile load, ScenarioOptions o) => Scenario.Create("rate-limited")
        .WithDescription("one consumer at 2x its limit")
        .WithRequests(_ => [RequestSpec.Get(o.Path, ("X-API-Key", o.ApiKey)) with { Expect = new ExpectedStatus(200, 429) { RequireRateLimitHeadersOn429 = true } }])
        .WithLoad(load.Phases())
        .WithThresholds("errors<0.1%", "status429 between 0.4 and 0.6");

    public static Scenario Jwt(LoadProfile load, ScenarioOptions o)
    {
        string authorization = "Bearer " + o.Token(); // one token for the run: the gateway's cache-hit path
        return Scenario.Create("jwt")
            .WithDescription("bearer tokens")
            .WithRequests(_ => [RequestSpec.Get(o.Path, ("Authorization", authorization))])
            .WithLoad(load.Phases())
            .WithThresholds("errors<0.1%");
    }

    public static Scenario Mixed(LoadProfile load, ScenarioOptions o) => Scenario.Create("mixed")
        .WithDescription("authenticated reads and writes, some 4xx, some rate limited")
        .WithRequests(vu =>
        {
            string key = o.KeyFor(vu.Index);
            string item = $"{{\"user\":{vu.Index},\"name\":\"item-{vu.Index}\",\"tags\":[\"load\",\"test\"],\"qty\":3}}";
            var readOk = new ExpectedStatus(200, 429);
            return
            [
                RequestSpec.Get(Join(o.Path, "items"), ("X-API-Key", key)) with { Weight = 6, Expect = readOk, Name = "read" },
                RequestSpec.Post(Join(o.Path, "items"), item, "application/json", ("X-API-Key", key)) with { Weight = 2, Expect = new ExpectedStatus(200, 201, 204, 429), Name = "write" },
                RequestSpec.Get(Join(o.Path, "no-such-thing"), ("X-API-Key", key)) with { Weight = 1, Expect = new ExpectedStatus(404), Name = "not found" },
                RequestSpec.Get(Join(o.Path, "items"), ("X-API-Key", "wrong-" + vu.Index)) with { Weight = 1, Expect = new ExpectedStatus(401, 403), Name = "bad key" },
            ];
        })
        .WithLoad(load.Phases())
        .WithThresholds("errors<0.5%");

    public static Scenario Hostile(LoadProfile load, ScenarioOptions o) => Scenario.Create("hostile")
        .WithDescription("proxy traffic beside malformed requests, slowloris and unknown keys")
        .WithRequests(_ => [RequestSpec.Get(o.Path)])
        .WithLoad(load.Phases())
        .WithThresholds("errors<0.1%")
        .WithSideActivities(new HostileClient());

    public static Scenario Reload(LoadProfile load, ScenarioOptions o)
    {
        var s = Scenario.Create("reload")
            .WithDescription("constant load while the policy file is rewritten")
            .WithRequests(_ => [RequestSpec.Get(o.Path)])
            .WithLoad(load.Phases())
            .WithThresholds("errors==0");
        return o.PolicyFile is null ? s : s.WithSideActivities(new PolicyRewriter());
    }

    private static string Join(string basePath, string leaf) => basePath.EndsWith('/') ? basePath + leaf : basePath + "/" + leaf;
}
