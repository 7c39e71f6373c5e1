using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace FastGate.Proxy;

/// <summary>One keep-alive connection to a destination, leased by one request at a time.</summary>
public sealed class UpstreamConnection
{
    private readonly ConnectionContext _context;

    internal UpstreamConnection(ConnectionContext context, UpstreamPool pool)
    {
        _context = context;
        Pool = pool;
    }

    public UpstreamPool Pool { get; }
    public PipeReader Input => _context.Transport.Input;
    public PipeWriter Output => _context.Transport.Output;
    /// <summary>True once the connection has carried a response (a failure on it may just be a stale keep-alive).</summary>
    public bool Reused { get; internal set; }
    internal long IdleSince { get; set; }

    public void Abort() => _context.Abort(new ConnectionAbortedException("aborted by the gateway"));

    /// <summary>True when the upstream closed or sent unsolicited bytes while the connection sat idle.</summary>
    internal bool IsStale()
    {
        if (!Input.TryRead(out var result)) return false;
        bool stale = result.IsCompleted || result.IsCanceled || !result.Buffer.IsEmpty;
        Input.AdvanceTo(result.Buffer.Start);
        return stale;
    }

    internal async Task CloseAsync()
    {
        try
        {
            await Input.CompleteAsync().ConfigureAwait(false);
            await Output.CompleteAsync().ConfigureAwait(false);
            await _context.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // closing a broken connection: nothing left to do
        }
    }
}
