using System.Runtime.InteropServices;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

/// <summary>
/// A Kubernetes ConfigMap volume, reproduced exactly: the config file is a symlink through "..data" to a timestamped
/// directory, and an update writes a new directory, points a new "..data_tmp" symlink at it and renames that over
/// "..data" (one atomic rename; nothing named fastgate.json is written), then removes the old directory.
/// </summary>
public class ConfigMapReloadTests
{
    [DllImport("libc", SetLastError = true)]
    private static extern int rename(string oldPath, string newPath);

    private static string Config(string upstream, string routeId) => $$"""
        {
          "listeners": [ { "name": "public", "address": "127.0.0.1:0" } ],
          "admin": { "address": "127.0.0.1:0" },
          "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream}}" } ] } ],
          "routes": [ { "id": "{{routeId}}", "match": { "pathPrefix": "/" }, "cluster": "backend" } ]
        }
        """;

    /// <summary>What the kubelet's atomic writer does for one update of the ConfigMap.</summary>
    private static void AtomicUpdate(string dir, string timestamped, string text, string? previous)
    {
        var data = Path.Combine(dir, timestamped);
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "fastgate.json"), text);
        var tmp = Path.Combine(dir, "..data_tmp");
        File.CreateSymbolicLink(tmp, timestamped); // relative, as the kubelet writes it
        Assert.True(rename(tmp, Path.Combine(dir, "..data")) == 0, $"rename failed: errno {Marshal.GetLastPInvokeError()}");
        if (previous is not null) Directory.Delete(Path.Combine(dir, previous), recursive: true);
    }

    [LinuxFact] // the kubelet's layout is Linux symlinks and rename(2)
    public async Task ConfigMapSymlinkSwap_IsSeenByTheWatcher_AndAppliedEachTime()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var address = upstream.Address.ToString().TrimEnd('/');
        var dir = Directory.CreateTempSubdirectory("fastgate-configmap-").FullName;
        AtomicUpdate(dir, "..2026_12_02_05_00_00.000000001", Config(address, "v1"), previous: null);
        File.CreateSymbolicLink(Path.Combine(dir, "fastgate.json"), "..data/fastgate.json");

        await using var gateway = await TestGateway.StartFromFileAsync(Path.Combine(dir, "fastgate.json"));
        Assert.Equal("v1", gateway.Host.Runtime.Current.Routes[0].Id);

        string previous = "..2026_12_02_05_00_00.000000001";
        for (int update = 2; update <= 3; update++)
        {
            var applied = new TaskCompletionSource<ReloadResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            void OnReload(ReloadResult r) { if (r.Success && r.Version == gateway.Host.Runtime.Current.Version) applied.TrySetResult(r); }
            string versionBefore = gateway.Host.Runtime.Current.Version;
            gateway.Host.Reloader!.Reloaded += OnReload;
            var timestamped = $"..2026_12_02_05_0{update}_00.00000000{update}";
            AtomicUpdate(dir, timestamped, Config(address, "v" + update), previous);
            previous = timestamped;
            try { await Eventually.SignalledAsync(applied.Task, $"update {update} is reloaded after the ..data swap"); }
            finally { gateway.Host.Reloader!.Reloaded -= OnReload; }
            Assert.NotEqual(versionBefore, gateway.Host.Runtime.Current.Version);
            Assert.Equal("v" + update, gateway.Host.Runtime.Current.Routes[0].Id);
        }
    }
}
