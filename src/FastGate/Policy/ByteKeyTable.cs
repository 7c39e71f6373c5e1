using System.Text;

namespace FastGate.Policy;

/// <summary>
/// An immutable open-addressing table keyed by byte strings, looked up with a span (no string, no allocation).
/// Keys of an ignore-case table are stored lower-case and lookups lower-case the probe into a stack buffer.
/// </summary>
internal sealed class ByteKeyTable<T> where T : class
{
    private readonly byte[]?[] _keys;
    private readonly T?[] _values;
    private readonly int[] _hashes;
    private readonly int _mask;
    private readonly bool _ignoreCase;

    public ByteKeyTable(IReadOnlyCollection<KeyValuePair<byte[], T>> entries, bool ignoreCase)
    {
        _ignoreCase = ignoreCase;
        int capacity = 4;
        while (capacity < entries.Count * 2) capacity <<= 1;
        _keys = new byte[capacity][];
        _values = new T[capacity];
        _hashes = new int[capacity];
        _mask = capacity - 1;
        foreach (var (k, v) in entries)
        {
            var key = ignoreCase ? Lower(k) : k;
            int h = Hash(key);
            int i = h & _mask;
            while (_keys[i] is not null)
            {
                if (_keys[i].AsSpan().SequenceEqual(key)) throw new ArgumentException("duplicate key " + Encoding.Latin1.GetString(key));
                i = (i + 1) & _mask;
            }
            _keys[i] = key;
            _values[i] = v;
            _hashes[i] = h;
        }
        Count = entries.Count;
    }

    public int Count { get; }

    public T? Find(ReadOnlySpan<byte> key)
    {
        if (Count == 0) return null;
        if (_ignoreCase)
        {
            if (key.Length > 256) return null;
            Span<byte> lower = stackalloc byte[key.Length];
            System.Text.Ascii.ToLower(key, lower, out _);
            return FindExact(lower);
        }
        return FindExact(key);
    }

    private T? FindExact(ReadOnlySpan<byte> key)
    {
        int h = Hash(key);
        int i = h & _mask;
        while (true)
        {
            var k = _keys[i];
            if (k is null) return null;
            if (_hashes[i] == h && key.SequenceEqual(k)) return _values[i];
            i = (i + 1) & _mask;
        }
    }

    private static int Hash(ReadOnlySpan<byte> key)
    {
        var hc = new HashCode();
        hc.AddBytes(key);
        return hc.ToHashCode();
    }

    private static byte[] Lower(byte[] k)
    {
        var l = new byte[k.Length];
        System.Text.Ascii.ToLower(k, l, out _);
        return l;
    }
}
