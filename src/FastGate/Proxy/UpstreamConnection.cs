using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace FastGate.Proxy;

/// <summary>
/// One keep-alive connection to a destination, leased by one request at a time. Plain connections are the socket
/// transport's pipes; TLS connections are pipes over an SslStream over the socket (handshake once, at connect).
/// </summary>
public sealed class UpstreamConnection
{
    // TLS reads take whole records (up to 16 KB); the pipes rent their buffers from ArrayPool<byte>.Shared.
    private static readonly StreamPipeReaderOptions s_tlsReader = new(bufferSize: 16384, minimumReadSize: 2048, leaveOpen: true);
    private static readonly StreamPipeWriterOptions s_tlsWriter = new(minimumBufferSize: 16384, leaveOpen: true);

    private readonly ConnectionContext? _context;
    private readonly Socket? _socket;
    private readonly SslStream? _tls;

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
        Input = PipeReader.Create(tls, s_tlsReader);
        Output = PipeWriter.Create(tls, s_tlsWriter);
        Pool = pool;
    }

    public UpstreamPool Pool { get; }
    public PipeReader Input { get; }
    public PipeWriter Output { get; }
    public bool IsTls => _tls is not null;
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
        if (Input.TryRead(out var result))
        {
            bool stale = result.IsCompleted || result.IsCanceled || !result.Buffer.IsEmpty;
            Input.AdvanceTo(result.Buffer.Start);
            if (stale) return true;
        }
        if (_socket is null) return false;
        // A TLS pipe only reads when asked: ask the socket whether bytes (a close_notify, say) or the end arrived.
        try
        {
            return _socket.Poll(0, SelectMode.SelectRead);
        }
        catch (Exception)
        {
            return true;
        }
    }

    internal async Task CloseAsync()
    {
        if (_tls is not null)
        {
            Abort(); // a read may be pending (a tunnel): fail it before the pipes are completed
            await CompleteQuietly(Input, Output).ConfigureAwait(false);
            try
            {
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
