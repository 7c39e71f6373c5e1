using FastGate.Proxy;

namespace FastGate.Traffic;

/// <summary>
/// Passive health (Envoy's outlier detection): consecutive 5xx responses, or consecutive gateway failures (connect
/// failure, timeout, reset before a response head), eject a destination for baseEjectionTime × the number of times it
/// was ejected recently, up to maxEjectionTime. At most maxEjectionPercent of the cluster is ejected at once (at least
/// one destination of two or more), and never the last usable one. Lock-free: counters are Interlocked, and the
/// ejection itself is one compare-and-swap (one thread wins).
/// </summary>
internal static class OutlierDetector
{
    public static void Report(DestinationModel d, UpstreamOutcome outcome)
    {
        var cluster = d.Cluster;
        if (cluster is null) return;
        var t = cluster.Traffic;
        if (!t.OutlierEnabled) return;
        var h = d.Health;
        switch (outcome)
        {
            case UpstreamOutcome.Success:
                // reset without writing the shared line when nothing is counted (the common case)
                if (Volatile.Read(ref h.Consecutive5xx) != 0) Volatile.Write(ref h.Consecutive5xx, 0);
                if (Volatile.Read(ref h.ConsecutiveGatewayFailures) != 0) Volatile.Write(ref h.ConsecutiveGatewayFailures, 0);
                return;
            case UpstreamOutcome.ServerError:
                if (Volatile.Read(ref h.ConsecutiveGatewayFailures) != 0) Volatile.Write(ref h.ConsecutiveGatewayFailures, 0);
                if (t.Consecutive5xx > 0 && Interlocked.Increment(ref h.Consecutive5xx) >= t.Consecutive5xx) TryEject(cluster, d, t);
                return;
            case UpstreamOutcome.ConnectFailed or UpstreamOutcome.Timeout or UpstreamOutcome.Reset:
                if (t.ConsecutiveGatewayFailures > 0 && Interlocked.Increment(ref h.ConsecutiveGatewayFailures) >= t.ConsecutiveGatewayFailures)
                    TryEject(cluster, d, t);
                return;
            default:
                return; // Abandoned: says nothing about the destination
        }
    }

    private static void TryEject(ClusterModel cluster, DestinationModel d, ClusterTraffic t)
    {
        var h = d.Health;
        Volatile.Write(ref h.Consecutive5xx, 0);
        Volatile.Write(ref h.ConsecutiveGatewayFailures, 0);
        long now = t.Time.GetTimestamp();
        long seen = h.EjectedUntil;
        if (seen > now) return; // already ejected: this was panic-mode traffic
        var all = cluster.Destinations;
        int n = all.Length;
        if (n <= 1 || t.MaxEjectionPercent == 0) return;
        int ejected = 0, unusable = 0;
        foreach (var other in all)
        {
            if (other.Health.EjectedUntil > now) ejected++;
            if (!other.Health.IsUsable(now)) unusable++;
        }
        int allowed = Math.Clamp(n * t.MaxEjectionPercent / 100, 1, n - 1);
        if (ejected >= allowed || unusable >= n - 1) return; // the cap, or the last usable destination
        int multiplier = Interlocked.Increment(ref h.EjectionMultiplier);
        long duration = Math.Min(t.BaseEjectionTicks * multiplier, Math.Max(t.MaxEjectionTicks, t.BaseEjectionTicks));
        long until = now + duration;
        if (!h.TryEject(seen, until))
        {
            Interlocked.Decrement(ref h.EjectionMultiplier);
            return;
        }
        Interlocked.Increment(ref h.EjectionCount);
        Volatile.Write(ref h.LastEjectedAt, now);
        Volatile.Write(ref h.ProbeSuccessesSinceEjection, 0);
        Volatile.Write(ref h.MultiplierDecayAt, until + t.BaseEjectionTicks);
        h.NoteEjectionEnds(until);
        h.Ejections?.Inc();
    }

    /// <summary>
    /// From the health loop: a destination that stayed in rotation for a baseEjectionTime after its ejection ended
    /// has its multiplier lowered by one (so a destination that recovered for good is ejected briefly again).
    /// </summary>
    public static void Decay(DestinationHealth h, ClusterTraffic t, long now)
    {
        if (Volatile.Read(ref h.EjectionMultiplier) == 0 || h.EjectedUntil > now || now < Volatile.Read(ref h.MultiplierDecayAt)) return;
        if (Interlocked.Decrement(ref h.EjectionMultiplier) < 0) Interlocked.Exchange(ref h.EjectionMultiplier, 0);
        Volatile.Write(ref h.MultiplierDecayAt, now + t.BaseEjectionTicks);
    }
}
