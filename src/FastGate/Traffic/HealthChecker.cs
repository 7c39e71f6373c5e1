using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using FastGate.Proxy;

namespace FastGate.Traffic;

/// <summary>
/// Active health checks for every cluster of the snapshot in force, from ONE timer (not a task per destination per
/// tick): each tick starts the probes that are due (a TCP connect, or an HTTP/1.1 GET of the path on a connection of
/// its own, never a pooled one) and nothing else. A probe is due one interval after the previous one ended, minus a
/// random 0–10% so gateways started together drift apart; while a streak towards a change of state is building (a
/// failure of a healthy destination, a success of an unhealthy or ejected one) the next probe comes after
/// interval / threshold, so the change completes within about one interval. The same tick lowers the ejection
/// multipliers of destinations that stayed in rotation (<see cref="OutlierDetector.Decay"/>).
/// </summary>
public sealed class HealthChecker : IDisposable
{
    internal static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(100);
    private readonly Func<IReadOnlyList<ClusterModel>> _current;
    private readonly TimeProvider _time;
    private readonly ITimer _timer;
    private int _ticking;
    private volatile bool _disposed;

    public HealthChecker(Func<IReadOnlyList<ClusterModel>> current, TimeProvider time)
    {
        _current = current;
        _time = time;
        _timer = time.CreateTimer(_ => OnTick(), null, Tick, Tick);
    }

    /// <summary>Probes completed (for tests and /admin/clusters).</summary>
    public long ProbesCompleted => Interlocked.Read(ref _probes);
    private long _probes;

    internal void OnTick()
    {
        if (_disposed || Interlocked.Exchange(ref _ticking, 1) == 1) return;
        try
        {
            long now = _time.GetTimestamp();
            foreach (var cluster in _current())
            {
                var hc = cluster.Traffic.HealthCheck;
                foreach (var d in cluster.Destinations)
                {
                    var h = d.Health;
                    OutlierDetector.Decay(h, cluster.Traffic, now);
                    if (hc is null)
                    {
                        if (!h.ActiveHealthy) h.SetActiveHealthy(true, now); // checks removed by a reload
                        continue;
                    }
                    if (h.NextCheckAt == 0) h.NextCheckAt = now + (long)(Random.Shared.NextDouble() * hc.IntervalTicks / 10);
                    if (now < h.NextCheckAt || Interlocked.Exchange(ref h.Probing, 1) == 1) continue;
                    _ = ProbeAsync(cluster, d, hc);
                }
            }
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private async Task ProbeAsync(ClusterModel cluster, DestinationModel d, CompiledHealthCheck hc)
    {
        bool ok;
        string result;
        try
        {
            (ok, result) = await RunProbeAsync(d, hc).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            (ok, result) = (false, "error: " + e.Message);
        }
        Apply(d.Health, hc, ok, result, _time.GetTimestamp(), _time.GetUtcNow());
        Interlocked.Increment(ref _probes);
    }

    private async Task<(bool, string)> RunProbeAsync(DestinationModel d, CompiledHealthCheck hc)
    {
        using var cts = new CancellationTokenSource(hc.Timeout, _time);
        var ep = d.Pool.EndPoint;
        using var socket = ep is DnsEndPoint ? new Socket(SocketType.Stream, ProtocolType.Tcp) : new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(ep, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return (false, "connect timeout");
        }
        catch (SocketException e)
        {
            return (false, e.SocketErrorCode == SocketError.ConnectionRefused ? "connection refused" : "connect failed: " + e.SocketErrorCode);
        }
        if (!hc.IsHttp) return (true, "connected");
        try
        {
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            await using var _ = stream.ConfigureAwait(false);
            if (d.Pool.Tls is { } tls)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                await ssl.AuthenticateAsClientAsync(tls.CreateOptions(new TlsCheck()), cts.Token).ConfigureAwait(false);
                stream = ssl;
            }
            var request = Encoding.ASCII.GetBytes(
                $"GET {hc.Path} HTTP/1.1\r\nHost: {Encoding.ASCII.GetString(d.Authority)}\r\nUser-Agent: FastGate-HealthCheck\r\nConnection: close\r\n\r\n");
            await stream.WriteAsync(request, cts.Token).ConfigureAwait(false);
            var buffer = new byte[256];
            int length = 0;
            while (length < buffer.Length)
            {
                int n = await stream.ReadAsync(buffer.AsMemory(length), cts.Token).ConfigureAwait(false);
                if (n == 0) break;
                length += n;
                if (length >= 12) break; // "HTTP/1.1 200"
            }
            if (length < 12 || !buffer.AsSpan(0, 7).SequenceEqual("HTTP/1."u8) || buffer[8] != (byte)' '
                || !int.TryParse(Encoding.ASCII.GetString(buffer, 9, 3), System.Globalization.NumberStyles.None, null, out int status))
                return (false, "no HTTP response");
            return (hc.Expects(status), "status " + status);
        }
        catch (OperationCanceledException)
        {
            return (false, "timeout");
        }
        catch (Exception e) when (e is IOException or SocketException or System.Security.Authentication.AuthenticationException)
        {
            return (false, "failed: " + e.Message);
        }
    }

    /// <summary>Counts one probe's result into the destination's state and schedules the next probe.</summary>
    internal static void Apply(DestinationHealth h, CompiledHealthCheck hc, bool ok, string result, long now, DateTimeOffset wall)
    {
        (ok ? h.ChecksPassed : h.ChecksFailed)?.Inc();
        h.LastCheckResult = result;
        Volatile.Write(ref h.LastCheckAt, now);
        Volatile.Write(ref h.LastCheckWallTicks, wall.UtcTicks);
        bool healthy = h.ActiveHealthy;
        int threshold = ok ? hc.HealthyThreshold : hc.UnhealthyThreshold;
        if (ok == healthy) h.ProbeStreak = 0;
        else if (++h.ProbeStreak >= threshold)
        {
            h.SetActiveHealthy(ok, now);
            h.ProbeStreak = 0;
        }
        bool ejected = h.EjectedUntil > now;
        if (ok)
        {
            // Envoy's successful_active_health_check_uneject_host: passing checks end an ejection
            if (++h.ProbeSuccessesSinceEjection >= hc.HealthyThreshold && ejected)
            {
                h.EndEjection(now);
                ejected = false;
            }
        }
        else h.ProbeSuccessesSinceEjection = 0;
        bool building = h.ProbeStreak > 0 || (ok && ejected);
        long spacing = building ? hc.IntervalTicks / threshold : hc.IntervalTicks;
        h.NextCheckAt = now + spacing - (long)(Random.Shared.NextDouble() * spacing / 10);
        Volatile.Write(ref h.Probing, 0);
    }

    /// <summary>Before a scrape: the state gauge of every destination (one-hot over healthy, unhealthy, ejected).</summary>
    public static void CollectGauges(Configuration.GatewaySnapshot snapshot, Observability.GatewayMetrics metrics)
    {
        foreach (var cluster in snapshot.Clusters)
        {
            foreach (var d in cluster.Destinations)
            {
                var state = (int)d.Health.StateAt(cluster.Traffic.Time.GetTimestamp());
                for (int s = 0; s < DestinationHealthStore.StateLabels.Length; s++)
                    metrics.DestinationState.WithLabels(cluster.Id, d.Address, DestinationHealthStore.StateLabels[s]).Set(s == state ? 1 : 0);
            }
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _timer.Dispose();
    }
}
