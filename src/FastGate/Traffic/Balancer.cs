using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using FastGate.Proxy;

namespace FastGate.Traffic;

/// <summary>
/// Destination choice for <see cref="ClusterModel.Pick"/>: the cluster's policy over its usable destinations (passing
/// active checks, not ejected), never the destination to avoid while another usable one exists, and panic mode (all
/// destinations, whatever their health) when none is usable. Lock-free and allocation-free: shared state is the
/// round-robin ticket (one Interlocked increment) and the destinations' in-flight counts.
/// </summary>
internal static class Balancer
{
    private enum Filter : byte { Usable, Any }

    public static int Pick(ClusterModel cluster, Pipeline.Exchange? exchange, DestinationModel? avoid)
    {
        var t = cluster.Traffic;
        long now = t.Time.GetTimestamp();
        int avoidIndex = avoid is not null && ReferenceEquals(avoid.Cluster, cluster) ? avoid.Index : -1;
        int i = PickWith(cluster, t, exchange, avoidIndex, Filter.Usable, now);
        if (i >= 0) return i;
        // nothing usable but the destination to avoid: use it again; nothing usable at all: panic, serve from all
        if (avoidIndex >= 0 && cluster.Destinations[avoidIndex].Health.IsUsable(now)) return avoidIndex;
        i = PickWith(cluster, t, exchange, avoidIndex, Filter.Any, now);
        return i >= 0 ? i : Math.Max(avoidIndex, 0);
    }

    private static int PickWith(ClusterModel cluster, ClusterTraffic t, Pipeline.Exchange? exchange, int avoid, Filter filter, long now) =>
        t.Policy switch
        {
            BalancingPolicy.LeastRequest => LeastRequest(cluster, t, avoid, filter, now),
            BalancingPolicy.Random => WeightedRandom(cluster, t, avoid, filter, now),
            BalancingPolicy.ConsistentHash when exchange is not null && TryHashKey(t, exchange, out ulong key) => Hashed(cluster, key, avoid, filter, now),
            _ => RoundRobin(cluster, t, avoid, filter, now),
        };

    private static bool Eligible(DestinationModel d, int avoid, Filter filter, long now) =>
        d.Index != avoid && (filter == Filter.Any || d.Health.IsUsable(now));

    /// <summary>The share of its weight a destination gets while it ramps up (slow start): 10% to 100%, linear.</summary>
    internal static double SlowStartFactor(DestinationModel d, ClusterTraffic t, long now)
    {
        if (t.SlowStartTicks <= 0) return 1;
        long since = d.Health.UsableSince;
        if (since == 0 || now - since >= t.SlowStartTicks || now < since) return 1;
        return Math.Max(0.1, (double)(now - since) / t.SlowStartTicks);
    }

    private static bool Admit(DestinationModel d, ClusterTraffic t, long now)
    {
        double f = SlowStartFactor(d, t, now);
        return f >= 1 || Random.Shared.NextDouble() < f;
    }

    /// <summary>Smooth weighted round robin over a precomputed schedule; a skipped slot takes the next ticket, so the others stay even.</summary>
    private static int RoundRobin(ClusterModel cluster, ClusterTraffic t, int avoid, Filter filter, long now)
    {
        var schedule = cluster.Schedule;
        var d = cluster.Destinations;
        int len = schedule.Length;
        for (int k = 0; k < 2 * len; k++)
        {
            uint ticket = cluster.NextTicket();
            var candidate = d[schedule[ticket % (uint)len]];
            if (Eligible(candidate, avoid, filter, now) && (filter == Filter.Any || Admit(candidate, t, now))) return candidate.Index;
        }
        return FirstEligible(d, 0, avoid, filter, now);
    }

    private static int FirstEligible(DestinationModel[] d, int from, int avoid, Filter filter, long now)
    {
        for (int k = 0; k < d.Length; k++)
        {
            var c = d[(from + k) % d.Length];
            if (Eligible(c, avoid, filter, now)) return c.Index;
        }
        return -1;
    }

    /// <summary>Power of two choices: two random destinations, the one with fewer tries in flight per unit of weight.</summary>
    private static int LeastRequest(ClusterModel cluster, ClusterTraffic t, int avoid, Filter filter, long now)
    {
        var d = cluster.Destinations;
        int n = d.Length;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            int a = Random.Shared.Next(n);
            int b = Random.Shared.Next(n - 1);
            if (b >= a) b++;
            bool okA = Eligible(d[a], avoid, filter, now), okB = Eligible(d[b], avoid, filter, now);
            if (okA && okB) return Load(d[a], t, now) <= Load(d[b], t, now) ? a : b;
            if (okA) return a;
            if (okB) return b;
        }
        int best = -1;
        double bestLoad = double.MaxValue;
        for (int k = 0; k < n; k++)
        {
            if (!Eligible(d[k], avoid, filter, now)) continue;
            double load = Load(d[k], t, now);
            if (load < bestLoad) { best = k; bestLoad = load; }
        }
        return best;
    }

    private static double Load(DestinationModel d, ClusterTraffic t, long now) =>
        (d.Health.InFlightCount + 1) / (d.Weight * SlowStartFactor(d, t, now));

    private static int WeightedRandom(ClusterModel cluster, ClusterTraffic t, int avoid, Filter filter, long now)
    {
        var d = cluster.Destinations;
        var prefix = cluster.WeightPrefix;
        long total = prefix[^1];
        int i = 0;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            long r = Random.Shared.NextInt64(total);
            i = UpperBound(prefix, r);
            if (Eligible(d[i], avoid, filter, now) && (filter == Filter.Any || Admit(d[i], t, now))) return i;
        }
        return FirstEligible(d, i, avoid, filter, now);
    }

    /// <summary>The first index whose prefix sum is greater than <paramref name="r"/>.</summary>
    private static int UpperBound(long[] prefix, long r)
    {
        int lo = 0, hi = prefix.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (prefix[mid] > r) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    private static int Hashed(ClusterModel cluster, ulong key, int avoid, Filter filter, long now)
    {
        var ring = cluster.Ring!;
        var d = cluster.Destinations;
        int start = ring.Find(key);
        // clockwise to the first eligible owner: only the keys of an unusable destination move, to its neighbours
        for (int k = 0; k < ring.Count; k++)
        {
            var c = d[ring.Owner((start + k) % ring.Count)];
            if (Eligible(c, avoid, filter, now)) return c.Index;
        }
        return -1;
    }

    /// <summary>The consistent-hash key of a request, hashed from the spans it lives in (no strings). False: the request has none.</summary>
    internal static bool TryHashKey(ClusterTraffic t, Pipeline.Exchange x, out ulong hash)
    {
        ReadOnlySpan<byte> key;
        switch (t.HashOn)
        {
            case HashKey.ClientIp:
                key = x.ClientIp;
                break;
            case HashKey.Header:
                if (!x.Request.TryGetHeader(t.HashName, out key)) key = default;
                break;
            case HashKey.Cookie:
                key = x.Request.TryGetHeader("cookie"u8, out var cookies) ? CookieValue(cookies, t.HashName) : default;
                break;
            default:
                key = x.Consumer is { IsConsumer: true, Id.Length: > 0 } c ? MemoryMarshal.AsBytes(c.Id.AsSpan()) : default;
                break;
        }
        hash = key.IsEmpty ? 0 : KeyHash(key);
        return !key.IsEmpty;
    }

    /// <summary>The value of cookie <paramref name="name"/> in a Cookie header ("a=1; b=2"), or empty.</summary>
    internal static ReadOnlySpan<byte> CookieValue(ReadOnlySpan<byte> header, ReadOnlySpan<byte> name)
    {
        while (!header.IsEmpty)
        {
            int semi = header.IndexOf((byte)';');
            var pair = semi < 0 ? header : header[..semi];
            header = semi < 0 ? default : header[(semi + 1)..];
            pair = pair.TrimStart((byte)' ');
            if (pair.Length > name.Length && pair[name.Length] == (byte)'=' && pair.StartsWith(name)) return pair[(name.Length + 1)..].TrimEnd((byte)' ');
        }
        return default;
    }

    internal static ulong KeyHash(ReadOnlySpan<byte> key) => XxHash3.HashToUInt64(key);
}

/// <summary>
/// A consistent-hash ring: each destination owns points proportional to its weight (1000 per unit of weight, scaled
/// down if the ring would pass 1,000,000 points), a key belongs to the first point at or after its hash. Adding a
/// destination moves only the keys that land on its new points, and removing one moves only its own keys.
/// </summary>
internal sealed class HashRing
{
    internal const int PointsPerWeight = 1000;
    private const int MaxPoints = 1_000_000;
    private readonly ulong[] _points;
    private readonly int[] _owners;

    public HashRing(IReadOnlyList<(string Address, int Weight)> destinations)
    {
        long total = destinations.Sum(d => (long)d.Weight * PointsPerWeight);
        double scale = total > MaxPoints ? (double)MaxPoints / total : 1;
        var points = new List<(ulong Hash, int Owner)>();
        Span<byte> buffer = stackalloc byte[4];
        for (int i = 0; i < destinations.Count; i++)
        {
            int count = Math.Max(1, (int)(destinations[i].Weight * PointsPerWeight * scale));
            var address = Encoding.UTF8.GetBytes(destinations[i].Address);
            var bytes = new byte[address.Length + 4];
            address.CopyTo(bytes, 0);
            for (int k = 0; k < count; k++)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(address.Length), k);
                points.Add((XxHash3.HashToUInt64(bytes), i));
            }
        }
        points.Sort((a, b) => a.Hash != b.Hash ? a.Hash.CompareTo(b.Hash) : a.Owner.CompareTo(b.Owner));
        _points = points.Select(p => p.Hash).ToArray();
        _owners = points.Select(p => p.Owner).ToArray();
    }

    public int Count => _points.Length;

    public int Owner(int point) => _owners[point];

    /// <summary>The first point at or after <paramref name="hash"/> (wrapping round).</summary>
    public int Find(ulong hash)
    {
        int lo = 0, hi = _points.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_points[mid] < hash) lo = mid + 1;
            else hi = mid;
        }
        return lo == _points.Length ? 0 : lo;
    }

    /// <summary>The owner of a key's hash (all destinations considered usable).</summary>
    public int Lookup(ulong hash) => _owners[Find(hash)];
}

/// <summary>Smooth weighted round-robin order (nginx's): over one cycle each destination appears exactly its weight times, interleaved.</summary>
internal static class RoundRobinSchedule
{
    public static int[] Build(IReadOnlyList<int> weights)
    {
        int g = 0;
        foreach (int w in weights) g = Gcd(g, w);
        var w2 = weights.Select(w => w / Math.Max(g, 1)).ToArray();
        int total = w2.Sum();
        var current = new long[w2.Length];
        var schedule = new int[total];
        for (int s = 0; s < total; s++)
        {
            int best = 0;
            for (int i = 0; i < w2.Length; i++)
            {
                current[i] += w2[i];
                if (current[i] > current[best]) best = i;
            }
            current[best] -= total;
            schedule[s] = best;
        }
        return schedule;
    }

    private static int Gcd(int a, int b)
    {
        while (b != 0) (a, b) = (b, a % b);
        return a;
    }
}
