using System.Diagnostics;
using FastGate.Configuration;
using FastGate.Http;

namespace FastGate.Proxy;

/// <summary>
/// The forward side of one request's state (its admission side is the rest of <see cref="Pipeline.Exchange"/>):
/// observability, timing read by the heartbeat, the body read before the lease, the try and the upstream lease.
/// Owned by the exchange, so nothing per request lives in the connection's fields. <see cref="Reset"/> starts a
/// request; what a request holds of shared resources (the cluster slot and retry slots, the open try, the leased
/// upstream connection) is not reset but released by its owner (LeaveCluster, EndTry, ReleaseUpstream), so a missed
/// release shows instead of leaking silently.
/// </summary>
internal sealed class ForwardState
{
    public int RequestIdLength;
    public bool HasTrace;
    public bool IncomingTraceValid;
    public string? Upstream;
    public string? Cluster;
    public long UpstreamStart;
    public long UpstreamEnd;
    public RejectReason ObservedReason;
    /// <summary>The client output's byte count when the request began (bytes_out is the difference).</summary>
    public long BytesOutMark;
    public string? DecisionRule;
    /// <summary>On an AI route: how the AI stage ended (model, provider, tokens) for the access log; default otherwise.</summary>
    public Ai.AiOutcome Ai;
    /// <summary>With tracing on: the request's server span and its upstream (client) span, or null.</summary>
    public Activity? ServerSpan;
    public Activity? ClientSpan;
    /// <summary>When the forwarded request's head was complete (the server span's start).</summary>
    public long SpanStart;
    /// <summary>The cluster the request counts against (null: none) and the retry slots it holds: released by LeaveCluster.</summary>
    public ClusterResilience? InCluster;
    public int RetrySlots;
    /// <summary>The destination of the open try: reported once by EndTry.</summary>
    public DestinationModel? TryDestination;
    /// <summary>The leased upstream connection: returned or discarded by ReleaseUpstream (or when the client goes).</summary>
    public UpstreamConnection? ActiveUpstream;
    public volatile bool UpstreamTimedOut;
    /// <summary>The snapshot whose limits the running request is timed by.</summary>
    public GatewaySnapshot? Timing;
    /// <summary>Total request deadline (Stopwatch ticks; MaxValue: none), set from the head and cleared at the response head.</summary>
    public long RequestDeadline = long.MaxValue;
    /// <summary>Why the heartbeat stopped the request (a RejectReason; 0 while it runs).</summary>
    public int StopCode;
    /// <summary>Request body timing: on while the body is read; when the pending client read began (0: not waiting on the client), the time earlier reads waited, the bytes taken so far.</summary>
    public volatile bool TimingBody;
    public long BodyWaitSince;
    public long BodyWaitTicks;
    public long BodyBytes;
    /// <summary>The response's Kestrel-style write deadline, enforced while a client flush is pending.</summary>
    public long WriteDeadline;
    public volatile bool ClientFlushPending;
    /// <summary>The request body bytes read before the lease, whether they are the whole body, and the chunked state where buffering stopped.</summary>
    public int BufferedLength;
    public bool BodyComplete;
    public bool BodyBufferedPartly;
    public ChunkedReader BodyReader;
    public int TrailerLength;
    public RejectReason CopyError;
    public int InterimResponses;
    public long ResponseBytes;
    /// <summary>The token usage read from the response (token quotas).</summary>
    public UsageScanner Usage;

    public void Reset()
    {
        RequestIdLength = 0;
        HasTrace = false;
        IncomingTraceValid = false;
        Upstream = null;
        Cluster = null;
        UpstreamStart = 0;
        UpstreamEnd = 0;
        ObservedReason = RejectReason.None;
        DecisionRule = null;
        Ai = default;
        SpanStart = 0;
        UpstreamTimedOut = false;
        TrailerLength = 0;
        CopyError = RejectReason.None;
        InterimResponses = 0;
        ResponseBytes = 0;
    }
}
