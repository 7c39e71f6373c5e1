using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastGate.RateLimiting;

/// <summary>
/// One key's live state. The limiter's whole decision state is <see cref="State"/>, one 64-bit word updated with CAS.
/// Keys of up to 16 bytes (IPv4/IPv6 addresses, short ids) are stored inline, so such a bucket is one object.
/// </summary>
public class Bucket
{
    /// <summary>State value of a bucket removed from its table; an updater that reads it looks the key up again.</summary>
    public const long Evicted = long.MinValue;

    public long State;
    internal int Hash;
    internal int KeyLength;
    internal ulong K0, K1;
    internal byte[]? LongKey;

    internal void SetKey(ReadOnlySpan<byte> key, int hash, ulong k0, ulong k1)
    {
        Hash = hash;
        KeyLength = key.Length;
        K0 = k0;
        K1 = k1;
        if (key.Length > 16) LongKey = key.ToArray();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool KeyEquals(ReadOnlySpan<byte> key, ulong k0, ulong k1)
    {
        if (key.Length != KeyLength) return false;
        if (key.Length <= 16) return K0 == k0 && K1 == k1;
        return LongKey.AsSpan().SequenceEqual(key);
    }

    /// <summary>The key bytes (allocates; diagnostics and the cluster store only).</summary>
    public byte[] KeyToArray()
    {
        if (LongKey is not null) return LongKey;
        var a = new byte[16];
        MemoryMarshal.Write(a, in K0);
        MemoryMarshal.Write(a.AsSpan(8), in K1);
        return a.AsSpan(0, KeyLength).ToArray();
    }
}

/// <summary>Decides whether a bucket may leave the table: only when evicting it cannot change any future decision.</summary>
public interface IBucketEvictionPolicy<in T> where T : Bucket
{
    /// <summary>Atomically marks <paramref name="bucket"/> as <see cref="Bucket.Evicted"/> if it is idle at <paramref name="now"/>.</summary>
    bool TryMarkEvicted(T bucket, long now);
}

/// <summary>
/// A bounded key → bucket table. Lookups of present keys take no lock and allocate nothing (linear probing over an array
/// read with Volatile). Inserting a new key takes its segment's lock (the table is split into up to 64 segments by hash),
/// so inserts never create duplicates; readers that miss a key during a concurrent move fall through to that locked path.
/// When a segment is at its share of maxKeys it evicts idle buckets (per the policy) found by a clock hand; if none is
/// idle, the key gets the shared overflow bucket and <see cref="OverflowHits"/> counts it.
/// </summary>
public sealed class KeyTable<T> where T : Bucket, new()
{
    private const int EvictionScan = 64;

    private sealed class Segment
    {
        public T?[] Slots;
        public int Count;
        public int ClockHand;
        public readonly int Capacity;
        public readonly int MaxSlots;
        public readonly Lock Gate = new();

        public Segment(int capacity)
        {
            Capacity = capacity;
            int max = 16;
            while (max < capacity * 2L && max < (1 << 30)) max <<= 1; // load factor <= 0.5 at capacity
            MaxSlots = max;
            Slots = new T?[Math.Min(16, max)];
        }
    }

    private readonly Segment[] _segments;
    private readonly int _segmentShift;
    private readonly IBucketEvictionPolicy<T> _policy;
    private readonly TimeProvider _time;
    private readonly T _overflow = new();
    private long _count;
    private long _evictions;
    private readonly StripedCounter _overflowHits = new();

    public KeyTable(int maxKeys, IBucketEvictionPolicy<T> policy, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        MaxKeys = maxKeys;
        _policy = policy;
        _time = time;
        int segments = 1;
        while (segments < 64 && maxKeys / (segments * 2) >= 4096) segments <<= 1;
        _segments = new Segment[segments];
        int per = maxKeys / segments;
        for (int i = 0; i < segments; i++) _segments[i] = new Segment(per);
        _segmentShift = 32 - System.Numerics.BitOperations.Log2((uint)segments);
        _overflow.SetKey(default, 0, 0, 0);
    }

    public int MaxKeys { get; }
    /// <summary>Keys currently in the table (never more than MaxKeys).</summary>
    public long Count => Volatile.Read(ref _count);
    public long OverflowHits => _overflowHits.Value;
    public long Evictions => Volatile.Read(ref _evictions);
    /// <summary>The bucket shared by keys that found the table full.</summary>
    public T Overflow => _overflow;

    // Per-process secrets: keys chosen by clients cannot be aimed at one probe chain.
    private static readonly ulong s_seed0 = (ulong)Random.Shared.NextInt64() | 1, s_seed1 = (ulong)Random.Shared.NextInt64();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Mix(ulong x)
    {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdUL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53UL;
        x ^= x >> 33;
        return x;
    }

    /// <summary>
    /// Loads the key's first 16 bytes (zero-padded) and hashes it: for keys of up to 16 bytes a seeded 64-bit mix of
    /// the two words and the length; longer keys use the framework's per-process seeded HashCode over all bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int HashAndInline(ReadOnlySpan<byte> key, out ulong k0, out ulong k1)
    {
        if (key.Length >= 16)
        {
            k0 = MemoryMarshal.Read<ulong>(key);
            k1 = MemoryMarshal.Read<ulong>(key.Slice(8));
            if (key.Length > 16)
            {
                var h = new HashCode();
                h.AddBytes(key);
                return h.ToHashCode();
            }
        }
        else
        {
            Key16 buf = default;
            key.CopyTo(MemoryMarshal.AsBytes((Span<ulong>)buf));
            k0 = buf[0];
            k1 = buf[1];
        }
        ulong m = Mix(k0 ^ s_seed0) + Mix(k1 ^ s_seed1 ^ (ulong)key.Length);
        return (int)(m ^ (m >> 32));
    }

    [System.Runtime.CompilerServices.InlineArray(2)]
    private struct Key16 { private ulong _e; }

    /// <summary>Finds or adds the bucket for <paramref name="key"/>. Returns <see cref="Overflow"/> when the table is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T GetOrAdd(ReadOnlySpan<byte> key)
    {
        int hash = HashAndInline(key, out ulong k0, out ulong k1);
        var seg = _segments[(int)((uint)hash >> _segmentShift) & (_segments.Length - 1)];
        return Find(Volatile.Read(ref seg.Slots), key, hash, k0, k1) ?? AddSlow(seg, key, hash, k0, k1);
    }

    /// <summary>Finds the bucket for a key without adding it (null when absent).</summary>
    public T? Find(ReadOnlySpan<byte> key)
    {
        int hash = HashAndInline(key, out ulong k0, out ulong k1);
        var seg = _segments[(int)((uint)hash >> _segmentShift) & (_segments.Length - 1)];
        return Find(Volatile.Read(ref seg.Slots), key, hash, k0, k1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T? Find(T?[] slots, ReadOnlySpan<byte> key, int hash, ulong k0, ulong k1)
    {
        int mask = slots.Length - 1;
        int i = hash & mask;
        for (int n = 0; n <= mask; n++)
        {
            T? b = Volatile.Read(ref slots[i]);
            if (b is null) return null;
            if (b.Hash == hash && b.KeyEquals(key, k0, k1)) return b;
            i = (i + 1) & mask;
        }
        return null;
    }

    private T AddSlow(Segment seg, ReadOnlySpan<byte> key, int hash, ulong k0, ulong k1)
    {
        lock (seg.Gate)
        {
            T? existing = Find(seg.Slots, key, hash, k0, k1);
            if (existing is not null) return existing;
            if (seg.Count >= seg.Capacity && !EvictSome(seg, _time.GetTimestamp(), EvictionScan))
            {
                _overflowHits.Increment();
                return _overflow;
            }
            if ((seg.Count + 1) * 2 > seg.Slots.Length && seg.Slots.Length < seg.MaxSlots) Grow(seg);
            var bucket = new T();
            bucket.SetKey(key, hash, k0, k1);
            T?[] slots = seg.Slots;
            int mask = slots.Length - 1;
            int i = hash & mask;
            while (slots[i] is not null) i = (i + 1) & mask;
            Volatile.Write(ref slots[i], bucket);
            seg.Count++;
            Interlocked.Increment(ref _count);
            return bucket;
        }
    }

    private static void Grow(Segment seg)
    {
        T?[] old = seg.Slots;
        var slots = new T?[old.Length * 2];
        int mask = slots.Length - 1;
        foreach (T? b in old)
        {
            if (b is null) continue;
            int i = b.Hash & mask;
            while (slots[i] is not null) i = (i + 1) & mask;
            slots[i] = b;
        }
        Volatile.Write(ref seg.Slots, slots);
    }

    /// <summary>Scans up to <paramref name="budget"/> slots from the clock hand; evicts idle buckets. Caller holds the lock.</summary>
    private bool EvictSome(Segment seg, long now, int budget)
    {
        T?[] slots = seg.Slots;
        int mask = slots.Length - 1;
        int i = seg.ClockHand & mask;
        bool any = false;
        for (int n = 0; n < budget && seg.Count > 0; n++)
        {
            T? b = slots[i];
            if (b is not null && _policy.TryMarkEvicted(b, now))
            {
                RemoveAt(seg, slots, i);
                any = true;
                continue; // slot i now holds a shifted entry (or null): look at it again
            }
            i = (i + 1) & mask;
        }
        seg.ClockHand = i;
        return any;
    }

    /// <summary>Backward-shift deletion for linear probing. Caller holds the lock.</summary>
    private void RemoveAt(Segment seg, T?[] slots, int i)
    {
        int mask = slots.Length - 1;
        int j = i;
        while (true)
        {
            j = (j + 1) & mask;
            T? b = slots[j];
            if (b is null) break;
            int home = b.Hash & mask;
            // Move b back to i if its home is not cyclically within (i, j].
            bool inRange = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (!inRange)
            {
                Volatile.Write(ref slots[i], b);
                i = j;
            }
        }
        Volatile.Write(ref slots[i], null);
        seg.Count--;
        Interlocked.Decrement(ref _count);
        Interlocked.Increment(ref _evictions);
    }

    /// <summary>
    /// Evicts every idle bucket (a full pass over every segment, each under its lock for at most one segment's scan).
    /// Call from a background timer to give memory back after a burst of keys; never needed for correctness.
    /// Returns the number evicted.
    /// </summary>
    public int Sweep()
    {
        int evicted = 0;
        long now = _time.GetTimestamp();
        foreach (var seg in _segments)
        {
            lock (seg.Gate)
            {
                T?[] slots = seg.Slots;
                int i = 0;
                while (i < slots.Length)
                {
                    T? b = slots[i];
                    if (b is not null && _policy.TryMarkEvicted(b, now))
                    {
                        RemoveAt(seg, slots, i);
                        evicted++;
                        continue;
                    }
                    i++;
                }
            }
        }
        return evicted;
    }
}
