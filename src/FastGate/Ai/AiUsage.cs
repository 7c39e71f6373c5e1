using System.Collections.Concurrent;
using System.Text.Json;
using Prometheus;

namespace FastGate.Ai;

/// <summary>The identity of one usage series: route, consumer ("" for none), model alias, provider id ("" when none answered).</summary>
public readonly record struct AiUsageKey(string Route, string Consumer, string Model, string Provider);

/// <summary>
/// One usage series: its counters (Interlocked, read by /admin/usage) and its Prometheus children, bound once when
/// the series is created, so a request only increments.
/// </summary>
public sealed class AiUsageSeries
{
    private long _requests, _errors, _prompt, _completion, _costPico;

    internal AiUsageSeries(AiUsageKey key, AiMetrics m)
    {
        Key = key;
        Ok = m.Requests.WithLabels(key.Route, key.Consumer, key.Model, key.Provider, "ok");
        Error = m.Requests.WithLabels(key.Route, key.Consumer, key.Model, key.Provider, "error");
        Failed = m.Requests.WithLabels(key.Route, key.Consumer, key.Model, key.Provider, "failed");
        PromptTokens = m.Tokens.WithLabels(key.Route, key.Consumer, key.Model, key.Provider, "prompt");
        CompletionTokens = m.Tokens.WithLabels(key.Route, key.Consumer, key.Model, key.Provider, "completion");
        Cost = m.Cost.WithLabels(key.Route, key.Consumer, key.Model, key.Provider);
        FirstToken = m.FirstToken.WithLabels(key.Route, key.Consumer, key.Model, key.Provider);
    }

    public AiUsageKey Key { get; }
    internal Counter.Child Ok { get; }
    internal Counter.Child Error { get; }
    internal Counter.Child Failed { get; }
    internal Counter.Child PromptTokens { get; }
    internal Counter.Child CompletionTokens { get; }
    internal Counter.Child Cost { get; }
    internal Histogram.Child FirstToken { get; }

    public long Requests => Volatile.Read(ref _requests);
    public long Errors => Volatile.Read(ref _errors);
    public long Prompt => Volatile.Read(ref _prompt);
    public long Completion => Volatile.Read(ref _completion);
    /// <summary>Cost in 10^-12 of the price table's currency unit.</summary>
    public long CostPico => Volatile.Read(ref _costPico);

    /// <summary>One call that a provider answered (<paramref name="error"/>: with a status of 400 or more). The request
    /// count goes last, so a reader that sees it sees the call's tokens and cost too.</summary>
    internal void Answered(bool error, long prompt, long completion, long costPico)
    {
        AddTokens(prompt, completion, costPico);
        if (error)
        {
            Interlocked.Increment(ref _errors);
            Error.Inc();
        }
        else Ok.Inc();
        Interlocked.Increment(ref _requests);
    }

    /// <summary>One call no provider could answer (502 providers_failed).</summary>
    internal void NoProvider()
    {
        Interlocked.Increment(ref _errors);
        Failed.Inc();
        Interlocked.Increment(ref _requests);
    }

    private void AddTokens(long prompt, long completion, long costPico)
    {
        if (prompt > 0)
        {
            Interlocked.Add(ref _prompt, prompt);
            PromptTokens.Inc(prompt);
        }
        if (completion > 0)
        {
            Interlocked.Add(ref _completion, completion);
            CompletionTokens.Inc(completion);
        }
        if (costPico > 0)
        {
            Interlocked.Add(ref _costPico, costPico);
            Cost.Inc(costPico / 1e12);
        }
    }
}

/// <summary>
/// The usage series of one gateway (one per <see cref="Observability.GatewayMetrics"/>, so they outlive reloads), with
/// bounded cardinality: a route holds at most its <c>maxUsageSeries</c> distinct (consumer, model, provider) series;
/// later ones count in the route's "other" series (consumer, model and provider "other"). Lookups of existing series
/// are lock-free (ConcurrentDictionary reads, a struct key: no allocation); only the first call of a new series adds.
/// </summary>
public sealed class AiUsageStore
{
    public const string Other = "other";
    private readonly ConcurrentDictionary<AiUsageKey, AiUsageSeries> _series = new();
    private readonly ConcurrentDictionary<string, RouteCount> _routes = new(StringComparer.Ordinal);
    private readonly AiMetrics _metrics;

    private sealed class RouteCount(AiUsageSeries other)
    {
        public int Count;
        public readonly AiUsageSeries Other = other;
        public long Overflowed;
    }

    internal AiUsageStore(AiMetrics metrics) => _metrics = metrics;

    /// <summary>The series of <paramref name="key"/>, or its route's "other" series when the route has <paramref name="max"/> already.</summary>
    public AiUsageSeries Get(in AiUsageKey key, int max)
    {
        if (_series.TryGetValue(key, out var s)) return s;
        return Add(key, max);
    }

    private AiUsageSeries Add(AiUsageKey key, int max)
    {
        var route = _routes.GetOrAdd(key.Route, static (r, m) => new RouteCount(new AiUsageSeries(new AiUsageKey(r, Other, Other, Other), m)), _metrics);
        if (Interlocked.Increment(ref route.Count) > max)
        {
            Interlocked.Decrement(ref route.Count);
            if (_series.TryGetValue(key, out var raced)) return raced; // added meanwhile by another call
            Interlocked.Increment(ref route.Overflowed);
            return route.Other;
        }
        var created = new AiUsageSeries(key, _metrics);
        var s = _series.GetOrAdd(key, created);
        if (!ReferenceEquals(s, created)) Interlocked.Decrement(ref route.Count); // another call added it first
        return s;
    }

    /// <summary>Every series, the "other" ones included (those with no calls left out), ordered by route, consumer, model, provider.</summary>
    public List<AiUsageSeries> Snapshot()
    {
        var list = new List<AiUsageSeries>(_series.Values);
        foreach (var r in _routes.Values) if (r.Other.Requests > 0) list.Add(r.Other);
        list.Sort(static (a, b) =>
        {
            int c = string.CompareOrdinal(a.Key.Route, b.Key.Route);
            if (c == 0) c = string.CompareOrdinal(a.Key.Consumer, b.Key.Consumer);
            if (c == 0) c = string.CompareOrdinal(a.Key.Model, b.Key.Model);
            if (c == 0) c = string.CompareOrdinal(a.Key.Provider, b.Key.Provider);
            return c;
        });
        return list;
    }

    /// <summary>Calls that went to a route's "other" series because the route had its maximum of series.</summary>
    public long Overflowed(string route) => _routes.TryGetValue(route, out var r) ? Volatile.Read(ref r.Overflowed) : 0;

    /// <summary>The /admin/usage body: one entry per series and the totals (ids of consumers, models and providers only; never a key).</summary>
    public void Write(Utf8JsonWriter w)
    {
        var all = Snapshot();
        long requests = 0, errors = 0, prompt = 0, completion = 0, cost = 0;
        w.WritePropertyName("usage");
        w.WriteStartArray();
        foreach (var s in all)
        {
            w.WriteStartObject();
            w.WriteString("route", s.Key.Route);
            w.WriteString("consumer", s.Key.Consumer);
            w.WriteString("model", s.Key.Model);
            w.WriteString("provider", s.Key.Provider);
            WriteCounts(w, s.Requests, s.Errors, s.Prompt, s.Completion, s.CostPico);
            w.WriteEndObject();
            requests += s.Requests; errors += s.Errors; prompt += s.Prompt; completion += s.Completion; cost += s.CostPico;
        }
        w.WriteEndArray();
        w.WriteStartObject("totals");
        WriteCounts(w, requests, errors, prompt, completion, cost);
        w.WriteEndObject();
        w.WriteStartObject("overflowed");
        foreach (var (route, r) in _routes.OrderBy(r => r.Key, StringComparer.Ordinal)) w.WriteNumber(route, Volatile.Read(ref r.Overflowed));
        w.WriteEndObject();
    }

    private static void WriteCounts(Utf8JsonWriter w, long requests, long errors, long prompt, long completion, long costPico)
    {
        w.WriteNumber("requests", requests);
        w.WriteNumber("errors", errors);
        w.WriteNumber("promptTokens", prompt);
        w.WriteNumber("completionTokens", completion);
        w.WriteNumber("cost", (decimal)costPico / 1_000_000_000_000m);
    }
}
