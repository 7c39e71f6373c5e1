using System.IO.Pipelines;
using System.Net.Security;

namespace FastGate.Proxy;

/// <summary>
/// Decrypts an SslStream into a pipe for as long as the connection lives: one loop per connection (listener TLS and
/// upstream TLS alike) rather than a stream read per request. SslStream's pooled read state is then rented and
/// returned on the same I/O thread (a read started on one connection's thread and finished on another's empties the
/// pool: about 250 B per request measured upstream, 519 B per request with Kestrel's UseHttps on the listener), and
/// the pipe's reader notices at once when the peer closes.
/// </summary>
internal static class TlsReadLoop
{
    /// <param name="failAsError">Complete the pipe with the failure (as an IOException) rather than as an end of input.</param>
    public static async Task RunAsync(SslStream tls, PipeWriter writer, bool failAsError)
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                int n = await tls.ReadAsync(writer.GetMemory(4096)).ConfigureAwait(false);
                if (n == 0) break;
                writer.Advance(n);
                var flush = await writer.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted || flush.IsCanceled) break;
            }
        }
        catch (Exception e)
        {
            if (failAsError) error = e is IOException ? e : new IOException(e.Message, e);
        }
        try
        {
            await writer.CompleteAsync(error).ConfigureAwait(false);
        }
        catch (InvalidOperationException)
        {
            // the reader side is gone already
        }
    }
}
