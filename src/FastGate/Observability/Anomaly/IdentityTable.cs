using System.Numerics;
using System.Text;

namespace FastGate.Observability.Anomaly;

/// <summary>
/// The request-path side of the anomaly detector: a fixed open-addressing table of per-identity interval counters.
/// A request finds (or claims, by compare-exchange on the key) its identity's slot within a short probe and
/// increments counters with Interlocked; a distinct-path sketch is a 256-bit bitmap set with Interlocked.Or (linear
/// counting). No locks, no allocation. When no slot is free within the probe the request is counted as untracked.
/// The detector's interval task reads and resets the counters and evicts idle identities.
/// </summary>
internal sealed class IdentityTable
{
    private const int Probe = 8;
    private readonly Slot[] _slots;
    private readonly int _mask;
    private long _untracked;

    public IdentityTable(int capacity)
    {
        int size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, capacity * 2)); // load factor <= 0.5
        _slots = new Slot[size];
        for (int i = 0; i < size; i++) _slots[i] = new Slot();
        _mask = size - 1;
        Capacity = capacity;
    }

    public int Capacity { get; }
    public long Untracked => Volatile.Read(ref _untracked);
    internal Slot[] Slots => _slots;
    private int _occupied;
    public int Occupied => Volatile.Read(ref _occupied);

    public void Record(ReadOnlySpan<byte> identity, int status, ReadOnlySpan<byte> path)
    {
        ulong key = IdentityHash.Of(identity);
        int start = (int)(key & (ulong)_mask);
        // First look for the identity anywhere in its probe window (evictions leave holes), then claim a hole.
        for (int i = 0; i < Probe; i++)
        {
            var s = _slots[(start + i) & _mask];
            if (Volatile.Read(ref s.Key) == (long)key)
            {
                s.Count(status, path);
                return;
            }
        }
        for (int i = 0; i < Probe; i++)
        {
            var s = _slots[(start + i) & _mask];
            if (Volatile.Read(ref s.Key) != 0 || Volatile.Read(ref _occupied) >= Capacity) continue;
            long seen = Interlocked.CompareExchange(ref s.Key, (long)key, 0);
            if (seen == 0)
            {
                Interlocked.Increment(ref _occupied);
                int n = Math.Min(identity.Length, s.Identity.Length);
                identity[..n].CopyTo(s.Identity);
                s.IdentityLength = n;
                Volatile.Write(ref s.Ready, 1);
                s.Count(status, path);
                return;
            }
            if (seen == (long)key)
            {
                s.Count(status, path); // another request of the same identity claimed it first
                return;
            }
        }
        Interlocked.Increment(ref _untracked);
    }

    /// <summary>Frees a slot (interval task only). A request racing with it may lose its count: acceptable.</summary>
    public void Evict(Slot s)
    {
        Volatile.Write(ref s.Ready, 0);
        s.TakeCounts();
        Volatile.Write(ref s.Key, 0);
        Interlocked.Decrement(ref _occupied);
    }

    internal sealed class Slot
    {
        public long Key;
        public int Ready;
        public readonly byte[] Identity = new byte[64];
        public int IdentityLength;
        public long Requests, Errors, AuthFailures;
        public readonly ulong[] Paths = new ulong[4];

        public void Count(int status, ReadOnlySpan<byte> path)
        {
            Interlocked.Increment(ref Requests);
            if (status >= 500) Interlocked.Increment(ref Errors);
            else if (status is 401 or 403) Interlocked.Increment(ref AuthFailures);
            if (!path.IsEmpty)
            {
                ulong h = IdentityHash.Of(path);
                int bit = (int)(h & 255);
                ref ulong word = ref Paths[bit >> 6];
                ulong mask = 1UL << (bit & 63);
                if ((Volatile.Read(ref word) & mask) == 0) Interlocked.Or(ref word, mask);
            }
        }

        public string IdentityString => Encoding.ASCII.GetString(Identity, 0, IdentityLength);

        /// <summary>Reads and resets this interval's counts. Distinct paths by linear counting over 256 bits.</summary>
        public IntervalCounts TakeCounts()
        {
            long requests = Interlocked.Exchange(ref Requests, 0);
            long errors = Interlocked.Exchange(ref Errors, 0);
            long auth = Interlocked.Exchange(ref AuthFailures, 0);
            int set = 0;
            for (int i = 0; i < Paths.Length; i++) set += BitOperations.PopCount(Interlocked.Exchange(ref Paths[i], 0));
            double distinct = set == 0 ? 0 : set >= 256 ? 256 * Math.Log(256) : -256 * Math.Log((256.0 - set) / 256);
            return new IntervalCounts(requests, errors, auth, Math.Min(distinct, requests));
        }
    }
}

/// <summary>One identity's counts in one interval.</summary>
public readonly record struct IntervalCounts(long Requests, long Errors, long AuthFailures, double DistinctPaths);
