using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace FastGate.Policy;

/// <summary>
/// An immutable open-addressing table keyed by byte strings, probed with a span (no string, no allocation).
/// The hash reads 8 bytes at a time; ignore-case tables OR each byte with 0x20 for hashing (folding ASCII
/// letters; other collisions only cost a compare) and compare with ASCII case-insensitive equality.
/// </summary>
internal sealed class ByteKeyTable<T> where T : class
{
    private struct Entry
    {
        public uint Hash;
        public byte[]? Key;
        public T? Value;
    }

    // One array of (hash, key, value): a probe touches one cache line before the key compare.
    private readonly Entry[] _entries;
    private readonly int _mask;
    private readonly bool _ignoreCase;

    public ByteKeyTable(IReadOnlyCollection<KeyValuePair<byte[], T>> entries, bool ignoreCase)
    {
        _ignoreCase = ignoreCase;
        int capacity = 4;
        while (capacity < entries.Count * 2) capacity <<= 1;
        _entries = new Entry[capacity];
        _mask = capacity - 1;
        foreach (var (k, v) in entries)
        {
            var key = k;
            if (ignoreCase)
            {
                key = new byte[k.Length];
                Ascii.ToLower(k, key, out _);
            }
            uint h = Hash(key, ignoreCase);
            int i = (int)(h & (uint)_mask);
            while (_entries[i].Key is not null)
            {
                if (_entries[i].Key.AsSpan().SequenceEqual(key)) throw new ArgumentException("duplicate key " + Encoding.Latin1.GetString(key));
                i = (i + 1) & _mask;
            }
            _entries[i] = new Entry { Hash = h, Key = key, Value = v };
        }
        Count = entries.Count;
        MinKeyLength = entries.Count == 0 ? 0 : entries.Min(e => e.Key.Length);
        MaxKeyLength = entries.Count == 0 ? 0 : entries.Max(e => e.Key.Length);
    }

    public int MinKeyLength { get; }
    public int MaxKeyLength { get; }

    public int Count { get; }

    public static uint Hash(ReadOnlySpan<byte> key, bool ignoreCase)
    {
        const ulong K = 0x9E3779B97F4A7C15;
        ulong fold = ignoreCase ? 0x2020202020202020UL : 0;
        ulong h = K ^ (ulong)key.Length;
        ref byte r = ref MemoryMarshal.GetReference(key);
        int i = 0;
        for (; i + 8 <= key.Length; i += 8)
            h = BitOperations.RotateLeft((h ^ (Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref r, i)) | fold)) * K, 31);
        if (i < key.Length)
        {
            ulong x;
            if (key.Length >= 8) x = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref r, key.Length - 8));
            else
            {
                x = 0;
                for (; i < key.Length; i++) x = (x << 8) | Unsafe.Add(ref r, i);
            }
            h = BitOperations.RotateLeft((h ^ (x | fold)) * K, 31);
        }
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9;
        return (uint)(h ^ (h >> 32));
    }

    public T? Find(ReadOnlySpan<byte> key) => Count == 0 ? null : Find(key, Hash(key, _ignoreCase));

    /// <summary>
    /// The "*.suffix" lookup shared by routes and rules (keys ".example.com"): the first key among the suffixes of
    /// <paramref name="host"/> that start at a dot at or after <paramref name="start"/>, longest first ("a.b.c" tries
    /// ".b.c", then ".c"). Returns the dot's index (search again from it + 1 for the next, shorter match), or -1.
    /// </summary>
    public int FindSuffix(ReadOnlySpan<byte> host, int start, out T? value)
    {
        value = null;
        if (Count == 0) return -1;
        for (int i = Math.Max(start, 1); i < host.Length; i++)
        {
            if (host[i] != (byte)'.') continue;
            int length = host.Length - i;
            if (length > MaxKeyLength) continue;
            if (length < MinKeyLength) break;
            if (Find(host[i..]) is { } v)
            {
                value = v;
                return i;
            }
        }
        return -1;
    }

    /// <summary>Looks up <paramref name="key"/> whose <see cref="Hash"/> (same case mode) is <paramref name="hash"/>.</summary>
    public T? Find(ReadOnlySpan<byte> key, uint hash)
    {
        var entries = _entries;
        int i = (int)(hash & (uint)_mask);
        while (true)
        {
            ref readonly var e = ref entries[i];
            if (e.Key is not { } k) return null;
            if (e.Hash == hash && k.Length == key.Length && (_ignoreCase ? Ascii.EqualsIgnoreCase(key, k) : key.SequenceEqual(k)))
                return e.Value;
            i = (i + 1) & _mask;
        }
    }
}
