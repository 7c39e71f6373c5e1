using FastGate.Configuration;
using FastGate.Http;
using FastGate.Policy;
using FastGate.Routing;
using FastGate.Security;

namespace FastGate.Pipeline;

/// <summary>What the admission stage decided for a request.</summary>
public enum AdmissionVerdict : byte
{
    /// <summary>Admitted: rate limits, then forwarding (the connection loop).</summary>
    Forward,
    /// <summary>A canned rejection: <see cref="Exchange.Reason"/> (blocked client, no route, 401/403 authentication).</summary>
    Reject,
    /// <summary>A policy rule (or the default action) answers: deny or respond, from <see cref="Exchange.Policy"/>.</summary>
    PolicyReply,
    /// <summary>A CORS preflight on a CORS route, answered by the gateway (<see cref="Exchange.CorsAllowed"/>).</summary>
    Preflight,
    /// <summary>A bearer token needs validating off the synchronous path: await <see cref="Exchange.PendingToken"/>, then decide again.</summary>
    NeedsToken,
    /// <summary>Over a rate limit: the 429 (or 503) of <see cref="Exchange.RateLimitedBy"/> with <see cref="Exchange.RateLimitRejection"/>.</summary>
    RateLimited,
    /// <summary>A cluster limiter's answer comes from Redis: await <see cref="Exchange.PendingLimit"/>, <see cref="Exchange.CompleteLimit"/>, then decide again.</summary>
    NeedsLimiter,
}

/// <summary>
/// The admission decision: one synchronous, allocation-free function of the snapshot and the exchange, in one order —
/// route → client address → block list → CORS preflight → authentication (API key, mTLS device, bearer token) →
/// policy → no route (404) → authentication requirements → WAF phase 1 → rate limits (the route's, then each matched
/// rule's). The connection loop and <c>/admin/explain</c> both call it, so what explain says is what the request path
/// does (explain's exchange is a dry run: it names the limits and consumes none). Its asynchronous steps are handed
/// back — a bearer token that misses the validated-token cache as <see cref="AdmissionVerdict.NeedsToken"/>, a
/// cluster limiter's Redis call as <see cref="AdmissionVerdict.NeedsLimiter"/>: the caller awaits, records the result
/// (<see cref="Exchange.CompleteToken"/>, <see cref="Exchange.CompleteLimit"/>) and calls Decide again, which resumes
/// where it stopped.
/// </summary>
public static class Admission
{
    public static AdmissionVerdict Decide(GatewaySnapshot snapshot, Exchange x, Observability.GatewayObservability? observability)
    {
        var request = x.Request;
        x.Snapshot = snapshot;
        if (x.Stage == AdmissionStage.Limits) return x.ContinueLimits(snapshot);
        if (x.Stage == AdmissionStage.Start)
        {
            // route, on the canonical host and path
            x.Route = snapshot.Router.Match(request);
            // client address: the peer, or the client a trusted proxy names in X-Forwarded-For
            if (snapshot.HasTrustedProxies) x.ResolveClient(snapshot.TrustedProxies);
            // block list (anomaly detection's autoBlock, the admin API's blocks)
            if (observability is not null && observability.IsBlocked(x.ClientIp)) return x.Reject(RejectReason.ClientBlocked);
            // CORS preflight: before authentication (browsers send no credentials on it)
            if (x.Route?.Cors is { } cors && request.TryGetHeader("origin"u8, out var origin) && CorsModel.IsPreflight(request))
            {
                x.CorsAllowed = cors.IsAllowed(origin);
                return AdmissionVerdict.Preflight;
            }
            // authentication: a presented API key identifies its consumer for rules and limits; else a bearer token
            x.Consumer = snapshot.Authenticator.Authenticate(request);
            if (x.Consumer is null && snapshot.Jwt.IsEnabled)
            {
                var pending = snapshot.Jwt.AuthenticateAsync(request);
                if (!pending.IsCompletedSuccessfully)
                {
                    x.PendingToken = pending;
                    x.Stage = AdmissionStage.AwaitingToken;
                    return AdmissionVerdict.NeedsToken;
                }
                x.CompleteToken(pending.Result);
            }
        }
        else if (x.Stage is AdmissionStage.AwaitingToken or AdmissionStage.AwaitingLimit)
        {
            throw new InvalidOperationException("the pending step was not completed (call CompleteToken or CompleteLimit before deciding again)");
        }
        x.Stage = AdmissionStage.Decided;

        // policy: one evaluation over the compiled index
        var policy = snapshot.Policy;
        policy.Evaluate(new RequestFacts(request, x.ClientAddress, x.Route?.Order ?? -1, x.Consumer, x.Device), x.Policy);
        if (x.Policy.Verdict != PolicyVerdict.Allow) return AdmissionVerdict.PolicyReply;
        if (x.Route is not { } route) return x.Reject(RejectReason.NoRoute);

        // a route or rule that requires authentication: 401 without an accepted credential, 403 without a scope or claim
        var auth = policy.CheckAuthentication(route.Auth, x.Policy, x.Consumer, x.Device is not null);
        if (auth != AuthOutcome.Satisfied)
            return x.Reject(auth == AuthOutcome.Forbidden ? RejectReason.InsufficientScope
                : x.TokenRefused ? RejectReason.InvalidToken : RejectReason.AuthenticationRequired);
        // WAF (routes with a profile only): phase 1 on the head, and phase 2 too when there is no body (else the
        // connection runs it on the buffered body before the lease)
        if (route.Waf is { } waf && Waf.WafStep.Inspect(waf, x)) return x.Reject(RejectReason.WafBlocked);
        x.Cluster = x.Policy.RouteRule >= 0 ? snapshot.Clusters[policy.Rules[x.Policy.RouteRule].RouteToClusterIndex] : route.Cluster;
        // admitted so far: the response lines it carries (HSTS, CORS grant), then its rate limits
        x.DecorateResponse(route);
        return x.BeginLimits(snapshot);
    }
}

public enum AdmissionStage : byte { Start, AwaitingToken, Decided, Limits, AwaitingLimit }

/// <summary>
/// One request's admission state, owned by its connection (or by one explain call) and reused: the request, the
/// effective client, the route and cluster, the identities, the policy result and the decision. <see cref="Begin"/>
/// starts a request; nothing of the previous one survives it.
/// </summary>
public sealed partial class Exchange
{
    private readonly byte[] _forwardedIp = new byte[ForwardedFor.MaxTextLength];
    private byte[] _peerIp = [];
    private ClientAddress _peerAddress;
    private byte[] _clientIpBuffer = [];
    private int _clientIpLength;

    public Exchange(RequestHead request, PolicyResult policy)
    {
        Request = request;
        Policy = policy;
    }

    public RequestHead Request { get; }
    /// <summary>The forward side of the request's state (the connection's timing, body, try, lease, observability).</summary>
    internal Proxy.ForwardState Forward { get; } = new();
    /// <summary>The snapshot the request is decided and forwarded by (set by Decide).</summary>
    public GatewaySnapshot? Snapshot { get; internal set; }
    public PolicyResult Policy { get; }
    public AdmissionStage Stage { get; internal set; }
    public RouteModel? Route { get; internal set; }
    public Proxy.ClusterModel? Cluster { get; internal set; }
    /// <summary>The caller an API key or a bearer token identified, or null.</summary>
    public ConsumerModel? Consumer { get; internal set; }
    /// <summary>The allowlisted device of the connection's client certificate (set by the connection), or null.</summary>
    public DeviceModel? Device { get; private set; }
    /// <summary>A bearer token was presented and refused (the 401 then says invalid_token).</summary>
    public bool TokenRefused { get; private set; }
    public bool CorsAllowed { get; internal set; }
    /// <summary>The WAF evaluation of this request (routes with a WAF profile), or null.</summary>
    public Waf.WafTransaction? Waf { get; internal set; }
    /// <summary>The WAF transaction and request view this exchange reuses request after request (kept by Begin).</summary>
    internal Waf.WafTransaction? WafScratch;
    internal Waf.WafRequest? WafRequestScratch;
    /// <summary>The WAF's phase 2 waits for the body (the connection runs it after buffering).</summary>
    public bool WafBodyPending { get; internal set; }
    /// <summary>Why the request is refused (with <see cref="AdmissionVerdict.Reject"/>).</summary>
    public RejectReason Reason { get; private set; }
    /// <summary>The token validation to await (with <see cref="AdmissionVerdict.NeedsToken"/>).</summary>
    public ValueTask<JwtResult> PendingToken { get; internal set; }
    /// <summary>The peer is a trusted proxy (its Forwarded / X-Real-IP are forwarded).</summary>
    public bool PeerTrusted { get; private set; }
    public ClientAddress ClientAddress { get; private set; }
    /// <summary>The TCP peer's address text (appended to X-Forwarded-For upstream).</summary>
    public ReadOnlySpan<byte> PeerIp => _peerIp;
    /// <summary>The effective client's address text: what rules, rate-limit keys, the anomaly detector and the log see.</summary>
    public ReadOnlySpan<byte> ClientIp => _clientIpBuffer.AsSpan(0, _clientIpLength);

    // ---- what the response carries and what the request holds of its limits (the connection fills them) ----
    /// <summary>The status of the response the client got (the gateway's or the upstream's).</summary>
    public int Status { get; internal set; }
    /// <summary>Header lines added to the client response (HSTS, CORS grants, RateLimit headers): the first <see cref="ResponseLinesLength"/> bytes.</summary>
    internal byte[] ResponseLines = new byte[256];
    internal int ResponseLinesLength;
    /// <summary>Concurrency-limiter slots held until the response ends (released by the connection, never dropped).</summary>
    internal (RateLimiting.RateLimiter Limiter, RateLimiting.RateLimitDecision Decision)[] Leases = new (RateLimiting.RateLimiter, RateLimiting.RateLimitDecision)[2];
    internal int LeaseCount;
    /// <summary>Token quotas (and their keys) the response's reported usage is charged to.</summary>
    internal (RateLimiting.CompiledLimiter Limiter, byte[] Key, int Length)[] TokenCharges = [];
    internal int TokenChargeCount;

    /// <summary>Starts a request from this peer (its address text and value, computed once per connection).</summary>
    public void Begin(byte[] peerIp, ClientAddress peerAddress, DeviceModel? device)
    {
        _peerIp = peerIp;
        _peerAddress = peerAddress;
        _clientIpBuffer = peerIp;
        _clientIpLength = peerIp.Length;
        ClientAddress = peerAddress;
        PeerTrusted = false;
        Device = device;
        Stage = AdmissionStage.Start;
        Route = null;
        Cluster = null;
        Consumer = null;
        TokenRefused = false;
        CorsAllowed = false;
        Waf = null;
        WafBodyPending = false;
        Reason = RejectReason.None;
        PendingToken = default;
        Policy.Reset();
        Status = 0;
        ResponseLinesLength = 0;
        TokenChargeCount = 0; // leases are not dropped here: the connection releases them when a request ends
        RateLimitedBy = null;
        RateLimitRejection = default;
        PendingLimit = default;
        PendingLimiter = null;
    }

    /// <summary>Records the validated (or refused) bearer token; the next Decide resumes after authentication.</summary>
    public void CompleteToken(in JwtResult token)
    {
        Consumer = token.Consumer;
        TokenRefused = token.Status == JwtStatus.Invalid;
        PendingToken = default;
        if (Stage == AdmissionStage.AwaitingToken) Stage = AdmissionStage.Decided;
    }

    internal AdmissionVerdict Reject(RejectReason reason)
    {
        Reason = reason;
        Stage = AdmissionStage.Decided;
        return AdmissionVerdict.Reject;
    }

    /// <summary>
    /// When the peer is a trusted proxy, the client is the right-most X-Forwarded-For address that is not itself
    /// trusted (ForwardedFor has the whole rule); otherwise, and when the header names no one, the peer.
    /// </summary>
    internal void ResolveClient(CidrSet trusted)
    {
        PeerTrusted = trusted.Contains(_peerAddress.Value);
        if (!PeerTrusted) return;
        if (!ForwardedFor.TryResolve(Request, trusted, _forwardedIp, out var client, out int length)) return;
        ClientAddress = client;
        _clientIpBuffer = _forwardedIp;
        _clientIpLength = length;
    }
}
