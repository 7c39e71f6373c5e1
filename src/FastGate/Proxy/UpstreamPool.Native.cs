using System.Net;
using FastGate.Http;
using FastGate.Transport;

namespace FastGate.Proxy;

/// <summary>
/// The native transport's part of the pool: a request running on a native event loop opens its plain upstream
/// connections on that loop (connect and all I/O there) and leases idle ones from that loop's own slots, so a
/// connection and the upstream connections it uses never cross threads. Each loop keeps up to maxIdle idle
/// connections; maxConnections bounds all of them together. https:// destinations, host-name destinations and the
/// Kestrel listeners use the shared slots and Kestrel's sockets as before.
/// </summary>
public sealed partial class UpstreamPool
{
    // per loop index, created by that loop on first use (read by the heartbeat's eviction)
    private UpstreamConnection?[]?[]? _loopIdle;

    private bool ConnectsOnLoop => Tls is null && EndPoint is IPEndPoint && NativeLoop.Current is not null;

    private UpstreamConnection?[] SlotsForCaller() =>
        Tls is null && NativeLoop.Current is { } loop ? LoopSlots(loop.Index) : _idle;

    private UpstreamConnection?[] SlotsFor(UpstreamConnection conn) => conn.Loop is { } loop ? LoopSlots(loop.Index) : _idle;

    private UpstreamConnection?[] LoopSlots(int index)
    {
        var all = Volatile.Read(ref _loopIdle);
        if (all is null)
        {
            Interlocked.CompareExchange(ref _loopIdle, new UpstreamConnection?[]?[Configuration.TransportConfigBinder.MaxLoops], null);
            all = _loopIdle!;
        }
        var slots = Volatile.Read(ref all[index]);
        if (slots is null)
        {
            Interlocked.CompareExchange(ref all[index], new UpstreamConnection?[_idle.Length], null);
            slots = all[index]!;
        }
        return slots;
    }

    private int LoopIdleConnections()
    {
        var all = Volatile.Read(ref _loopIdle);
        if (all is null) return 0;
        int n = 0;
        foreach (var slots in all)
        {
            if (slots is null) continue;
            for (int i = 0; i < slots.Length; i++) if (Volatile.Read(ref slots[i]) is not null) n++;
        }
        return n;
    }

    private void ForEachLoopSlots(long now, Action<UpstreamPool, UpstreamConnection?[], long> action)
    {
        var all = Volatile.Read(ref _loopIdle);
        if (all is null) return;
        foreach (var slots in all) if (slots is not null) action(this, slots, now);
    }

    private async ValueTask<(UpstreamConnection? Connection, RejectReason Error)> ConnectOnLoopAsync(TimeSpan timeout)
    {
        var (socket, error) = await NativeLoop.Current!.ConnectAsync((IPEndPoint)EndPoint, timeout).ConfigureAwait(false);
        if (socket is null)
        {
            Interlocked.Decrement(ref _open);
            return (null, error);
        }
        _opened.Inc();
        return (new UpstreamConnection(socket, this), RejectReason.None);
    }
}
