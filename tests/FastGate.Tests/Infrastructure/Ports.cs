using System.Net;
using System.Net.Sockets;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// Ports for tests, without the race of "bind port 0, read the number, close, hope nobody takes it". A server in this
/// process binds port 0 itself and reports the port the OS chose (TestGateway, RawUpstream, the Kestrel test apps; a
/// fastgate process is given port 0 and prints its addresses): it needs nothing here. This class covers the rest.
/// </summary>
public static class Ports
{
    /// <summary>
    /// A loopback port on which nothing listens, for as long as the returned value lives: the socket is bound (so no
    /// other socket, in this process or another, can take the port) but never listens, so a connection is refused.
    /// </summary>
    public static RefusingPort Refusing() => new();

    /// <summary>
    /// Starts a server that must be told its port before it binds (nginx, redis-server): takes a port the OS has just
    /// handed out, gives it to <paramref name="tryStart"/>, and when the start fails (null: the port was taken in the
    /// gap, or the server did not come up) tries again with a new port, <paramref name="attempts"/> times in all.
    /// </summary>
    public static async Task<T> StartOnFreePortAsync<T>(Func<int, Task<T?>> tryStart, string what, int attempts = 5,
        Func<string>? lastError = null) where T : class
    {
        for (int attempt = 1; ; attempt++)
        {
            if (await tryStart(Pick()) is { } started) return started;
            if (attempt == attempts)
                throw new InvalidOperationException($"{what} did not start on a free port in {attempts} attempts {lastError?.Invoke()}");
        }
    }

    /// <summary>Synchronous <see cref="StartOnFreePortAsync{T}"/>.</summary>
    public static T StartOnFreePort<T>(Func<int, T?> tryStart, string what, int attempts = 5, Func<string>? lastError = null) where T : class
    {
        for (int attempt = 1; ; attempt++)
        {
            if (tryStart(Pick()) is { } started) return started;
            if (attempt == attempts)
                throw new InvalidOperationException($"{what} did not start on a free port in {attempts} attempts {lastError?.Invoke()}");
        }
    }

    /// <summary>A port the OS has just handed out and that is free again (only for <see cref="StartOnFreePortAsync{T}"/>).</summary>
    private static int Pick()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }
}

/// <summary>A bound, never-listening loopback socket: connections to <see cref="Port"/> are refused.</summary>
public sealed class RefusingPort : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    internal RefusingPort()
    {
        // no SO_REUSEADDR: another socket cannot share the port while this one holds it
        _socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, false);
        _socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
    }

    public int Port => ((IPEndPoint)_socket.LocalEndPoint!).Port;
    public string Address => $"http://127.0.0.1:{Port}";

    public void Dispose() => _socket.Dispose();
}
