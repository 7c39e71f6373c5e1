using System.Buffers;
using System.Net;
using System.Net.Sockets;
using FastGate.LoadTest.Load;
using FastGate.LoadTest.Metrics;

namespace FastGate.LoadTest.Client;

/// <summary>
/// One virtual user: one keep-alive TCP connection, its pre-encoded requests, one pooled receive buffer and a
/// reusable waiter. In steady state a request allocates nothing: the socket's ValueTask operations are cached
/// per socket, the user's loop is one long-lived async method and the response is parsed in place.
/// </summary>
public sealed class VirtualUser : IDisposable
{
    /// <summary>Outcome codes below 100 are errors: -(kind + 1).</summary>
    public static int ErrorCode(ErrorKind kind) => -((int)kind + 1);
    public static ErrorKind KindOf(int code) => (ErrorKind)(-code - 1);

    private readonly EndPoint _endpoint;
    private readonly EncodedRequest[] _cycle;
    private byte[] _buf;
    private int _start, _end;
    private Socket? _socket;
    private HttpResponseParser _parser;
    private long _inFlightSinceNs;
    private int _timedOut;

    public VirtualUser(int id, EndPoint endpoint, IReadOnlyList<EncodedRequest> requests, int bufferSize = 64 * 1024)
    {
        if (requests.Count == 0) throw new ArgumentException("a virtual user needs at least one request");
        Id = id;
        CurrentN = id; // users start at different places in their request cycle
        _endpoint = endpoint;
        // Expand weights into a cycle so picking a request is one modulo.
        var cycle = new List<EncodedRequest>();
        foreach (var r in requests)
        {
            for (int i = 0; i < Math.Max(1, r.Spec.Weight); i++) cycle.Add(r);
        }
        _cycle = Interleave(cycle);
        _buf = ArrayPool<byte>.Shared.Rent(bufferSize);
    }

    public int Id { get; }

    public DueWaiter Waiter { get; } = new();

    public EncodedRequest RequestFor(long n) => _cycle[(int)((ulong)n % (ulong)_cycle.Length)];

    public bool Connected => _socket is not null;

    /// <summary>Spreads a weighted list so equal requests do not come in runs (A A A B -> A B A A style).</summary>
    private static EncodedRequest[] Interleave(List<EncodedRequest> list)
    {
        var result = new EncodedRequest[list.Count];
        // Stride through with a step co-prime to the length.
        int step = 1;
        for (int s = list.Count / 2 + 1; s < list.Count; s++)
        {
            if (Gcd(s, list.Count) == 1) { step = s; break; }
        }
        for (int i = 0; i < list.Count; i++) result[i] = list[(int)((long)i * step % list.Count)];
        return result;
    }

    private static int Gcd(int a, int b) => b == 0 ? a : Gcd(b, a % b);

    /// <summary>Opens the connection now (before the run) so the first request does not pay for it.</summary>
    public async Task<bool> ConnectAsync(CancellationToken ct)
    {
        if (_socket is not null) return true;
        var s = new Socket(_endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await s.ConnectAsync(_endpoint, ct).ConfigureAwait(false);
            _socket = s;
            _start = _end = 0;
            return true;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            s.Dispose();
            return false;
        }
    }

    /// <summary>Called by the watchdog: aborts the request in flight when it has run longer than the timeout.</summary>
    public void CheckTimeout(long nowNs, long timeoutNs)
    {
        long since = Volatile.Read(ref _inFlightSinceNs);
        if (since == 0 || nowNs - since < timeoutNs) return;
        if (Interlocked.CompareExchange(ref _timedOut, 1, 0) != 0) return;
        Volatile.Read(ref _socket)?.Dispose();
    }

    /// <summary>Per-request state a <see cref="LoopDriver"/> keeps on the user between begin and end.</summary>
    public long CurrentN, DueNs, ClaimedNs;

    /// <summary>
    /// The virtual user's whole life as one async method: ask the driver for the next request (and wait for its
    /// time), send it, read the response, hand the outcome back. One state machine per user, reused for every
    /// request, so the loop allocates nothing per request.
    /// </summary>
    public async Task RunAsync(LoopDriver driver, NanoClock clock)
    {
        while (true)
        {
            if (!driver.TryBegin(this, out ValueTask wait)) return;
            await wait.ConfigureAwait(false);
            long send = clock.NowNs;
            var request = RequestFor(CurrentN);
            int outcome;
            Volatile.Write(ref _inFlightSinceNs, Math.Max(1, send));
            try
            {
                if (_socket is null && !await ConnectAsync(CancellationToken.None).ConfigureAwait(false))
                {
                    outcome = Interlocked.Exchange(ref _timedOut, 0) == 1 ? ErrorCode(ErrorKind.Timeout) : ErrorCode(ErrorKind.Connect);
                }
                else
                {
                    var socket = _socket!;
                    var bytes = request.Bytes;
                    int sent = 0;
                    while (sent < bytes.Length)
                    {
                        sent += await socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None).ConfigureAwait(false);
                    }
                    _parser.Reset(request.IsHead);
                    outcome = 0;
                    while (outcome == 0)
                    {
                        outcome = TryParseBuffered();
                        if (outcome != 0) break;
                        int n = await socket.ReceiveAsync(_buf.AsMemory(_end), SocketFlags.None).ConfigureAwait(false);
                        if (n == 0)
                        {
                            bool complete = _parser.EndsAtClose;
                            Close();
                            outcome = complete ? _parser.StatusCode : ErrorCode(ErrorKind.Reset);
                        }
                        else
                        {
                            _end += n;
                        }
                    }
                    if (outcome >= 100 && !_parser.KeepAlive) Close();
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
            {
                Close();
                outcome = Interlocked.Exchange(ref _timedOut, 0) == 1 ? ErrorCode(ErrorKind.Timeout) : ErrorCode(ErrorKind.Reset);
            }
            Volatile.Write(ref _inFlightSinceNs, 0);
            if (Interlocked.Exchange(ref _timedOut, 0) == 1) Close(); // the watchdog fired as the response completed
            bool headersOk = outcome != 429 || !request.Expect.RequireRateLimitHeadersOn429 || _parser.HasRateLimitHeaders;
            driver.End(this, request, outcome, headersOk, send, clock.NowNs);
        }
    }

    /// <summary>
    /// Parses what is buffered. Returns the status when a response completed, an error code, or 0 when more
    /// bytes are needed (the buffer then has room at <c>_end</c>).
    /// </summary>
    private int TryParseBuffered()
    {
        if (_end > _start)
        {
            var status = _parser.Parse(_buf.AsSpan(_start, _end - _start), out int consumed);
            _start += consumed;
            if (status == ParseStatus.Complete) return _parser.StatusCode;
            if (status == ParseStatus.Error) { Close(); return ErrorCode(ErrorKind.Protocol); }
        }
        if (_start == _end) _start = _end = 0;
        else if (_end == _buf.Length)
        {
            if (_start == 0) { Close(); return ErrorCode(ErrorKind.Protocol); } // a head larger than the buffer
            Buffer.BlockCopy(_buf, _start, _buf, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        return 0;
    }

    private void Close()
    {
        var s = Interlocked.Exchange(ref _socket, null);
        s?.Dispose();
        _start = _end = 0;
    }

    public void Dispose()
    {
        Close();
        var b = Interlocked.Exchange(ref _buf, []);
        if (b.Length > 0) ArrayPool<byte>.Shared.Return(b);
    }
}

/// <summary>Decides what a virtual user sends next and when, and records what came back.</summary>
public abstract class LoopDriver
{
    /// <summary>Picks the next request (sets <see cref="VirtualUser.CurrentN"/>) and what to wait for before sending; false: stop.</summary>
    public abstract bool TryBegin(VirtualUser vu, out ValueTask wait);

    /// <summary>The request ended: a status code (>= 100) or a <see cref="VirtualUser.ErrorCode"/>.</summary>
    /// <param name="headersOk">false when a 429 lacked the rate-limit headers its request requires</param>
    public abstract void End(VirtualUser vu, EncodedRequest request, int outcome, bool headersOk, long sendNs, long endNs);
}
