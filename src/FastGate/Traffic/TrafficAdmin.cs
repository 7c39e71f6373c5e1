using System.Text.Json;
using FastGate.Proxy;

namespace FastGate.Traffic;

/// <summary>GET /admin/clusters: each cluster's settings and each destination's live state.</summary>
internal static class TrafficAdmin
{
    public static void WriteClusters(Utf8JsonWriter w, GatewayRuntime runtime)
    {
        w.WriteStartArray("clusters");
        foreach (var c in runtime.Current.Clusters)
        {
            var t = c.Traffic;
            long now = t.Time.GetTimestamp();
            var wallNow = t.Time.GetUtcNow();
            w.WriteStartObject();
            w.WriteString("id", c.Id);
            w.WriteString("policy", t.Policy switch
            {
                BalancingPolicy.LeastRequest => Configuration.LoadBalancingPolicies.LeastRequest,
                BalancingPolicy.Random => Configuration.LoadBalancingPolicies.Random,
                BalancingPolicy.ConsistentHash => Configuration.LoadBalancingPolicies.ConsistentHash,
                _ => Configuration.LoadBalancingPolicies.RoundRobin,
            });
            w.WriteBoolean("healthChecks", t.HealthCheck is not null);
            w.WriteBoolean("outlierDetection", t.OutlierEnabled);
            int usable = 0;
            foreach (var d in c.Destinations) if (d.Health.IsUsable(now)) usable++;
            w.WriteNumber("usable", usable);
            w.WriteBoolean("panic", usable == 0 && c.Destinations.Length > 0);
            w.WriteStartArray("destinations");
            foreach (var d in c.Destinations) WriteDestination(w, d, t, now, wallNow);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private static void WriteDestination(Utf8JsonWriter w, DestinationModel d, ClusterTraffic t, long now, DateTimeOffset wallNow)
    {
        var h = d.Health;
        w.WriteStartObject();
        w.WriteString("address", d.Address);
        w.WriteString("state", h.StateAt(now) switch
        {
            DestinationState.Ejected => "ejected",
            DestinationState.Unhealthy => "unhealthy",
            _ => "healthy",
        });
        w.WriteNumber("weight", d.Weight);
        w.WriteNumber("inFlight", h.InFlightCount);
        w.WriteNumber("consecutive5xx", Volatile.Read(ref h.Consecutive5xx));
        w.WriteNumber("consecutiveGatewayFailures", Volatile.Read(ref h.ConsecutiveGatewayFailures));
        w.WriteNumber("ejections", h.Ejected);
        long until = h.EjectedUntil;
        if (until > now) w.WriteString("ejectedUntil", wallNow + t.Time.GetElapsedTime(now, until));
        else w.WriteNull("ejectedUntil");
        w.WriteBoolean("slowStart", Balancer.SlowStartFactor(d, t, now) < 1);
        long wall = Volatile.Read(ref h.LastCheckWallTicks);
        if (wall == 0)
        {
            w.WriteNull("lastCheck");
            w.WriteNull("lastCheckResult");
        }
        else
        {
            w.WriteString("lastCheck", new DateTimeOffset(wall, TimeSpan.Zero));
            w.WriteString("lastCheckResult", h.LastCheckResult);
        }
        w.WriteEndObject();
    }
}
