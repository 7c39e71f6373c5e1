using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace FastGate.Http;

/// <summary>Writes bytes straight into a <see cref="PipeWriter"/>'s spans; <see cref="Commit"/> advances it.</summary>
public ref struct HeadWriter
{
    private readonly PipeWriter _output;
    private Span<byte> _span;
    private int _buffered;

    public HeadWriter(PipeWriter output)
    {
        _output = output;
        _span = output.GetSpan();
        _buffered = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(scoped ReadOnlySpan<byte> source)
    {
        if (source.Length <= _span.Length)
        {
            source.CopyTo(_span);
            _span = _span[source.Length..];
            _buffered += source.Length;
            return;
        }
        WriteSlow(source);
    }

    private void WriteSlow(scoped ReadOnlySpan<byte> source)
    {
        while (!source.IsEmpty)
        {
            if (_span.IsEmpty) Grow(Math.Min(source.Length, 4096));
            int n = Math.Min(source.Length, _span.Length);
            source[..n].CopyTo(_span);
            _span = _span[n..];
            _buffered += n;
            source = source[n..];
        }
    }

    public void Write(byte b)
    {
        if (_span.IsEmpty) Grow(1);
        _span[0] = b;
        _span = _span[1..];
        _buffered++;
    }

    public void WriteNumber(long value)
    {
        if (_span.Length < 20) Grow(20);
        Utf8Formatter.TryFormat(value, _span, out int written);
        _span = _span[written..];
        _buffered += written;
    }

    /// <summary>Writes "HTTP/1.1 &lt;status&gt; &lt;reason&gt;\r\n"; an empty reason becomes the standard text.</summary>
    public void WriteStatusLine(int status, scoped ReadOnlySpan<byte> reason = default)
    {
        Write("HTTP/1.1 "u8);
        WriteNumber(status);
        Write((byte)' ');
        Write(reason.IsEmpty ? CannedResponses.StatusTextBytes(status) : reason);
        Write("\r\n"u8);
    }

    /// <summary>Writes "Name: value\r\n".</summary>
    public void WriteHeader(scoped ReadOnlySpan<byte> nameWithColonSpace, scoped ReadOnlySpan<byte> value)
    {
        Write(nameWithColonSpace);
        Write(value);
        Write("\r\n"u8);
    }

    private void Grow(int hint)
    {
        _output.Advance(_buffered);
        _buffered = 0;
        _span = _output.GetSpan(hint);
    }

    public void Commit()
    {
        _output.Advance(_buffered);
        _buffered = 0;
        _span = default;
    }
}
