using System.IO.Pipelines;

namespace FastGate.Proxy;

/// <summary>
/// The client connection's output, counting every byte written to it (heads, bodies with their chunked framing,
/// interim responses, tunnelled bytes), so the access log's bytes_out is what the client was sent. One per
/// connection; only the connection's loop writes to it, so the count is a plain field.
/// </summary>
internal sealed class CountingPipeWriter(PipeWriter inner) : PipeWriter
{
    /// <summary>Bytes advanced (committed for sending) since the connection opened.</summary>
    public long Written { get; private set; }

    public override void Advance(int bytes)
    {
        inner.Advance(bytes);
        Written += bytes;
    }

    public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

    public override void CancelPendingFlush() => inner.CancelPendingFlush();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

    public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => inner.UnflushedBytes;
}
