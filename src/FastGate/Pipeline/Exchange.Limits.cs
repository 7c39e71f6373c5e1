using FastGate.Http;
using FastGate.RateLimiting;
using FastGate.Routing;
using FastGate.Security;

namespace FastGate.Pipeline;

// The admission's last stage: the request's rate limits, and the response lines an admitted request carries. A local
// limiter answers synchronously; a cluster limiter's Redis call is handed back (NeedsLimiter) and the stage resumes at
// the same limiter when the caller completes it. What a passed limiter leaves with the request — a concurrency slot to
// release, a token quota to charge from the response, RateLimit headers — is recorded here, on the exchange.
public sealed partial class Exchange
{
    private readonly byte[] _keyBuffer = new byte[512];
    private int _limitSet, _limitIndex, _pendingKeyLength;
    private long _limitsNow;

    /// <summary>The clock of the runtime's limiters (set once by the connection); the system clock when unset.</summary>
    public TimeProvider? LimiterClock { get; set; }
    /// <summary>Explain's exchange: the limits are named, never acquired (explain consumes nothing).</summary>
    public bool DryRun { get; set; }
    /// <summary>The connection is TLS (HSTS lines apply); set once by the connection.</summary>
    public bool IsTls { get; set; }
    /// <summary>The limiter that refused the request (with <see cref="AdmissionVerdict.RateLimited"/>).</summary>
    public CompiledLimiter? RateLimitedBy { get; private set; }
    public RateLimitDecision RateLimitRejection { get; private set; }
    /// <summary>The cluster limiter's answer to await (with <see cref="AdmissionVerdict.NeedsLimiter"/>).</summary>
    public ValueTask<RateLimitDecision> PendingLimit { get; private set; }
    internal CompiledLimiter? PendingLimiter { get; private set; }

    /// <summary>Records the awaited cluster limiter's answer; the next Decide goes on with the limiter after it.</summary>
    public void CompleteLimit(in RateLimitDecision decision)
    {
        if (Stage != AdmissionStage.AwaitingLimit || PendingLimiter is not { } limiter)
            throw new InvalidOperationException("no limiter is pending");
        PendingLimit = default;
        PendingLimiter = null;
        if (!Apply(limiter, decision, _pendingKeyLength)) return; // refused: Stage is Decided, the verdict RateLimited
        _limitIndex++;
        Stage = AdmissionStage.Limits;
    }

    /// <summary>Whether the last completed limit refused the request (the Decide after CompleteLimit then says so).</summary>
    private bool Refused => RateLimitedBy is not null;

    internal AdmissionVerdict BeginLimits(Configuration.GatewaySnapshot snapshot)
    {
        if (DryRun) return AdmissionVerdict.Forward;
        _limitSet = -1;
        _limitIndex = 0;
        _limitsNow = (LimiterClock ?? TimeProvider.System).GetTimestamp();
        Stage = AdmissionStage.Limits;
        return ContinueLimits(snapshot);
    }

    /// <summary>The route's limiters, then each matched rule's, from where the stage stopped.</summary>
    internal AdmissionVerdict ContinueLimits(Configuration.GatewaySnapshot snapshot)
    {
        if (Refused) return AdmissionVerdict.RateLimited;
        var route = Route!;
        for (; _limitSet < Policy.MatchedCount; _limitSet++, _limitIndex = 0)
        {
            var limiters = _limitSet < 0 ? route.Limiters : snapshot.RuleLimiters[Policy.Matched[_limitSet]];
            for (; _limitIndex < limiters.Length; _limitIndex++)
            {
                var limiter = limiters[_limitIndex];
                int keyLength = limiter.BuildKey(_keyBuffer, Request, ClientIp, route.IdBytes, Consumer, Device);
                // a token quota only checks here (cost 0: refused while in debt); the response pays
                long cost = limiter.CountsTokens ? 0 : 1;
                var pending = keyLength >= 0
                    ? limiter.Limiter.AcquireAsync(_keyBuffer.AsSpan(0, keyLength), cost, _limitsNow)
                    : limiter.Limiter.AcquireWithoutKeyAsync(cost);
                if (!pending.IsCompletedSuccessfully)
                {
                    PendingLimit = pending;
                    PendingLimiter = limiter;
                    _pendingKeyLength = keyLength;
                    Stage = AdmissionStage.AwaitingLimit;
                    return AdmissionVerdict.NeedsLimiter;
                }
                if (!Apply(limiter, pending.Result, keyLength)) return AdmissionVerdict.RateLimited;
            }
        }
        Stage = AdmissionStage.Decided;
        return AdmissionVerdict.Forward;
    }

    /// <summary>One limiter's answer: counted; a pass leaves its lease, charge and headers; a refusal releases the leases taken.</summary>
    private bool Apply(CompiledLimiter limiter, in RateLimitDecision decision, int keyLength)
    {
        if (!decision.IsAllowed)
        {
            limiter.Rejected.Inc();
            RateLimitedBy = limiter;
            RateLimitRejection = decision;
            ReleaseLeases();
            Stage = AdmissionStage.Limits; // decided: a Decide after this says RateLimited again
            return false;
        }
        limiter.Allowed.Inc();
        if (limiter.IsConcurrency) AddLease(limiter, decision);
        if (limiter.CountsTokens && keyLength >= 0) AddTokenCharge(limiter, _keyBuffer.AsSpan(0, keyLength));
        if (limiter.Definition.QuotaHeaders) AppendQuotaHeaders(limiter, decision);
        return true;
    }

    /// <summary>Gives back every concurrency slot the request holds (when it ends, or is refused, or its client goes).</summary>
    public void ReleaseLeases()
    {
        for (int i = 0; i < LeaseCount; i++)
        {
            Leases[i].Limiter.Release(Leases[i].Decision);
            Leases[i] = default;
        }
        LeaseCount = 0;
    }

    private void AddLease(CompiledLimiter limiter, in RateLimitDecision decision)
    {
        if (LeaseCount == Leases.Length) Array.Resize(ref Leases, Leases.Length * 2);
        Leases[LeaseCount++] = (limiter.Limiter, decision);
    }

    private void AddTokenCharge(CompiledLimiter limiter, ReadOnlySpan<byte> key)
    {
        if (TokenChargeCount == TokenCharges.Length) Array.Resize(ref TokenCharges, TokenChargeCount + 2);
        ref var slot = ref TokenCharges[TokenChargeCount++];
        if (slot.Key is null || slot.Key.Length < key.Length) slot.Key = new byte[Math.Max(64, key.Length)];
        key.CopyTo(slot.Key);
        slot.Limiter = limiter;
        slot.Length = key.Length;
    }

    private void AppendQuotaHeaders(CompiledLimiter limiter, in RateLimitDecision decision)
    {
        int need = RateLimitHeaders.MaxLength(limiter.Definition);
        if (ResponseLinesLength + need > ResponseLines.Length) Array.Resize(ref ResponseLines, Math.Max(ResponseLines.Length * 2, ResponseLinesLength + need));
        int written = RateLimitHeaders.Write(ResponseLines.AsSpan(ResponseLinesLength), decision, limiter.Definition);
        if (written > 0) ResponseLinesLength += written;
    }

    /// <summary>Response lines of an admitted request: HSTS on TLS, the CORS grant for an allowed origin (Vary for every origin).</summary>
    internal void DecorateResponse(RouteModel route)
    {
        ResponseLinesLength = 0;
        if (IsTls && route.HstsLine is { } hsts) AppendResponseLine(hsts);
        if (route.Cors is not { } cors || !Request.TryGetHeader("origin"u8, out var origin)) return;
        AppendResponseLine(CorsModel.VaryLine);
        if (!cors.IsAllowed(origin)) return;
        AppendResponseLine("Access-Control-Allow-Origin: "u8);
        AppendResponseLine(origin);
        AppendResponseLine("\r\n"u8);
        AppendResponseLine(cors.ResponseGrantLines);
    }

    internal void AppendResponseLine(ReadOnlySpan<byte> bytes)
    {
        if (ResponseLinesLength + bytes.Length > ResponseLines.Length) Array.Resize(ref ResponseLines, Math.Max(ResponseLines.Length * 2, ResponseLinesLength + bytes.Length));
        bytes.CopyTo(ResponseLines.AsSpan(ResponseLinesLength));
        ResponseLinesLength += bytes.Length;
    }
}
