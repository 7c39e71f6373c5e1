using FastGate.LoadTest.Client;
using FastGate.LoadTest.Load;
using FastGate.LoadTest.Thresholds;

namespace FastGate.LoadTest.Scenarios;

/// <summary>What a request factory knows about the virtual user it builds requests for.</summary>
public sealed record VirtualUserContext(int Index, ScenarioOptions Options);

/// <summary>Values from the command line that scenarios may use (API keys, tokens, paths).</summary>
public sealed record ScenarioOptions
{
    public string Path { get; init; } = "/";
    public string ApiKey { get; init; } = "load-test-key";
    /// <summary>Extra keys, one per virtual user in turn (per-virtual-user data); empty = everyone uses <see cref="ApiKey"/>.</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];
    public string? BearerToken { get; init; }
    /// <summary>With no <see cref="BearerToken"/>: the HS256 secret of the gateway's issuer; the harness mints its own token.</summary>
    public string? JwtSecret { get; init; }
    public string JwtIssuer { get; init; } = "https://load.fastgate.local";
    public string JwtAudience { get; init; } = "fastgate-load";
    public string JwtSubject { get; init; } = "load-user";
    /// <summary>Policy file the <c>reload</c> scenario rewrites every second (nothing when unset).</summary>
    public string? PolicyFile { get; init; }
    public TimeSpan ReloadInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Rate of the hostile client's bad requests per second.</summary>
    public double HostileRate { get; init; } = 50;
    public int SlowlorisConnections { get; init; } = 20;

    public string KeyFor(int vu) => ApiKeys.Count == 0 ? ApiKey : ApiKeys[vu % ApiKeys.Count];

    /// <summary>--bearer-token, else a token minted with --jwt-secret (valid for a day), else a placeholder the gateway refuses.</summary>
    public string Token() => BearerToken ?? (JwtSecret is { Length: > 0 } secret
        ? JwtMinter.Hs256(secret, JwtIssuer, JwtAudience, JwtSubject, TimeSpan.FromDays(1))
        : "missing-token");
}

/// <summary>Traffic or actions that run beside the measured load (hostile clients, config rewrites).</summary>
public interface ISideActivity
{
    string Name { get; }
    Task RunAsync(SideContext context, CancellationToken ct);
}

/// <summary>What a side activity gets: where to send, what to count.</summary>
public sealed class SideContext(System.Net.EndPoint endpoint, string host, ScenarioOptions options)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _counters = new();

    public System.Net.EndPoint Endpoint { get; } = endpoint;
    public string Host { get; } = host;
    public ScenarioOptions Options { get; } = options;

    public void Count(string name, long by = 1) => _counters.AddOrUpdate(name, by, (_, v) => v + by);

    public IReadOnlyDictionary<string, long> Counters => new SortedDictionary<string, long>(_counters);
}

/// <summary>
/// A load scenario: a name, what each virtual user sends (with the statuses it expects), the load
/// simulation (phases run in order), thresholds and side activities.
/// </summary>
public sealed class Scenario
{
    private Scenario(string name) => Name = name;

    public string Name { get; }
    public string Description { get; private set; } = "";
    public Func<VirtualUserContext, IReadOnlyList<RequestSpec>> Requests { get; private set; } = _ => [RequestSpec.Get("/")];
    public IReadOnlyList<LoadPhase> Load { get; private set; } = [];
    public IReadOnlyList<Threshold> Thresholds { get; private set; } = [];
    public IReadOnlyList<ISideActivity> SideActivities { get; private set; } = [];

    public static Scenario Create(string name) => new(name);

    public Scenario WithDescription(string text) { Description = text; return this; }

    /// <summary>The request factory, called once per virtual user before the run.</summary>
    public Scenario WithRequests(Func<VirtualUserContext, IReadOnlyList<RequestSpec>> factory) { Requests = factory; return this; }

    public Scenario WithLoad(params LoadPhase[] phases) { Load = phases; return this; }

    public Scenario WithThresholds(params string[] rules) { Thresholds = [.. Thresholds, .. rules.Select(Threshold.Parse)]; return this; }

    public Scenario WithSideActivities(params ISideActivity[] activities) { SideActivities = [.. SideActivities, .. activities]; return this; }
}
