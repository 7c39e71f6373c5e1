using System.Diagnostics;
using System.Net;
using System.Net.Http;
using System.Text.Json;
using FastGate.Tests.Infrastructure;
using Xunit.Abstractions;

namespace FastGate.Tests.Cluster;

/// <summary>
/// Cluster mode end to end: three `fastgate` processes (plus extra ones where a test needs to kill one or run another
/// config) on one real redis-server, load sent to all three at once. Counts are read from each gateway's own metrics.
/// The tests of this class share the processes and run one after the other; each uses limits of its own.
/// </summary>
[Collection("cluster-processes")]
public class ClusterModeTests(ClusterHarness cluster, ITestOutputHelper output) : IClassFixture<ClusterHarness>
{
    private FastgateProcess[] G => cluster.Gateways;

    private static async Task<double[]> AllowedAsync(FastgateProcess[] gateways, string limiter)
    {
        var values = new double[gateways.Length];
        for (int i = 0; i < gateways.Length; i++)
            values[i] = await ClusterHarness.SampleAsync(gateways[i], "fastgate_ratelimit_decisions_total", $"limiter=\"{limiter}\",result=\"allowed\"");
        return values;
    }

    /// <summary>Sends <paramref name="loopsPerGateway"/> concurrent request loops to each gateway; counts 200s per gateway.</summary>
    private async Task<(int[] Ok, int[] Refused, double Seconds)> LoadAsync(string path, int loopsPerGateway, Func<int, bool> keepGoing, bool stopOnRefusal)
    {
        var ok = new int[G.Length];
        var refused = new int[G.Length];
        var clients = G.Select(ClusterHarness.Client).ToArray();
        var sw = Stopwatch.StartNew();
        var loops = new List<Task>();
        for (int g = 0; g < G.Length; g++)
        {
            for (int l = 0; l < loopsPerGateway; l++)
            {
                int gi = g;
                loops.Add(Task.Run(async () =>
                {
                    while (keepGoing(gi))
                    {
                        using var r = await clients[gi].GetAsync(path);
                        if (r.StatusCode == HttpStatusCode.OK) Interlocked.Increment(ref ok[gi]);
                        else
                        {
                            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
                            Interlocked.Increment(ref refused[gi]);
                            if (stopOnRefusal) return;
                        }
                    }
                }));
            }
        }
        await Task.WhenAll(loops);
        double seconds = sw.Elapsed.TotalSeconds;
        foreach (var c in clients) c.Dispose();
        return (ok, refused, seconds);
    }

    [Fact]
    public async Task SharedGcraLimit_ThreeGatewaysUnderLoad_AdmitBetween90And105PercentOfTheLimit()
    {
        var before = await AllowedAsync(G, "gcra");
        var deadline = Stopwatch.StartNew();
        var (ok, refused, seconds) = await LoadAsync("/gcra", 4, _ => deadline.Elapsed < TimeSpan.FromSeconds(4), stopOnRefusal: false);
        var after = await AllowedAsync(G, "gcra");

        int admitted = ok.Sum();
        for (int i = 0; i < G.Length; i++) Assert.Equal(ok[i], (int)(after[i] - before[i])); // each gateway counted what it admitted
        double limit = ClusterHarness.GcraBurst + ClusterHarness.GcraRate * seconds;
        var calls = await StoreCallsAsync(G, "gcra");
        output.WriteLine($"gcra: admitted {admitted} ({string.Join(" + ", ok)}), refused {refused.Sum()}, {seconds:0.00} s, limit {limit:0.0}: {admitted / limit:P1}; {calls.Sum()} store calls ({calls.Sum() / (admitted + refused.Sum()):0.000} per request)");
        Assert.True(refused.Sum() > admitted, "the load must exceed the limit");
        Assert.InRange(admitted, 0.9 * limit, 1.05 * limit);
        Assert.All(ok, n => Assert.True(n > 0)); // every gateway admitted a share
    }

    private static async Task<double[]> StoreCallsAsync(FastgateProcess[] gateways, string limiter)
    {
        var values = new double[gateways.Length];
        for (int i = 0; i < gateways.Length; i++)
            values[i] = await ClusterHarness.SampleAsync(gateways[i], "fastgate_ratelimit_store_calls", $"limiter=\"{limiter}\"");
        return values;
    }

    [Fact]
    public async Task UnderTheLimit_TheLocalAllowanceKeepsRedisOffThePath_StoreCallsPerAdmittedRequest()
    {
        // 1,000/s, burst 1,000, the default allowance of 1 % (batch 10): 900 requests never reach the limit; each
        // gateway asks Redis about once per half batch (a background refill), not once per request
        int sent = 0;
        var (ok, refused, _) = await LoadAsync("/bulk", 2, _ => Interlocked.Increment(ref sent) <= 900, stopOnRefusal: false);
        var calls = await StoreCallsAsync(G, "bulk");
        double perRequest = calls.Sum() / ok.Sum();
        output.WriteLine($"bulk: {ok.Sum()} admitted, {refused.Sum()} refused, {calls.Sum()} store calls ({string.Join(" + ", calls)}): {perRequest:0.000} per admitted request");
        Assert.Equal(900, ok.Sum());
        Assert.Equal(0, refused.Sum());
        Assert.InRange(perRequest, 0.05, 0.25); // batch 10, refilled at 5 left: ~0.1-0.2
    }

    [Fact]
    public async Task SharedTokenQuota_ThreeGateways_SpendTheSharedBudgetOnce()
    {
        // 3,000 tokens an hour (no refill within the test), each response costs 10: 300 requests in the whole cluster
        var (ok, refused, _) = await LoadAsync("/tokens", 2, _ => true, stopOnRefusal: true);
        long tokens = ok.Sum() * (long)ClusterUpstream.TokensPerResponse;
        var calls = await StoreCallsAsync(G, "tokens");
        output.WriteLine($"tokens: {calls.Sum()} store calls; {ok.Sum()} requests admitted ({string.Join(" + ", ok)}), {tokens} tokens of {ClusterHarness.TokenBurst}: {(double)tokens / ClusterHarness.TokenBurst:P1}");
        Assert.InRange(tokens, 0.9 * ClusterHarness.TokenBurst, 1.05 * ClusterHarness.TokenBurst);
        Assert.Equal(6, refused.Sum());
        // spent everywhere: a fresh request to each gateway is refused
        foreach (var g in G)
        {
            using var http = ClusterHarness.Client(g);
            using var r = await http.GetAsync("/tokens");
            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
        }
    }

    [Fact]
    public async Task SharedConcurrencyLimit_ExactlySixInFlight_AKilledGatewaysSlotsComeBackAfterTheLeaseTtl()
    {
        var d = await cluster.StartExtraAsync("d.json");
        var all = G.Append(d).ToArray();
        var clients = all.Select(ClusterHarness.Client).ToArray();
        int heldBefore = cluster.Upstream.Held;
        var held = new List<Task<HttpResponseMessage>>();
        try
        {
            // D takes 2 slots, A 2, B 1, C 1: six of six
            foreach (int gi in new[] { 3, 3, 0, 0, 1, 2 })
            {
                var request = clients[gi].GetAsync("/held");
                held.Add(request);
                await HeldOrAnsweredAsync(request, heldBefore + held.Count);
            }
            // the seventh is refused on every gateway
            for (int gi = 0; gi < 3; gi++)
            {
                using var r = await clients[gi].GetAsync("/slot");
                Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
            }
            Assert.Equal(heldBefore + 6, cluster.Upstream.Held);

            // D dies holding two slots: they come back once its lease expires
            var killed = Stopwatch.StartNew();
            await d.DisposeAsync();
            await Eventually.WaitUntilAsync(async () =>
            {
                using var r = await clients[1].GetAsync("/slot");
                return r.StatusCode == HttpStatusCode.OK;
            }, "a slot of the killed gateway came back", TimeSpan.FromSeconds(15));
            output.WriteLine($"concurrency: the killed gateway's slots came back {killed.Elapsed.TotalMilliseconds:0} ms after the kill (lease TTL {ClusterHarness.LeaseTtl.TotalMilliseconds} ms)");
            Assert.True(killed.Elapsed >= ClusterHarness.LeaseTtl * 0.5, "slots came back before the lease could have expired");

            // exactly two free again: two more are held, the next is refused
            held.Add(clients[0].GetAsync("/held"));
            await HeldOrAnsweredAsync(held[^1], heldBefore + 7);
            held.Add(clients[2].GetAsync("/held"));
            await HeldOrAnsweredAsync(held[^1], heldBefore + 8);
            using (var r = await clients[1].GetAsync("/slot")) Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
        }
        finally
        {
            cluster.Upstream.Release();
        }
        foreach (var t in held.Skip(2)) // D's two died with it
            using (var r = await t) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        // all released: a slot is free again on every gateway
        for (int gi = 0; gi < 3; gi++)
        {
            int i = gi;
            await Eventually.WaitUntilAsync(async () =>
            {
                using var r = await clients[i].GetAsync("/slot");
                return r.StatusCode == HttpStatusCode.OK;
            }, "released slots are free again");
        }
        foreach (var c in clients) c.Dispose();
    }

    /// <summary>Waits until the upstream holds <paramref name="count"/> requests; fails at once if the request was answered instead.</summary>
    private async Task HeldOrAnsweredAsync(Task<HttpResponseMessage> request, int count)
    {
        var held = cluster.Upstream.WaitForHeldAsync(count);
        if (await Task.WhenAny(held, request) == request)
        {
            using var r = await request;
            Assert.Fail($"a request to be held was answered {(int)r.StatusCode}: {await r.Content.ReadAsStringAsync()}");
        }
        await held;
    }

    private static async Task<double> BlockEventsAsync(FastgateProcess g, string kind) =>
        await ClusterHarness.SampleAsync(g, "fastgate_cluster_block_events_total", $"direction=\"received\",kind=\"{kind}\"");

    private static async Task<HttpStatusCode> GetStatusAsync(FastgateProcess g, string path)
    {
        using var http = ClusterHarness.Client(g);
        using var r = await http.GetAsync(path);
        return r.StatusCode;
    }

    [Fact]
    public async Task ABlockMadeOnOneGateway_IsEnforcedOnTheOthers_AndOneDeleteLiftsItEverywhere()
    {
        var blocksBefore = new[] { await BlockEventsAsync(G[1], "block"), await BlockEventsAsync(G[2], "block") };
        var sw = Stopwatch.StartNew();
        using (var r = await ClusterHarness.AdminAsync(G[0], HttpMethod.Post, "/admin/blocks", """{ "identity": "127.0.0.1", "ttl": "1m", "reason": "test" }"""))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        await Eventually.WaitUntilAsync(async () => await BlockEventsAsync(G[1], "block") == blocksBefore[0] + 1 && await BlockEventsAsync(G[2], "block") == blocksBefore[1] + 1,
            "B and C received the block");
        output.WriteLine($"block: made on A, applied on B and C after {sw.Elapsed.TotalMilliseconds:0} ms");
        foreach (var g in G) Assert.Equal(HttpStatusCode.Forbidden, await GetStatusAsync(g, "/open"));
        var listed = await ClusterHarness.AdminJsonAsync(G[2], "/admin/blocks");
        Assert.Equal("127.0.0.1", listed.GetProperty("blocks")[0].GetProperty("identity").GetString());

        // lifted on B (not where it was made): lifted on A and C too
        var unblocksBefore = new[] { await BlockEventsAsync(G[0], "unblock"), await BlockEventsAsync(G[2], "unblock") };
        using (var r = await ClusterHarness.AdminAsync(G[1], HttpMethod.Delete, "/admin/blocks"))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        await Eventually.WaitUntilAsync(async () => await BlockEventsAsync(G[0], "unblock") == unblocksBefore[0] + 1 && await BlockEventsAsync(G[2], "unblock") == unblocksBefore[1] + 1,
            "A and C received the unblock");
        foreach (var g in G) Assert.Equal(HttpStatusCode.OK, await GetStatusAsync(g, "/open"));
    }

    private static async Task<JsonElement> ClusterViewAsync(FastgateProcess g) => await ClusterHarness.AdminJsonAsync(g, "/admin/cluster");

    private static async Task<bool> AlertActiveAsync(FastgateProcess g, string rule)
    {
        var alerts = await ClusterHarness.AdminJsonAsync(g, "/admin/alerts");
        return alerts.GetProperty("active").EnumerateArray().Any(a => a.GetProperty("rule").GetString() == rule);
    }

    [Fact]
    public async Task AdminCluster_ListsTheThreeWithOneVersion_ADifferingMemberRaisesTheAlertAfterTheGracePeriod()
    {
        // (a member killed by another test drops out after memberTimeout)
        await Eventually.WaitUntilAsync(async () => (await ClusterViewAsync(G[0])).GetProperty("members").GetArrayLength() == 3, "A lists three members");
        var ids = new HashSet<string>();
        foreach (var g in G)
        {
            var view = await ClusterViewAsync(g);
            var members = view.GetProperty("members").EnumerateArray().ToList();
            Assert.Equal(3, members.Count);
            Assert.Equal(1, view.GetProperty("versions").GetInt32());
            Assert.Single(members.Select(m => m.GetProperty("version").GetString()).Distinct());
            Assert.Single(members, m => m.GetProperty("self").GetBoolean());
            Assert.All(members, m =>
            {
                Assert.Equal("ok", m.GetProperty("health").GetString());
                Assert.True(m.GetProperty("uptimeSeconds").GetDouble() >= 0);
                Assert.True(m.GetProperty("secondsSinceHeartbeat").GetDouble() < 2);
            });
            foreach (var m in members) ids.Add(m.GetProperty("id").GetString()!);
        }
        Assert.Equal(3, ids.Count); // the same three everywhere
        Assert.False(await AlertActiveAsync(G[0], "versions"));

        // a fourth member with another config: the version differs; the alert fires once the 1 s grace has passed
        var other = ClusterHarness.Config(cluster.Upstream.Address, cluster.Redis.Configuration,
            """ { "id": "only-on-e", "match": { "pathPrefix": "/e" }, "cluster": "backend" },""");
        var e = await cluster.StartExtraAsync("e.json", other);
        var sw = Stopwatch.StartNew();
        await Eventually.WaitUntilAsync(async () => (await ClusterViewAsync(G[0])).GetProperty("versions").GetInt32() == 2, "A sees two versions");
        Assert.False(await AlertActiveAsync(G[0], "versions")); // within the grace period
        await Eventually.WaitUntilAsync(() => AlertActiveAsync(G[0], "versions"), "the version alert fires on A");
        output.WriteLine($"versions: alert fired {sw.Elapsed.TotalMilliseconds:0} ms after A saw the second version (grace 1 s)");
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(0.9), "fired before the grace period ended");

        // it goes away: the versions agree again after memberTimeout, and the alert resolves
        await e.DisposeAsync();
        await Eventually.WaitUntilAsync(async () => (await ClusterViewAsync(G[0])).GetProperty("versions").GetInt32() == 1, "A sees one version again");
        await Eventually.WaitUntilAsync(async () => !await AlertActiveAsync(G[0], "versions"), "the version alert resolves");
    }

    private static int Count(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    [Fact]
    public async Task RedisKilledAndRestarted_EachFailureModeAsConfigured_OneLogLineEachWay_TheGatewaysReconnectAndReconcile()
    {
        var logOffsets = G.Select(g => g.Output.Length).ToArray();
        var downBefore = new double[3];
        var upBefore = new double[3];
        for (int i = 0; i < 3; i++)
        {
            downBefore[i] = await ClusterHarness.SampleAsync(G[i], "fastgate_cluster_store_transitions_total", "state=\"down\"");
            upBefore[i] = await ClusterHarness.SampleAsync(G[i], "fastgate_cluster_store_transitions_total", "state=\"up\"");
        }
        cluster.Redis.Kill();
        for (int i = 0; i < 3; i++)
        {
            var g = G[i];
            await Eventually.WaitUntilAsync(async () => await ClusterHarness.SampleAsync(g, "fastgate_cluster_store_up") == 0, $"gateway {i} sees the store down");
        }
        for (int i = 0; i < 3; i++)
        {
            // deny: 503; allow: every request admitted (more than the burst); local: the burst per gateway, then 429
            Assert.Equal(HttpStatusCode.ServiceUnavailable, await GetStatusAsync(G[i], "/f-deny"));
            for (int n = 0; n < ClusterHarness.FailureBurst * 2; n++) Assert.Equal(HttpStatusCode.OK, await GetStatusAsync(G[i], "/f-allow"));
            for (int n = 0; n < ClusterHarness.FailureBurst; n++) Assert.Equal(HttpStatusCode.OK, await GetStatusAsync(G[i], "/f-local"));
            Assert.Equal(HttpStatusCode.TooManyRequests, await GetStatusAsync(G[i], "/f-local"));
        }
        // a block made while the store is down reaches the others once it is back (replayed, then reconciled)
        using (var r = await ClusterHarness.AdminAsync(G[0], HttpMethod.Post, "/admin/blocks", """{ "identity": "192.0.2.99", "ttl": "1m" }"""))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        await Eventually.WaitUntilAsync(() => AlertActiveAsync(G[1], "store"), "the store-down alert fires");

        cluster.Redis.Start();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 3; i++)
        {
            var g = G[i];
            await Eventually.WaitUntilAsync(async () => await GetStatusAsync(g, "/f-deny") == HttpStatusCode.OK, $"gateway {i} decides through the store again");
        }
        output.WriteLine($"outage: all three decided through Redis again {sw.Elapsed.TotalMilliseconds:0} ms after it restarted");
        for (int i = 1; i < 3; i++)
        {
            var g = G[i];
            await Eventually.WaitUntilAsync(async () =>
                (await ClusterHarness.AdminJsonAsync(g, "/admin/blocks")).GetProperty("blocks").EnumerateArray().Any(b => b.GetProperty("identity").GetString() == "192.0.2.99"),
                $"gateway {i} has the block made during the outage");
        }
        await Eventually.WaitUntilAsync(async () => !await AlertActiveAsync(G[1], "store"), "the store-down alert resolves");

        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(downBefore[i] + 1, await ClusterHarness.SampleAsync(G[i], "fastgate_cluster_store_transitions_total", "state=\"down\""));
            Assert.Equal(upBefore[i] + 1, await ClusterHarness.SampleAsync(G[i], "fastgate_cluster_store_transitions_total", "state=\"up\""));
            string log = G[i].Output[logOffsets[i]..];
            Assert.Equal(1, Count(log, "unavailable ("));      // the outage warning
            Assert.Equal(1, Count(log, "available again"));    // and the recovery line
        }
        using (var r = await ClusterHarness.AdminAsync(G[2], HttpMethod.Delete, "/admin/blocks/192.0.2.99")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }
}

[CollectionDefinition("cluster-processes")]
public class ClusterProcessesCollection;
