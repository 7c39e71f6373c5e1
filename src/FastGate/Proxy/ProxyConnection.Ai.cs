using System.Buffers;
using System.Diagnostics;
using System.Text;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Routing;

namespace FastGate.Proxy;

// The hand-off to the AI stage (src/FastGate/Ai): an admitted request on a route with "ai" is answered by the unified
// OpenAI-compatible endpoint instead of the plain forward. Only such routes reach this file; it may allocate.
internal sealed partial class ProxyConnection
{
    /// <summary>Reads the body (Content-Length, bounded), runs the AI stage, records the request. False: close.</summary>
    private async Task<bool> RunAiAsync(GatewaySnapshot snapshot, RouteModel route, Ai.AiRoute ai, long started)
    {
        var request = _request;
        byte[] body = [];
        bool close = request.WantsClose || _closeRequested || _runtime.IsDraining;
        Ai.AiOutcome outcome;
        var lines = _exchange.ResponseLines.AsSpan(0, _exchange.ResponseLinesLength).ToArray();
        if (request.Framing == BodyFraming.Chunked || (request.Framing == BodyFraming.ContentLength && request.ContentLength > ai.MaxBodyBytes))
        {
            outcome = await Ai.AiStage.ErrorAsync(_output, Call(route, [], lines, close: true, started), 413, RejectReason.AiRequestInvalid,
                request.Framing == BodyFraming.Chunked ? "send the request with Content-Length" : "the request body is larger than this route allows",
                "invalid_request_error", null).ConfigureAwait(false);
            close = true;
        }
        else
        {
            if (request.ExpectContinue && request.HasBody)
            {
                _output.Write(Continue100);
                await _output.FlushAsync().ConfigureAwait(false);
            }
            if (request.Framing == BodyFraming.ContentLength && request.ContentLength > 0)
            {
                body = new byte[request.ContentLength];
                int have = 0;
                _fw.Timing = snapshot;
                StartBodyTiming();
                while (have < body.Length)
                {
                    BeginBodyRead();
                    var result = await _input.ReadAsync().ConfigureAwait(false);
                    EndBodyRead();
                    if (StopReason != RejectReason.None) { StopBodyTiming(); return false; }
                    var buffer = result.Buffer;
                    int take = (int)Math.Min(buffer.Length, body.Length - have);
                    buffer.Slice(0, take).CopyTo(body.AsSpan(have));
                    have += take;
                    CountBodyBytes(take);
                    _input.AdvanceTo(buffer.GetPosition(take));
                    if (have < body.Length && result.IsCompleted) { StopBodyTiming(); return false; }
                }
                StopBodyTiming();
                _fw.Timing = null;
            }
            var call = Call(route, body, lines, close, started);
            outcome = await Ai.AiStage.HandleAsync(ai, call, _output).ConfigureAwait(false);
            outcome.Guard = call.Findings?.Summary;
        }
        _exchange.Status = outcome.Status;
        if (outcome.Reason != RejectReason.None)
        {
            _runtime.Metrics.CountRejection(outcome.Reason);
            NoteRejection(outcome.Reason);
        }
        long tokens = outcome.PromptTokens + outcome.CompletionTokens;
        if (tokens > 0 && _exchange.TokenChargeCount > 0)
        {
            long now = _runtime.Limiters.Time.GetTimestamp();
            for (int i = 0; i < _exchange.TokenChargeCount; i++)
            {
                ref var c = ref _exchange.TokenCharges[i];
                c.Limiter.Limiter.Charge(c.Key.AsSpan(0, c.Length), tokens, now);
            }
        }
        if (tokens > 0) route.Metrics.RecordTokens(tokens);
        _exchange.TokenChargeCount = 0;
        _exchange.ReleaseLeases();
        route.Metrics.Record(_exchange.Status, Stopwatch.GetElapsedTime(started).TotalSeconds);
        _fw.Ai = outcome;
        Observe(route, started, outcome.Reason);
        return !close && !outcome.ClientGone;
    }

    private Ai.AiCall Call(RouteModel route, byte[] body, byte[] lines, bool close, long started)
    {
        var path = _request.CanonicalPath;
        if (route.StripPrefix.Length > 0 && path.StartsWith(route.StripPrefix)) path = path[route.StripPrefix.Length..];
        return new Ai.AiCall
        {
            IsGet = _request.Method == Http.HttpMethod.Get,
            IsPost = _request.Method == Http.HttpMethod.Post,
            Path = Encoding.ASCII.GetString(path),
            Body = body,
            Consumer = _exchange.Consumer is { IsConsumer: true } c ? c.Id : null,
            RequestId = CurrentRequestId().ToArray(),
            ExtraLines = lines,
            Close = close,
            Started = started,
            Exchange = _exchange,
        };
    }
}
