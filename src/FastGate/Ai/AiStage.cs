using System.Buffers;
using System.Net.Http;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using FastGate.Http;

namespace FastGate.Ai;

/// <summary>What the connection loop hands the AI stage: the admitted request, its body read whole.</summary>
internal sealed class AiCall
{
    public required bool IsGet { get; init; }
    public required bool IsPost { get; init; }
    /// <summary>The path with the route's stripPrefix removed.</summary>
    public required string Path { get; init; }
    public required byte[] Body { get; init; }
    public string? Consumer { get; init; }
    public required byte[] RequestId { get; init; }
    /// <summary>Response lines the gateway adds (HSTS, CORS, the route's quota headers; the AI quotas' are appended
    /// once they are checked).</summary>
    public required byte[] ExtraLines { get; set; }
    public required bool Close { get; init; }
    public long Started { get; init; }
    /// <summary>The admission's exchange (cluster providers pick their destination with it).</summary>
    public required Pipeline.Exchange Exchange { get; init; }
    /// <summary>The prompt guard's findings of this call, prompt and response (routes with a guard only).</summary>
    public GuardFindings? Findings { get; set; }
}

/// <summary>How an AI call ended.</summary>
internal struct AiOutcome
{
    public int Status;
    public RejectReason Reason;
    public long PromptTokens;
    public long CompletionTokens;
    public bool ClientGone;
    /// <summary>The model alias called (null: none was resolved) and the provider that answered (null: none).</summary>
    public string? Model;
    public string? Provider;
    /// <summary>The prompt guard's findings by kind (the access log's "guard"; null when none).</summary>
    public string? Guard;
}

/// <summary>
/// The AI stage: the unified OpenAI-compatible endpoint. Parses the request, applies the prompt guard, picks a
/// target of the model alias, translates, calls the provider (failing over on 429, 5xx, timeout or connect failure
/// until the first byte goes to the caller), and writes the translated response — a stream event by event.
/// Runs only for routes with <c>ai</c>; plain routes never reach it.
/// </summary>
internal static class AiStage
{
    public static async Task<AiOutcome> HandleAsync(AiRoute ai, AiCall call, PipeWriter output)
    {
        var outcome = new AiOutcome();
        try
        {
            byte[] body = call.Body;
            bool chat, embeddings;
            if (ai.Templates.Count > 0 && ai.Templates.TryGetValue(call.Path, out var template))
            {
                // a prompt template: the caller's { "input": ... } fills the stored prompt; the rest is a chat completion
                if (!call.IsPost)
                    return await ErrorAsync(output, call, 405, RejectReason.AiRequestInvalid, "a template is called with POST { \"input\": ... }", "invalid_request_error", "method_not_allowed");
                var filled = template.Fill(call.Body, out var why, out var param);
                if (filled is null)
                    return await WriteAsync(output, call, 400, AiResponseWriter.Error(why!, "invalid_request_error", null, param), "application/json", RejectReason.AiRequestInvalid, default);
                body = filled;
                chat = true;
                embeddings = false;
            }
            else
            {
                if (ai.TemplatesOnly)
                    return await ErrorAsync(output, call, 404, RejectReason.AiRequestInvalid, "unknown endpoint: this route serves its templates only", "invalid_request_error", "unknown_url");
                if (call.IsGet && call.Path.EndsWith("/models", StringComparison.Ordinal)) return await ModelsAsync(ai, call, output);
                chat = call.IsPost && call.Path.EndsWith("/chat/completions", StringComparison.Ordinal);
                embeddings = call.IsPost && call.Path.EndsWith("/embeddings", StringComparison.Ordinal);
                if (!chat && !embeddings)
                    return await ErrorAsync(output, call, 404, RejectReason.AiRequestInvalid, "unknown endpoint: use POST /v1/chat/completions, POST /v1/embeddings or GET /v1/models", "invalid_request_error", "unknown_url");
            }
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(body);
            }
            catch (JsonException)
            {
                return await ErrorAsync(output, call, 400, RejectReason.AiRequestInvalid, "the request body is not valid JSON", "invalid_request_error", null);
            }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var m) || m.ValueKind != JsonValueKind.String)
                    return await ErrorAsync(output, call, 400, RejectReason.AiRequestInvalid, "\"model\" is required", "invalid_request_error", null);
                var name = m.GetString()!;
                if (!ai.Models.TryGetValue(name, out var model))
                    return await ErrorAsync(output, call, 404, RejectReason.AiRequestInvalid, $"the model '{name}' does not exist", "invalid_request_error", "model_not_found");
                if (!ai.Allows(call.Consumer, name))
                    return await ErrorAsync(output, call, 403, RejectReason.AiRequestInvalid, $"you may not use the model '{name}'", "permission_error", "model_not_allowed");
                outcome.Model = name;
                // token quotas per consumer and model: refused while the (key, model) budget is spent, before anything is sent
                List<(RateLimiting.CompiledLimiter Limiter, byte[] Key)>? charges = null;
                if (ai.Quotas.Length > 0)
                {
                    var refused = await CheckQuotasAsync(ai, call, name, output);
                    if (refused.Refused is { } refusal)
                    {
                        refusal.Model = name;
                        return refusal;
                    }
                    charges = refused.Charges;
                    if (refused.Lines is { Length: > 0 } quotaLines) call.ExtraLines = [.. call.ExtraLines, .. quotaLines];
                }
                bool stream = chat && root.TryGetProperty("stream", out var s) && s.ValueKind == JsonValueKind.True;
                // the prompt guard, before anything leaves the gateway
                AiRequestWriter.Filter filter = static t => t;
                if (ai.Guard is { } guard)
                {
                    var findings = call.Findings = guard.NewFindings();
                    var prompt = PromptText(root, chat);
                    if (guard.IsDenied(prompt, findings))
                        return await ErrorAsync(output, call, 403, RejectReason.AiRequestInvalid, "the prompt matches a denied pattern", "invalid_request_error", "prompt_denied");
                    if (guard.MaxPromptTokens > 0 && Encoding.UTF8.GetByteCount(prompt) / 4 > guard.MaxPromptTokens)
                        return await ErrorAsync(output, call, 400, RejectReason.AiRequestInvalid, "the prompt is longer than this route allows", "invalid_request_error", "context_length_exceeded");
                    if (guard.HasDetectors)
                    {
                        if (guard.Action == GuardAction.Block)
                        {
                            guard.Scan(prompt, out bool found, findings);
                            if (found)
                                return await ErrorAsync(output, call, 400, RejectReason.AiRequestInvalid, "the prompt contains personal data or secrets", "invalid_request_error", "sensitive_data");
                        }
                        else filter = t => guard.Scan(t, out _, findings);
                    }
                }
                return await CallAsync(ai, call, output, root, model, chat, stream, filter, outcome, charges);
            }
        }
        catch (AiRequestException e)
        {
            return await ErrorAsync(output, call, 400, RejectReason.AiRequestInvalid, e.Message, "invalid_request_error", null);
        }
    }

    /// <summary>
    /// Checks (at cost 0) each quota that applies to the caller and <paramref name="model"/>; the first one spent
    /// answers 429 (the limiter's status) with Retry-After, the RateLimit headers and an OpenAI rate-limit error body.
    /// Otherwise returns the keys the call's tokens are to be charged to (none for a caller without the limiter's key),
    /// and the <c>RateLimit-Policy</c>/<c>RateLimit</c> lines of the quotas with <c>headers</c> (the budget as it was
    /// when the call was admitted: its own tokens are charged after the response, whose head leaves first), written by
    /// the limiters' one header writer (RateLimitHeaders), as on every other route.
    /// </summary>
    private static async Task<(AiOutcome? Refused, List<(RateLimiting.CompiledLimiter, byte[])>? Charges, byte[]? Lines)> CheckQuotasAsync(
        AiRoute ai, AiCall call, string model, PipeWriter output)
    {
        List<(RateLimiting.CompiledLimiter, byte[])>? charges = null;
        byte[]? allowedLines = null;
        int allowedLength = 0;
        var x = call.Exchange;
        byte[]? buffer = null;
        foreach (var quota in ai.Quotas)
        {
            if (!quota.AppliesTo(call.Consumer, model)) continue;
            var limiter = quota.Limiter;
            buffer ??= new byte[512];
            int n = limiter.BuildKey(buffer, x.Request, x.ClientIp, ai.RouteIdBytes, x.Consumer, x.Device);
            byte[]? key = null;
            if (n >= 0 && n + 1 + Encoding.UTF8.GetByteCount(model) <= buffer.Length)
            {
                buffer[n++] = 0x1F; // the model alias after the limiter's key: a budget per model
                n += Encoding.UTF8.GetBytes(model, buffer.AsSpan(n));
                key = buffer.AsSpan(0, n).ToArray();
            }
            var decision = key is not null
                ? await limiter.Limiter.AcquireAsync(key, 0, limiter.Limiter.Time.GetTimestamp()).ConfigureAwait(false)
                : await limiter.Limiter.AcquireWithoutKeyAsync(0).ConfigureAwait(false);
            if (!decision.IsAllowed)
            {
                limiter.Rejected.Inc();
                var lines = new byte[RateLimiting.RateLimitHeaders.MaxLength(limiter.Definition)];
                int length = Math.Max(0, RateLimiting.RateLimitHeaders.Write(lines, decision, limiter.Definition));
                // a quota that could not be checked (its Redis store is unavailable and onStoreFailure is deny) says so:
                // the caller's budget is not the cause, and an operator reading the error must not go looking for it there
                var body = decision.Outcome == RateLimiting.RateLimitOutcome.StoreUnavailable
                    ? AiResponseWriter.Error(
                        $"token quota '{limiter.Definition.Id}' cannot be checked: its store is unavailable; retry in {decision.RetryAfterSeconds} s",
                        "tokens", "rate_limit_store_unavailable")
                    : AiResponseWriter.Error(
                        $"token quota '{limiter.Definition.Id}' for the model '{model}' is spent; retry in {decision.RetryAfterSeconds} s",
                        "tokens", "rate_limit_exceeded");
                var refused = await WriteAsync(output, call, decision.StatusCode, body, "application/json", RejectReason.RateLimited, default,
                    lines.AsMemory(0, length)).ConfigureAwait(false);
                return (refused, null, null);
            }
            limiter.Allowed.Inc();
            if (key is not null) (charges ??= []).Add((limiter, key));
            if (limiter.Definition.QuotaHeaders)
            {
                int need = allowedLength + RateLimiting.RateLimitHeaders.MaxLength(limiter.Definition);
                if (allowedLines is null || allowedLines.Length < need) Array.Resize(ref allowedLines, need);
                allowedLength += Math.Max(0, RateLimiting.RateLimitHeaders.Write(allowedLines.AsSpan(allowedLength), decision, limiter.Definition));
            }
        }
        return (null, charges, allowedLines?[..allowedLength]);
    }

    private static string PromptText(JsonElement root, bool chat)
    {
        var sb = new StringBuilder();
        if (chat && root.TryGetProperty("messages", out var ms) && ms.ValueKind == JsonValueKind.Array)
        {
            foreach (var m in ms.EnumerateArray())
                if (m.ValueKind == JsonValueKind.Object && m.TryGetProperty("content", out var c)) sb.Append(AiRequestWriter.Text(c)).Append('\n');
        }
        else if (root.TryGetProperty("input", out var input))
        {
            if (input.ValueKind == JsonValueKind.String) sb.Append(input.GetString());
            else if (input.ValueKind == JsonValueKind.Array)
                foreach (var x in input.EnumerateArray()) if (x.ValueKind == JsonValueKind.String) sb.Append(x.GetString()).Append('\n');
        }
        return sb.ToString();
    }

    private enum TryResult : byte { Answered, Failover, ClientGone }

    private static async Task<AiOutcome> CallAsync(AiRoute ai, AiCall call, PipeWriter output, JsonElement root, AiModel model, bool chat, bool stream,
        AiRequestWriter.Filter filter, AiOutcome outcome, List<(RateLimiting.CompiledLimiter Limiter, byte[] Key)>? charges)
    {
        long now = Stopwatch.GetTimestamp();
        var order = ai.Order(model, now);
        string lastError = "no provider answered";
        foreach (var target in order)
        {
            var provider = target.Provider;
            if (!chat && provider.Family == ProviderFamily.Anthropic) { lastError = "the provider has no embeddings API"; continue; }
            byte[] body = chat ? AiRequestWriter.Chat(provider.Family, root, target.Model, stream, filter)
                               : AiRequestWriter.Embeddings(provider.Family, root, target.Model, filter);
            // a cluster provider counts against its cluster's resilience, as a forward does (Proxy/ClusterResilience.cs):
            // the circuit breaker's concurrency bound, its maxRetries and retry budget for a try on another
            // destination, its perTryTimeout; retries show in its fastgate_upstream_retries_total
            var resilience = provider.Cluster?.Resilience;
            if (resilience is not null && !resilience.TryEnter())
            {
                // busy, not broken: the next target at once, and no cooldown
                ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, "circuit_open").Inc();
                lastError = $"provider '{provider.Id}' is at its cluster's concurrency bound";
                continue;
            }
            int retrySlots = 0;
            try
            {
                // each key of the provider once at most: a key answered 401/429 is parked and the next one tried
                // a cluster provider: a failed destination is avoided on the next pick (the cluster's other destination)
                Proxy.DestinationModel? avoid = null;
                int destinationTries = provider.Cluster is { } cluster ? Math.Min(1 + cluster.Resilience.MaxRetries, cluster.Destinations.Length) : 1;
                long headTicks = resilience is { PerTryTimeoutTicks: > 0 } ? Math.Min(resilience.PerTryTimeoutTicks, ai.ResponseTimeoutTicks) : ai.ResponseTimeoutTicks;
                for (int keyTry = 0; keyTry < Math.Max(1, provider.Keys.Count); keyTry++)
                {
                    int key = provider.Keys.Next(Stopwatch.GetTimestamp(), out var keyValue);
                    if (key == -2) { lastError = "every key of the provider is parked"; break; }
                    var destination = provider.Cluster?.Pick(call.Exchange, avoid);
                    var baseUrl = destination is not null ? destination.Address.TrimEnd('/') + provider.BasePath : provider.BaseUrl!;
                    using var request = new HttpRequestMessage(System.Net.Http.HttpMethod.Post, Url(provider, baseUrl, target.Model, chat, stream))
                    {
                        Content = new ByteArrayContent(body),
                    };
                    request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                    if (provider.HostFor(destination) is { } host) request.Headers.Host = host;
                    if (keyValue is not null) AddKey(request, provider, keyValue);
                    if (provider.Family == ProviderFamily.Anthropic) request.Headers.TryAddWithoutValidation("anthropic-version", "2023-06-01");
                    HttpResponseMessage response;
                    using var headTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(headTicks / (double)Stopwatch.Frequency));
                    string failure;
                    // a stream's connection links itself to this try as it writes the request (ProviderStream.cs)
                    var link = stream ? new ProviderLink() : null;
                    try
                    {
                        ProviderLink.Current = link;
                        response = await provider.Http.SendAsync(request, headTimeout.Token).ConfigureAwait(false); // returns at the head: the body is streamed
                    }
                    catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
                    {
                        ProviderLink.Current = null;
                        failure = e is OperationCanceledException ? "timeout" : "connect";
                        destination?.Report(e is OperationCanceledException ? Proxy.UpstreamOutcome.Timeout : Proxy.UpstreamOutcome.ConnectFailed);
                        ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, failure).Inc();
                        if (--destinationTries > 0 && resilience!.TryStartRetry(e is OperationCanceledException ? Proxy.RetryReason.Timeout : Proxy.RetryReason.Connect))
                        {
                            retrySlots++;
                            avoid = destination;
                            keyTry--;
                            continue;
                        }
                        target.CoolDown(Stopwatch.GetTimestamp() + ai.CooldownTicks);
                        lastError = $"provider '{provider.Id}' failed ({failure})";
                        goto nextTarget;
                    }
                    ProviderLink.Current = null;
                    using (response)
                    {
                        int status = (int)response.StatusCode;
                        destination?.Report(status >= 500 ? Proxy.UpstreamOutcome.ServerError : Proxy.UpstreamOutcome.Success);
                        if ((status is 401 or 429) && keyValue is not null)
                        {
                            var retryAfter = response.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(status == 401 ? 300 : 30);
                            provider.Keys.Park(keyValue, Stopwatch.GetTimestamp() + (long)(retryAfter.TotalSeconds * Stopwatch.Frequency));
                            ai.Metrics.KeysParked.WithLabels(ai.RouteId, provider.Id).Inc();
                            lastError = $"provider '{provider.Id}' answered {status}";
                            continue; // the next key
                        }
                        if (status == 429 || status >= 500)
                        {
                            if (--destinationTries > 0 && resilience!.TryStartRetry(Proxy.RetryReason.Status))
                            {
                                retrySlots++;
                                ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();
                                avoid = destination;
                                keyTry--;
                                continue;
                            }
                            target.CoolDown(Stopwatch.GetTimestamp() + ai.CooldownTicks);
                            ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();
                            lastError = $"provider '{provider.Id}' answered {status}";
                            goto nextTarget;
                        }
                        var usage = ai.Usage(call.Consumer, model.Name, provider.Id);
                        outcome.Provider = provider.Id;
                        var relayed = await RelayAsync(ai, call, output, provider, target, usage, chat, stream, response, status, outcome, link).ConfigureAwait(false);
                        if (relayed is not { } result)
                        {
                            // the provider broke off before anything reached the caller (a body cut short, a stream with no event yet): the next target
                            destination?.Report(Proxy.UpstreamOutcome.ServerError);
                            target.CoolDown(Stopwatch.GetTimestamp() + ai.CooldownTicks);
                            ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, "broken").Inc();
                            lastError = $"provider '{provider.Id}' broke off its response";
                            goto nextTarget;
                        }
                        // the quotas are charged before the usage series counts the call (a reader that sees the count sees the charge)
                        long tokens = result.PromptTokens + result.CompletionTokens;
                        if (charges is not null && tokens > 0)
                            foreach (var (limiter, quotaKey) in charges) limiter.Limiter.Charge(quotaKey, tokens, limiter.Limiter.Time.GetTimestamp());
                        usage.Answered(result.Status >= 400, result.PromptTokens, result.CompletionTokens, target.CostPico(result.PromptTokens, result.CompletionTokens));
                        return result;
                    }
                }
                // all keys parked: this target is unusable for now
                target.CoolDown(Stopwatch.GetTimestamp() + ai.CooldownTicks);
                ai.Metrics.Failovers.WithLabels(ai.RouteId, provider.Id, "keys").Inc();
            }
            finally
            {
                if (resilience is not null)
                {
                    resilience.Exit();
                    resilience.EndRetries(retrySlots);
                }
            }
        nextTarget:;
        }
        ai.Usage(call.Consumer, model.Name, "").NoProvider();
        var failed = await ErrorAsync(output, call, 502, RejectReason.AiProvidersFailed, "no provider could answer: " + lastError, "api_error", "providers_failed");
        failed.Model = model.Name; // the access log names the model even when no provider answered
        return failed;
    }

    private static string Url(AiProvider p, string baseUrl, string model, bool chat, bool stream) => p.Family switch
    {
        ProviderFamily.Anthropic => baseUrl + "/v1/messages",
        ProviderFamily.Gemini => baseUrl + "/v1beta/models/" + Uri.EscapeDataString(model)
            + (!chat ? ":batchEmbedContents" : stream ? ":streamGenerateContent?alt=sse" : ":generateContent"),
        ProviderFamily.Azure => baseUrl + "/openai/deployments/" + Uri.EscapeDataString(model) + (chat ? "/chat/completions" : "/embeddings")
            + "?api-version=" + Uri.EscapeDataString(p.ApiVersion ?? ""),
        _ => baseUrl + (chat ? "/chat/completions" : "/embeddings"),
    };

    private static void AddKey(HttpRequestMessage request, AiProvider p, string key)
    {
        switch (p.Family)
        {
            case ProviderFamily.Anthropic: request.Headers.TryAddWithoutValidation("x-api-key", key); break;
            case ProviderFamily.Gemini: request.Headers.TryAddWithoutValidation("x-goog-api-key", key); break;
            case ProviderFamily.Azure: request.Headers.TryAddWithoutValidation("api-key", key); break;
            default: request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + key); break;
        }
    }

    /// <summary>Relays the provider's response; null when the provider broke off before anything was written to the
    /// caller (the caller can still be answered by the next target).</summary>
    private static async Task<AiOutcome?> RelayAsync(AiRoute ai, AiCall call, PipeWriter output, AiProvider provider, AiTarget target, AiUsageSeries usage,
        bool chat, bool stream, HttpResponseMessage response, int status, AiOutcome outcome, ProviderLink? link)
    {
        var content = await response.Content.ReadAsStreamAsync().ConfigureAwait(false);
        var maskResponses = ai.Guard is { MaskResponses: true, HasDetectors: true, Action: GuardAction.Mask } g ? g : null;
        string id = "chatcmpl-" + Encoding.ASCII.GetString(call.RequestId);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (status >= 300 || !stream)
        {
            byte[]? bytes;
            try
            {
                bytes = await ReadBoundedAsync(content, ai.MaxResponseBytes, response.Content.Headers.ContentLength).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or HttpRequestException)
            {
                return null;
            }
            if (bytes is null)
                return await WriteAsync(output, call, 502, AiResponseWriter.Error("the provider's response is too large", "api_error", null), "application/json",
                    RejectReason.AiProvidersFailed, outcome);
            if (status >= 300)
                return await WriteAsync(output, call, status, AiResponseWriter.ProviderError(status, bytes), "application/json", RejectReason.None, outcome);
            byte[] translated;
            var tokens = new AiUsage();
            Func<string, string> mask = maskResponses is null ? static t => t : t => maskResponses.Scan(t, out _, call.Findings);
            try
            {
                using var doc = JsonDocument.Parse(bytes);
                var root = doc.RootElement;
                if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) tokens.Read(u);
                translated = provider.Family switch
                {
                    ProviderFamily.Anthropic or ProviderFamily.Gemini when chat => AiResponseWriter.Chat(provider.Family, root, target.Model, id, created, mask, ref tokens),
                    ProviderFamily.Gemini => AiResponseWriter.Embeddings(root, target.Model),
                    _ => maskResponses is null ? bytes : AiResponseWriter.MaskCopy(root, mask),
                };
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
            {
                return await WriteAsync(output, call, 502, AiResponseWriter.Error("the provider's response could not be read", "api_error", null), "application/json",
                    RejectReason.AiProvidersFailed, outcome);
            }
            outcome.PromptTokens = tokens.Prompt;
            outcome.CompletionTokens = tokens.Completion;
            var written = await WriteAsync(output, call, 200, translated, "application/json", RejectReason.None, outcome);
            usage.FirstToken.Observe(Stopwatch.GetElapsedTime(call.Started).TotalSeconds); // a whole response: its first token arrives with it
            return written;
        }

        // a stream: translated event by event as it arrives; the head goes out with the first event
        var translator = new AiStreamTranslator(provider.Family, target.Model, id, created, maskResponses, call.Findings);
        var framer = new SseFramer(1 << 20);
        var buffer = ArrayPool<byte>.Shared.Rent(8192); // the read buffer goes back to the pool with the framer's
        try
        {
            bool headSent = false, broke = false, drained = false;
            // a chunked body is followed by the connection's ProviderStream: when the last read left nothing to decode
            // and the body is not complete, this method waits for the network (its own box, made once per call) and
            // the handler's read then completes synchronously: no async box of the handler's per wait, so none per event
            var waiter = link is not null && response.Headers.TransferEncodingChunked == true ? link : null;
            outcome.Status = 200;
            ValueTask<int> nextData = default;
            bool waiting = false;
            while (true)
            {
                int n;
                try
                {
                    if (waiting) { waiting = false; await nextData.ConfigureAwait(false); }
                    else if (waiter is { NeedsNetwork: true } && (drained || waiter.NoBodyYet)) await waiter.Stream!.WaitForDataAsync().ConfigureAwait(false);
                    n = await content.ReadAsync(buffer).ConfigureAwait(false);
                    drained = n < buffer.Length; // a full buffer may have left decodable bytes in the handler's
                }
                catch (Exception e) when (e is IOException or HttpRequestException or ObjectDisposedException)
                {
                    if (!headSent) return null; // nothing sent yet: the next target answers
                    broke = true; // the provider broke off: the caller is told, after what was sent
                    break;
                }
                if (n == 0) break;
                if (!framer.Append(buffer.AsSpan(0, n)))
                {
                    broke = true; // an event over the framer's bound: not a stream to relay further
                    break;
                }
                try
                {
                    while (framer.TryNext(out var data)) translator.OnEvent(data);
                }
                catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
                {
                    broke = true;
                    break;
                }
                if (translator.Pending.Length == 0) continue;
                if (!headSent)
                {
                    WriteStreamHead(output, call);
                    headSent = true;
                    usage.FirstToken.Observe(Stopwatch.GetElapsedTime(call.Started).TotalSeconds);
                }
                WriteChunk(output, translator.Pending);
                translator.Take();
                // the wait for the provider's next bytes starts before the flush, on the thread that finished the last
                // one: over TLS the wait is SslStream's pooled async box, and a box rented on the thread it was just
                // returned to is reused (after the flush, on the transport's thread, it was a new one now and then:
                // ~45 B per event, measured). The flush and the wait then run side by side.
                if (!translator.Done && waiter is { NeedsNetwork: true } && drained)
                {
                    nextData = waiter.Stream!.WaitForDataAsync();
                    waiting = true;
                }
                var flush = await output.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    outcome.ClientGone = true;
                    outcome.PromptTokens = translator.Usage.Prompt; // what the provider reported so far
                    outcome.CompletionTokens = translator.Usage.Completion;
                    return outcome;
                }
                if (translator.Done) break;
            }
            if (broke) translator.Abort();
            else translator.Finish();
            if (!headSent) WriteStreamHead(output, call);
            WriteChunk(output, translator.Pending);
            output.Write("0\r\n\r\n"u8);
            var last = await output.FlushAsync().ConfigureAwait(false);
            outcome.ClientGone = last.IsCompleted;
            outcome.PromptTokens = translator.Usage.Prompt;
            outcome.CompletionTokens = translator.Usage.Completion;
            return outcome;
        }
        finally
        {
            framer.Dispose();
            translator.Dispose();
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>A whole response body, at most <paramref name="max"/> bytes (null when larger). With a Content-Length it
    /// is read into one array of that size; otherwise through a pooled buffer.</summary>
    private static async Task<byte[]?> ReadBoundedAsync(Stream s, long max, long? length)
    {
        if (length > max) return null;
        if (length is { } exact)
        {
            var body = new byte[exact];
            int have = 0;
            while (have < body.Length)
            {
                int read = await s.ReadAsync(body.AsMemory(have)).ConfigureAwait(false);
                if (read == 0) throw new IOException("the provider's response ended before its Content-Length");
                have += read;
            }
            return body;
        }
        var ms = new MemoryStream();
        var buffer = ArrayPool<byte>.Shared.Rent(8192);
        try
        {
            int n;
            while ((n = await s.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                if (ms.Length + n > max) return null;
                ms.Write(buffer, 0, n);
            }
            return ms.ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static async Task<AiOutcome> ModelsAsync(AiRoute ai, AiCall call, PipeWriter output)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            foreach (var name in ai.ModelNames)
            {
                if (!ai.Allows(call.Consumer, name)) continue;
                w.WriteStartObject();
                w.WriteString("id", name);
                w.WriteString("object", "model");
                w.WriteNumber("created", 0);
                w.WriteString("owned_by", "fastgate");
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return await WriteAsync(output, call, 200, buffer.WrittenSpan.ToArray(), "application/json", RejectReason.None, default);
    }

    internal static Task<AiOutcome> ErrorAsync(PipeWriter output, AiCall call, int status, RejectReason reason, string message, string type, string? code) =>
        WriteAsync(output, call, status, AiResponseWriter.Error(message, type, code), "application/json", reason, default);

    private static async Task<AiOutcome> WriteAsync(PipeWriter output, AiCall call, int status, byte[] body, string contentType, RejectReason reason, AiOutcome outcome,
        ReadOnlyMemory<byte> lines = default)
    {
        var w = new HeadWriter(output);
        w.WriteStatusLine(status);
        w.Write("Content-Type: "u8);
        w.Write(Encoding.ASCII.GetBytes(contentType));
        w.Write("\r\nContent-Length: "u8);
        w.WriteNumber(body.Length);
        w.Write("\r\n"u8);
        w.Write(lines.Span);
        Common(ref w, call);
        w.Write(body);
        w.Commit();
        var flush = await output.FlushAsync().ConfigureAwait(false);
        outcome.Status = status;
        outcome.Reason = reason;
        outcome.ClientGone = flush.IsCompleted;
        return outcome;
    }

    private static void Common(ref HeadWriter w, AiCall call)
    {
        w.Write(call.ExtraLines);
        w.Write(DateHeader.Line);
        w.WriteHeader("X-Request-Id: "u8, call.RequestId);
        if (call.Close) w.Write("Connection: close\r\n"u8);
        w.Write("\r\n"u8);
    }

    private static void WriteStreamHead(PipeWriter output, AiCall call)
    {
        var w = new HeadWriter(output);
        w.WriteStatusLine(200);
        w.Write("Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"u8);
        Common(ref w, call);
        w.Commit();
    }

    private static void WriteChunk(PipeWriter output, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        var w = new HeadWriter(output);
        Span<byte> hex = stackalloc byte[16];
        int len = 0;
        for (int v = data.Length; v > 0; v >>= 4) len++;
        for (int i = len - 1, v = data.Length; i >= 0; i--, v >>= 4) hex[i] = (byte)"0123456789abcdef"[v & 0xF];
        w.Write(hex[..len]);
        w.Write("\r\n"u8);
        w.Write(data);
        w.Write("\r\n"u8);
        w.Commit();
    }
}
