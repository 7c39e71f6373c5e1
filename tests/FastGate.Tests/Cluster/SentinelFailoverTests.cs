using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using FastGate.Tests.Infrastructure;
using Xunit.Abstractions;

namespace FastGate.Tests.Cluster;

/// <summary>A redis-server (or `redis-server --sentinel`) process with the given arguments, ready once it logs <c>readyLine</c>.</summary>
internal sealed class RedisNode : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private RedisNode(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }
    public string Output { get { lock (_output) return _output.ToString(); } }

    public static RedisNode Start(string what, string readyLine, Func<int, string[]> args) => Ports.StartOnFreePort(port =>
    {
        var psi = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args(port)) psi.ArgumentList.Add(a);
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var node = new RedisNode(process, port);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (node._output) node._output.AppendLine(e.Data);
            if (e.Data.Contains(readyLine, StringComparison.Ordinal)) ready.TrySetResult();
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (node._output) node._output.AppendLine(e.Data); };
        process.Exited += (_, _) => ready.TrySetException(new InvalidOperationException("exited"));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try { ready.Task.Wait(TimeSpan.FromSeconds(15)); } catch (AggregateException) { }
        if (ready.Task.IsCompletedSuccessfully) return node;
        node.Dispose();
        return null;
    }, what);

    /// <summary>Sends one inline command and returns the raw reply.</summary>
    public string Command(string command)
    {
        using var c = new TcpClient();
        c.Connect(IPAddress.Loopback, Port);
        var s = c.GetStream();
        s.ReadTimeout = 5000;
        s.Write(Encoding.ASCII.GetBytes(command + "\r\n"));
        var buf = new byte[8192];
        int n = s.Read(buf);
        return Encoding.ASCII.GetString(buf, 0, n);
    }

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.WaitForExit();
        _process.Dispose();
    }
}

/// <summary>
/// A gateway connected through Sentinel (`redis-server --sentinel`, one primary, one replica): the primary is killed,
/// Sentinel promotes the replica, and the gateway follows it without a restart.
/// </summary>
public class SentinelFailoverTests(ITestOutputHelper output)
{
    private static readonly string[] s_plain = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"];

    /// <summary>A listener on the killed primary's port (once the OS has let it go), or null when it cannot be had.</summary>
    private static System.Net.Sockets.TcpListener? HoldPort(int port)
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, port);
            try
            {
                listener.Start();
                return listener;
            }
            catch (System.Net.Sockets.SocketException)
            {
                listener.Dispose();
                Thread.Yield();
            }
        }
        return null;
    }

    [Fact]
    public async Task PrimaryKilled_SentinelPromotesTheReplica_TheGatewayFollowsWithoutARestart()
    {
        using var primary = RedisNode.Start("redis primary", "Ready to accept connections", p => ["--port", p.ToString(), .. s_plain]);
        using var replica = RedisNode.Start("redis replica", "Ready to accept connections",
            p => ["--port", p.ToString(), "--replicaof", "127.0.0.1", primary.Port.ToString(), .. s_plain]);
        await Eventually.WaitUntilAsync(() => primary.Command("INFO replication").Contains("connected_slaves:1"), "the replica is attached");
        var dir = Directory.CreateTempSubdirectory("fastgate-sentinel-");
        using var sentinel = RedisNode.Start("redis sentinel", "+monitor master", p =>
        {
            var conf = Path.Combine(dir.FullName, $"sentinel-{p}.conf");
            File.WriteAllText(conf, $"""
                port {p}
                bind 127.0.0.1
                protected-mode no
                sentinel monitor mymaster 127.0.0.1 {primary.Port} 1
                sentinel down-after-milliseconds mymaster 1500
                sentinel failover-timeout mymaster 3000
                """);
            return [conf, "--sentinel"];
        });
        await Eventually.WaitUntilAsync(() => sentinel.Command("SENTINEL replicas mymaster").Contains(replica.Port.ToString()), "Sentinel knows the replica");

        await using var upstream = await ClusterUpstream.StartAsync();
        var config = $$"""
            {
              "listeners": [ { "address": "127.0.0.1:0" } ],
              "admin": { "address": "127.0.0.1:0" },
              "redis": { "connection": "127.0.0.1:{{sentinel.Port}},serviceName=mymaster", "heartbeat": "200ms", "memberTimeout": "2s" },
              "rateLimits": [ { "id": "shared", "rate": 1, "per": "1h", "burst": 1000, "key": "clientIp", "scope": "cluster", "onStoreFailure": "deny", "storeTimeout": "500ms" } ],
              "clusters": [ { "id": "backend", "destinations": [ { "address": "{{upstream.Address}}" } ] } ],
              "routes": [ { "id": "all", "match": { "pathPrefix": "/" }, "cluster": "backend", "rateLimits": ["shared"] } ]
            }
            """;
        await using var gateway = await FastgateProcess.StartAsync(dir.FullName, config);
        using var http = ClusterHarness.Client(gateway);
        async Task<HttpStatusCode> Status()
        {
            using var r = await http.GetAsync("/x");
            return r.StatusCode;
        }
        await Eventually.WaitUntilAsync(async () => await Status() == HttpStatusCode.OK, "the gateway decides through the primary Sentinel named");
        Assert.Contains(primary.Port.ToString(), sentinel.Command("SENTINEL get-master-addr-by-name mymaster"));

        primary.Dispose();
        // its port held by a listener that never answers: Sentinel sees a silent primary, and no redis-server another
        // test starts on a free port can take the port and look like the primary come back
        using var held = HoldPort(primary.Port);
        var sw = Stopwatch.StartNew();
        await Eventually.WaitUntilAsync(() => Task.FromResult(sentinel.Command("SENTINEL get-master-addr-by-name mymaster").Contains(replica.Port.ToString())),
            "Sentinel promoted the replica", TimeSpan.FromSeconds(30),
            describe: () => "sentinel log:\n" + string.Join('\n', sentinel.Output.Split('\n').TakeLast(30)));
        double promoted = sw.Elapsed.TotalMilliseconds;
        int refused = 0;
        await Eventually.WaitUntilAsync(async () =>
        {
            var s = await Status();
            if (s == HttpStatusCode.ServiceUnavailable) refused++;
            return s == HttpStatusCode.OK && await Status() == HttpStatusCode.OK;
        }, "the gateway decides through the new primary", TimeSpan.FromSeconds(30), () => gateway.Output);
        output.WriteLine($"sentinel: promoted {promoted:0} ms after the kill (its port {(held is null ? "not held" : "held")}); the gateway decided through the new primary {sw.Elapsed.TotalMilliseconds:0} ms after it ({refused} probes refused with 503 meanwhile)");
        Assert.Contains("shared", replica.Command("KEYS *")); // the bucket lives on the new primary
        Assert.False(gateway.HasExited);
        try { dir.Delete(recursive: true); } catch (IOException) { }
    }
}
