using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace FastGate.Proxy;

/// <summary>
/// One keep-alive connection to a destination, leased by one request at a time. Plain connections are the socket
/// transport's pipes; TLS connections are an SslStream over the socket (handshake once, at connect) with a pipe on
/// each side: the write side is PipeWriter.Create over the stream, the read side a Pipe filled by one read loop per
/// connection (see <see cref="TlsReadLoop"/>).
/// </summary>
public sealed class UpstreamConnection
{
    // Buffers come from ArrayPool<byte>.Shared (a Pipe given MemoryPool<byte>.Shared uses it directly).
    private static readonly StreamPipeWriterOptions s_tlsWriter = new(minimumBufferSize: 16384, leaveOpen: true);
    private static readonly PipeOptions s_tlsReader = new(pauseWriterThreshold: 65536, resumeWriterThreshold: 32768,
        minimumSegmentSize: 16384, readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false);

    private readonly ConnectionContext? _context;
    private readonly Socket? _socket;
    private readonly SslStream? _tls;
    private readonly Task? _pump;

    internal UpstreamConnection(ConnectionContext context, UpstreamPool pool)
    {
        _context = context;
        Input = context.Transport.Input;
        Output = context.Transport.Output;
        Pool = pool;
    }

    internal UpstreamConnection(Socket socket, SslStream tls, UpstreamPool pool)
    {
        _socket = socket;
        _tls = tls;
        var received = new Pipe(s_tlsReader);
        Input = received.Reader;
        Output = PipeWriter.Create(tls, s_tlsWriter);
        Pool = pool;
        _pump = TlsReadLoop.RunAsync(tls, received.Writer, failAsError: true);
    }

    public UpstreamPool Pool { get; }
    public PipeReader Input { get; }
    public PipeWriter Output { get; }
    public bool IsTls => _tls is not null;
    /// <summary>The native event loop the connection lives on (null: Kestrel's socket transport, or TLS).</summary>
    internal Transport.NativeLoop? Loop => (_context as Transport.NativeSocket)?.Loop;
    /// <summary>The native socket under a plain connection (null: Kestrel's transport, or TLS).</summary>
    internal Transport.NativeSocket? Native => _context as Transport.NativeSocket;
    /// <summary>True once the connection has carried a response (a failure on it may just be a stale keep-alive).</summary>
    public bool Reused { get; internal set; }
    internal long IdleSince { get; set; }

    /// <summary>Breaks the connection: pending reads and writes on it fail (used by the upstream response timeout).</summary>
    public void Abort()
    {
        if (_context is not null)
        {
            _context.Abort(new ConnectionAbortedException("aborted by the gateway"));
            return;
        }
        try
        {
            _socket!.Shutdown(SocketShutdown.Both);
        }
        catch (Exception)
        {
            // already closed
        }
        _socket!.Dispose();
    }

    /// <summary>True when the upstream closed or sent unsolicited bytes while the connection sat idle.</summary>
    internal bool IsStale()
    {
        bool stale;
        try
        {
            if (!Input.TryRead(out var result)) return false;
            stale = result.IsCompleted || result.IsCanceled || !result.Buffer.IsEmpty;
            Input.AdvanceTo(result.Buffer.Start);
        }
        catch (Exception)
        {
            return true; // a TLS connection whose read loop failed
        }
        return stale;
    }

    internal async Task CloseAsync()
    {
        if (_tls is not null)
        {
            Abort(); // ends the read loop (and a tunnel's pending read)
            await CompleteQuietly(Input, Output).ConfigureAwait(false);
            try
            {
                await _pump!.ConfigureAwait(false);
                await _tls.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception)
            {
                // closing a broken connection: nothing left to do
            }
            return;
        }
        await CompleteQuietly(Input, Output).ConfigureAwait(false);
        try
        {
            await _context!.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // closing a broken connection: nothing left to do
        }
    }

    private static async Task CompleteQuietly(PipeReader input, PipeWriter output)
    {
        try
        {
            await input.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // a broken connection
        }
        try
        {
            await output.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // a broken connection
        }
    }
}
