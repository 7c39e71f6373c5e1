using FastGate.Configuration;

namespace FastGate.Traffic;

/// <summary>A cluster's compiled health and balancing settings (immutable, part of the snapshot).</summary>
public sealed class ClusterTraffic
{
    /// <summary>Round robin, no checks, outlier detection with its defaults, on the system clock.</summary>
    public static readonly ClusterTraffic Default = new(new ClusterConfig(), TimeProvider.System);

    public ClusterTraffic(ClusterConfig config, TimeProvider time)
    {
        Time = time;
        double f = time.TimestampFrequency;
        var od = config.OutlierDetection;
        OutlierEnabled = od.Enabled && (od.Consecutive5xx > 0 || od.ConsecutiveGatewayFailures > 0);
        Consecutive5xx = od.Consecutive5xx;
        ConsecutiveGatewayFailures = od.ConsecutiveGatewayFailures;
        BaseEjectionTicks = (long)(od.BaseEjectionTime.TotalSeconds * f);
        MaxEjectionTicks = (long)(od.MaxEjectionTime.TotalSeconds * f);
        MaxEjectionPercent = od.MaxEjectionPercent;
        var lb = config.LoadBalancing;
        Policy = lb.Policy switch
        {
            LoadBalancingPolicies.LeastRequest => BalancingPolicy.LeastRequest,
            LoadBalancingPolicies.Random => BalancingPolicy.Random,
            LoadBalancingPolicies.ConsistentHash => BalancingPolicy.ConsistentHash,
            _ => BalancingPolicy.RoundRobin,
        };
        HashOn = lb.HashOn switch
        {
            HashOnKinds.Header => HashKey.Header,
            HashOnKinds.Cookie => HashKey.Cookie,
            HashOnKinds.Consumer => HashKey.Consumer,
            _ => HashKey.ClientIp,
        };
        HashName = lb.Name is null ? [] : System.Text.Encoding.ASCII.GetBytes(lb.Name);
        SlowStartTicks = (long)(lb.SlowStartSeconds * f);
        if (config.HealthCheck is { } hc) HealthCheck = new CompiledHealthCheck(hc, time);
    }

    public TimeProvider Time { get; }
    public bool OutlierEnabled { get; }
    public int Consecutive5xx { get; }
    public int ConsecutiveGatewayFailures { get; }
    public long BaseEjectionTicks { get; }
    public long MaxEjectionTicks { get; }
    public int MaxEjectionPercent { get; }
    public BalancingPolicy Policy { get; }
    public HashKey HashOn { get; }
    public byte[] HashName { get; }
    public long SlowStartTicks { get; }
    public CompiledHealthCheck? HealthCheck { get; }
}

public enum BalancingPolicy : byte { RoundRobin, LeastRequest, Random, ConsistentHash }

public enum HashKey : byte { ClientIp, Header, Cookie, Consumer }

/// <summary>A cluster's active health check, compiled.</summary>
public sealed class CompiledHealthCheck
{
    public CompiledHealthCheck(HealthCheckConfig c, TimeProvider time)
    {
        IsHttp = c.Type == HealthCheckTypes.Http;
        Path = c.Path;
        double f = time.TimestampFrequency;
        IntervalTicks = (long)(c.Interval.TotalSeconds * f);
        Interval = c.Interval;
        Timeout = c.Timeout;
        HealthyThreshold = c.HealthyThreshold;
        UnhealthyThreshold = c.UnhealthyThreshold;
        Statuses = c.ExpectedStatuses.Select(s => TrafficConfigBinder.TryParseStatusRange(s, out int lo, out int hi) ? (lo, hi) : (0, -1)).ToArray();
    }

    public bool IsHttp { get; }
    public string Path { get; }
    public long IntervalTicks { get; }
    public TimeSpan Interval { get; }
    public TimeSpan Timeout { get; }
    public int HealthyThreshold { get; }
    public int UnhealthyThreshold { get; }
    private (int Low, int High)[] Statuses { get; }

    public bool Expects(int status)
    {
        foreach (var (lo, hi) in Statuses) if (status >= lo && status <= hi) return true;
        return false;
    }
}
