using System.Buffers;
using System.IO.Pipelines;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using FastGate.Observability;
using FastGate.Security;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace FastGate.Hosting;

/// <summary>
/// TLS termination as Kestrel connection middleware: an SslStream over the transport's pipes, handshake with the
/// listener's current options (<see cref="ListenerTls"/>), then the connection's Transport replaced by a decrypted
/// duplex pipe for the rest of the chain (FastGate's ProxyConnection).
/// <para>
/// Why not Kestrel's UseHttps: its pipe adapter reads the SslStream from whichever thread the application asks on, and
/// measured 519 B per keep-alive request (the fastgate+tls compare row). Here one read loop per connection
/// (<see cref="Proxy.TlsReadLoop"/>, as for upstream TLS) fills the decrypted pipe, and writes go through a StreamPipeWriter that completes synchronously when the
/// socket takes the bytes.
/// </para>
/// </summary>
internal sealed class TlsTermination
{
    private static readonly StreamPipeWriterOptions s_writerOptions = new(minimumBufferSize: 16384, leaveOpen: true);

    private readonly ConnectionDelegate _next;
    private readonly ListenerTls _tls;
    private readonly TimeSpan _handshakeTimeout;
    private readonly string _listener;
    private readonly Observability.GatewayMetrics _metrics;

    public TlsTermination(ConnectionDelegate next, ListenerTls tls, TimeSpan handshakeTimeout, string listener, Observability.GatewayMetrics metrics)
    {
        _next = next;
        _tls = tls;
        _handshakeTimeout = handshakeTimeout;
        _listener = listener;
        _metrics = metrics;
    }

    public async Task OnConnectionAsync(ConnectionContext context)
    {
        var transport = context.Transport;
        var ssl = new SslStream(new TransportStream(transport), leaveInnerStreamOpen: true);
        try
        {
            using (var timeout = new CancellationTokenSource(_handshakeTimeout))
            {
                try
                {
                    await ssl.AuthenticateAsServerAsync(_tls.SelectOptionsAsync, null, timeout.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException or ObjectDisposedException
                                               or System.ComponentModel.Win32Exception)
                {
                    _metrics.TlsHandshakeFailures.WithLabels(_listener).Inc();
                    return; // not TLS, a refused client certificate, too slow, or gone: close without a word
                }
            }
            context.Features.Set<ITlsConnectionFeature>(new TlsConnectionFeature(ssl.RemoteCertificate));
            // the ALPN outcome: Http2Dispatch (and Kestrel's HTTP/2 behind it) read it on a listener with "http2"
            context.Features.Set<Microsoft.AspNetCore.Server.Kestrel.Core.Features.ITlsApplicationProtocolFeature>(new AlpnFeature(ssl.NegotiatedApplicationProtocol.Protocol));

            var pool = context.Features.Get<IMemoryPoolFeature>()?.MemoryPool ?? MemoryPool<byte>.Shared;
            var decrypted = new Pipe(new PipeOptions(pool, PipeScheduler.Inline, PipeScheduler.Inline, useSynchronizationContext: false));
            var output = PipeWriter.Create(ssl, s_writerOptions);
            var pump = Proxy.TlsReadLoop.RunAsync(ssl, decrypted.Writer, failAsError: false); // an end of input, as on a plain connection
            context.Transport = new DuplexPipe(decrypted.Reader, output);
            try
            {
                await _next(context).ConfigureAwait(false);
            }
            finally
            {
                context.Transport = transport;
                await decrypted.Reader.CompleteAsync().ConfigureAwait(false);
                try
                {
                    await output.CompleteAsync().ConfigureAwait(false); // flushes what is left (normally nothing)
                    // close_notify; a client that stopped reading cannot hold the connection open with it
                    await ssl.ShutdownAsync().WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or TimeoutException
                                               or OperationCanceledException or ConnectionAbortedException or ConnectionResetException)
                {
                    // the peer is gone already, or not reading
                }
                transport.Input.CancelPendingRead(); // ends the read loop if it still waits for the client
                await pump.ConfigureAwait(false);
            }
        }
        finally
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
        }
    }

    private sealed class AlpnFeature(ReadOnlyMemory<byte> protocol) : Microsoft.AspNetCore.Server.Kestrel.Core.Features.ITlsApplicationProtocolFeature
    {
        public ReadOnlyMemory<byte> ApplicationProtocol { get; } = protocol;
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }

    private sealed class TlsConnectionFeature(X509Certificate? certificate) : ITlsConnectionFeature
    {
        public X509Certificate2? ClientCertificate { get; set; } = certificate switch
        {
            null => null,
            X509Certificate2 c2 => c2,
            _ => X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()),
        };

        public Task<X509Certificate2?> GetClientCertificateAsync(CancellationToken cancellationToken) => Task.FromResult(ClientCertificate);
    }

    /// <summary>
    /// The encrypted side: a Stream over the transport's pipes for SslStream. Reads copy from the transport pipe
    /// (synchronously when bytes are there; one pooled state machine otherwise, rented and returned on the read loop's
    /// thread); writes copy into the transport pipe and flush. A cancelled pending read is the end of the stream.
    /// </summary>
    private sealed class TransportStream(IDuplexPipe transport) : Stream
    {
        private readonly PipeReader _input = transport.Input;
        private readonly PipeWriter _output = transport.Output;

        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken = default)
        {
            if (destination.IsEmpty) return new ValueTask<int>(0);
            if (_input.TryRead(out var result))
            {
                if (!result.Buffer.IsEmpty || result.IsCompleted || result.IsCanceled) return new ValueTask<int>(Consume(result, destination.Span));
                _input.AdvanceTo(result.Buffer.Start);
            }
            return ReadSlowAsync(destination, cancellationToken);
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<int> ReadSlowAsync(Memory<byte> destination, CancellationToken cancellationToken)
        {
            while (true)
            {
                var result = await _input.ReadAsync(cancellationToken).ConfigureAwait(false);
                if (!result.Buffer.IsEmpty || result.IsCompleted || result.IsCanceled) return Consume(result, destination.Span);
                _input.AdvanceTo(result.Buffer.Start);
            }
        }

        private int Consume(in ReadResult result, Span<byte> destination)
        {
            var buffer = result.Buffer;
            if (buffer.IsEmpty)
            {
                _input.AdvanceTo(buffer.Start);
                return 0; // completed, or cancelled by the middleware at the end of the connection
            }
            int n = (int)Math.Min(buffer.Length, destination.Length);
            buffer.Slice(0, n).CopyTo(destination);
            _input.AdvanceTo(buffer.GetPosition(n));
            return n;
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
        {
            var pending = _output.WriteAsync(source, cancellationToken);
            if (!pending.IsCompletedSuccessfully) return AwaitFlush(pending);
            return pending.Result.IsCompleted ? ValueTask.FromException(new IOException("the connection is closed")) : default;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private static async ValueTask AwaitFlush(ValueTask<FlushResult> pending)
        {
            var result = await pending.ConfigureAwait(false);
            if (result.IsCompleted) throw new IOException("the connection is closed");
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override void Flush() { }
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask; // every write flushes
    }
}
