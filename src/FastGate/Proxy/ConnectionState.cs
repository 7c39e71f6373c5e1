using FastGate.Http;
using Microsoft.Extensions.ObjectPool;

namespace FastGate.Proxy;

/// <summary>
/// The per-connection buffers (request and response heads with their header tables, request-id scratch). Pooled,
/// so a new connection reuses a warmed-up set instead of allocating one.
/// </summary>
internal sealed class ConnectionState
{
    public RequestHead Request { get; } = new();
    public ResponseHead Response { get; } = new();
    public byte[] RequestId { get; } = new byte[32];
    public FastGate.Policy.PolicyResult PolicyResult { get; } = new();
    /// <summary>The admission state of the connection's current request (over <see cref="Request"/> and <see cref="PolicyResult"/>).</summary>
    public FastGate.Pipeline.Exchange Exchange { get; }

    public ConnectionState() => Exchange = new FastGate.Pipeline.Exchange(Request, PolicyResult);

    public static ObjectPool<ConnectionState> CreatePool(int maxRetained) =>
        new DefaultObjectPool<ConnectionState>(new StatePolicy(), maxRetained);

    private sealed class StatePolicy : PooledObjectPolicy<ConnectionState>
    {
        public override ConnectionState Create() => new();

        public override bool Return(ConnectionState state)
        {
            state.Request.Reset();
            state.Response.Reset();
            return true;
        }
    }
}
