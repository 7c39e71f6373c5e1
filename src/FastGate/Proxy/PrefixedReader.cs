using System.Buffers;
using System.IO.Pipelines;

namespace FastGate.Proxy;

/// <summary>
/// A reader that first hands out bytes already taken off another reader (the part of a chunked response body the
/// WAF's phase 4 read, still framed), then that reader itself: the relay's chunked copy validates and forwards both
/// as one body. One per connection, reused; the prefix buffer is pooled and given back once read.
/// </summary>
internal sealed class PrefixedReader : PipeReader
{
    private PipeReader _inner = null!;
    private byte[]? _prefix;
    private int _start, _end;

    public void Start(byte[] prefix, int length, PipeReader inner)
    {
        _prefix = prefix;
        _start = 0;
        _end = length;
        _inner = inner;
    }

    /// <summary>Prefix bytes not read yet (bytes after the end of the message: the connection cannot be reused).</summary>
    public int PrefixLeft => _prefix is null ? 0 : _end - _start;

    public void Release()
    {
        if (_prefix is { } p) ArrayPool<byte>.Shared.Return(p);
        _prefix = null;
        _start = _end = 0;
        _inner = null!;
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
        _prefix is not null && _start < _end
            ? new ValueTask<ReadResult>(new ReadResult(new ReadOnlySequence<byte>(_prefix, _start, _end - _start), false, false))
            : _inner.ReadAsync(cancellationToken);

    public override bool TryRead(out ReadResult result)
    {
        if (_prefix is not null && _start < _end)
        {
            result = new ReadResult(new ReadOnlySequence<byte>(_prefix, _start, _end - _start), false, false);
            return true;
        }
        return _inner.TryRead(out result);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_prefix is not null && ReferenceEquals(consumed.GetObject(), _prefix))
        {
            _start = consumed.GetInteger();
            return;
        }
        _inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => _inner.CancelPendingRead();
    public override void Complete(Exception? exception = null) { }
}
