using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Ai;

// routes[].ai: the unified OpenAI-compatible endpoint of a route (what the user writes, how it is bound and checked).

/// <summary>An AI route: providers, model aliases and the prompt guard.</summary>
public sealed record AiRouteConfig
{
    public IReadOnlyList<AiProviderConfig> Providers { get; init; } = [];
    public IReadOnlyList<AiModelConfig> Models { get; init; } = [];
    /// <summary>The largest request body accepted (the body is read whole before it is translated).</summary>
    public long MaxBodyBytes { get; init; } = 1_048_576;
    /// <summary>The largest non-streamed provider response read.</summary>
    public long MaxResponseBytes { get; init; } = 8_388_608;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Time to the provider's response head (a stream is not cut off once it has started).</summary>
    public TimeSpan ResponseTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>How long a target that failed (429, 5xx, timeout, connect failure) is skipped.</summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromSeconds(30);
    public AiGuardConfig? Guard { get; init; }
    /// <summary>Per-consumer allowed models; when given, a caller without an entry may use none (403).</summary>
    public IReadOnlyList<AiAccessConfig> Access { get; init; } = [];
    /// <summary>The price table: per "provider:model" target, the price of 1M prompt and completion tokens (cost metrics).</summary>
    public IReadOnlyList<AiPriceConfig> Prices { get; init; } = [];
    /// <summary>The most distinct (consumer, model, provider) usage series the route keeps; later ones count as "other".</summary>
    public int MaxUsageSeries { get; init; } = 1000;
    /// <summary>Token quotas per consumer and model: a token rate limit applied to each (key, model alias) on its own.</summary>
    public IReadOnlyList<AiQuotaConfig> Quotas { get; init; } = [];
    /// <summary>Prompt templates as APIs (Ai/AiTemplate.cs): POST { "input": ... } to a template's path.</summary>
    public IReadOnlyList<AiTemplateConfig> Templates { get; init; } = [];
    /// <summary>Serve the templates only: the OpenAI-compatible endpoints answer 404 (callers cannot send prompts of their own).</summary>
    public bool TemplatesOnly { get; init; }
}

public sealed record AiQuotaConfig
{
    /// <summary>The id of a top-level rateLimits entry with unit "tokens" (its rate, burst and key; its state is its own per model).</summary>
    public string RateLimit { get; init; } = "";
    /// <summary>The model aliases it applies to, each with a budget of its own (none: every model of the route).</summary>
    public IReadOnlyList<string> Models { get; init; } = [];
    /// <summary>The consumers it applies to (none: every caller).</summary>
    public IReadOnlyList<string> Consumers { get; init; } = [];
}

public sealed record AiPriceConfig
{
    /// <summary>A "provider:model" target of the route's models.</summary>
    public string Target { get; init; } = "";
    /// <summary>Price of 1M prompt (input) tokens, in the currency the table is written in.</summary>
    public double Input { get; init; }
    /// <summary>Price of 1M completion (output) tokens.</summary>
    public double Completion { get; init; }

    /// <summary>Largest price per 1M tokens accepted (keeps the pico-unit counters far from overflow).</summary>
    public const double MaxPrice = 1_000_000;

    /// <summary>A per-1M-tokens price as the price of one token in 10^-12 units.</summary>
    public static long PerTokenPico(double perMillion) => (long)Math.Round(perMillion * 1_000_000, MidpointRounding.AwayFromZero);
}

public sealed record AiAccessConfig
{
    public string Consumer { get; init; } = "";
    public IReadOnlyList<string> Models { get; init; } = [];
}

public sealed record AiProviderConfig
{
    public string Id { get; init; } = "";
    /// <summary>openai, azure-openai, anthropic, gemini, mistral, deepseek, openai-compatible.</summary>
    public string Kind { get; init; } = "";
    /// <summary>The API's base URL (e.g. https://api.openai.com/v1); or <see cref="Cluster"/>.</summary>
    public string? BaseUrl { get; init; }
    /// <summary>A cluster whose destinations are the base URLs (Pick / Report: the cluster's balancing and health).</summary>
    public string? Cluster { get; init; }
    /// <summary>With <see cref="Cluster"/>: the API path after each destination's address (e.g. "/v1").</summary>
    public string? BasePath { get; init; }
    /// <summary>Environment variables holding keys (none: the provider is called without a key, e.g. Ollama).</summary>
    public IReadOnlyList<string> KeyEnv { get; init; } = [];
    /// <summary>Files holding keys, one per line ('#' comments); re-read every <see cref="KeyReloadInterval"/> (no restart).</summary>
    public IReadOnlyList<string> KeyFiles { get; init; } = [];
    /// <summary>How often key files and variables are checked for changes (off the request path).</summary>
    public TimeSpan KeyReloadInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Azure OpenAI: the api-version query parameter.</summary>
    public string? ApiVersion { get; init; }
    /// <summary>
    /// TLS to an https:// <see cref="BaseUrl"/>: a CA bundle (a self-hosted server behind a private CA), the name the
    /// certificate must carry and SNI (sent as the Host), or no check. A <see cref="Cluster"/> provider takes its
    /// cluster's <c>tls</c>. Default: the system trust store and the URL's host.
    /// </summary>
    public Configuration.UpstreamTlsConfig? Tls { get; init; }
}

public sealed record AiModelConfig
{
    /// <summary>The name callers send as "model".</summary>
    public string Name { get; init; } = "";
    /// <summary>"provider:model" targets, tried in turn on failure (first by weight).</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];
    /// <summary>The weight of each target for the first try (default 1 each); 0: a fallback only, tried in list order
    /// after the weighted ones, or first when every weighted target is cooling down.</summary>
    public IReadOnlyList<long> Weights { get; init; } = [];
}

public sealed record AiGuardConfig
{
    /// <summary>Detectors: email, phone, card, iban, ipv4, secret, ssn (US), nino (UK).</summary>
    public IReadOnlyList<string> Detect { get; init; } = [];
    /// <summary>Custom detectors: a regular expression per kind, masked as [KIND] and counted under the kind.</summary>
    public IReadOnlyList<AiGuardPatternConfig> Patterns { get; init; } = [];
    /// <summary>mask (replace with [KIND]), block (400), or report (count only).</summary>
    public string Action { get; init; } = "mask";
    /// <summary>Mask responses too (streamed ones event by event).</summary>
    public bool Responses { get; init; }
    /// <summary>Regular expressions a prompt may not match (403).</summary>
    public IReadOnlyList<string> Deny { get; init; } = [];
    /// <summary>Estimated prompt tokens (bytes / 4) above which a request is refused (0: no limit).</summary>
    public long MaxPromptTokens { get; init; }
}

public sealed record AiGuardPatternConfig
{
    /// <summary>The finding's kind: the metric label, the access log's name and the mask ([KIND]).</summary>
    public string Kind { get; init; } = "";
    /// <summary>A .NET regular expression.</summary>
    public string Pattern { get; init; } = "";
    public bool IgnoreCase { get; init; }
}

/// <summary>Binds and checks <c>routes[].ai</c>.</summary>
internal static partial class AiConfigBinder
{
    [System.Text.RegularExpressions.GeneratedRegex("^[a-z][a-z0-9_-]{0,31}$")]
    private static partial System.Text.RegularExpressions.Regex GuardKind();

    internal static readonly string[] AiProperties = ConfigReader.Names(nameof(AiRouteConfig.Providers), nameof(AiRouteConfig.Models),
        nameof(AiRouteConfig.MaxBodyBytes), nameof(AiRouteConfig.MaxResponseBytes), nameof(AiRouteConfig.ConnectTimeout),
        nameof(AiRouteConfig.ResponseTimeout), nameof(AiRouteConfig.Cooldown), nameof(AiRouteConfig.Guard), nameof(AiRouteConfig.Access),
        nameof(AiRouteConfig.Prices), nameof(AiRouteConfig.MaxUsageSeries), nameof(AiRouteConfig.Quotas),
        nameof(AiRouteConfig.Templates), nameof(AiRouteConfig.TemplatesOnly));
    internal static readonly string[] QuotaProperties = ConfigReader.Names(nameof(AiQuotaConfig.RateLimit), nameof(AiQuotaConfig.Models), nameof(AiQuotaConfig.Consumers));
    internal static readonly string[] PriceProperties = ConfigReader.Names(nameof(AiPriceConfig.Target), nameof(AiPriceConfig.Input), nameof(AiPriceConfig.Completion));
    internal static readonly string[] AccessProperties = ConfigReader.Names(nameof(AiAccessConfig.Consumer), nameof(AiAccessConfig.Models));
    internal static readonly string[] ProviderProperties = ConfigReader.Names(nameof(AiProviderConfig.Id), nameof(AiProviderConfig.Kind),
        nameof(AiProviderConfig.BaseUrl), nameof(AiProviderConfig.Cluster), nameof(AiProviderConfig.BasePath), nameof(AiProviderConfig.KeyEnv), nameof(AiProviderConfig.KeyFiles),
        nameof(AiProviderConfig.KeyReloadInterval), nameof(AiProviderConfig.ApiVersion), nameof(AiProviderConfig.Tls));
    internal static readonly string[] ModelProperties = ConfigReader.Names(nameof(AiModelConfig.Name), nameof(AiModelConfig.Targets), nameof(AiModelConfig.Weights));
    internal static readonly string[] GuardProperties = ConfigReader.Names(nameof(AiGuardConfig.Detect), nameof(AiGuardConfig.Patterns),
        nameof(AiGuardConfig.Action), nameof(AiGuardConfig.Responses), nameof(AiGuardConfig.Deny), nameof(AiGuardConfig.MaxPromptTokens));
    internal static readonly string[] GuardPatternProperties = ConfigReader.Names(nameof(AiGuardPatternConfig.Kind),
        nameof(AiGuardPatternConfig.Pattern), nameof(AiGuardPatternConfig.IgnoreCase));

    internal static readonly string[] Kinds = ["openai", "azure-openai", "anthropic", "gemini", "mistral", "deepseek", "openai-compatible"];
    internal static readonly string[] Detectors = ["email", "phone", "card", "iban", "ipv4", "secret", "ssn", "nino"];

    public static AiRouteConfig? Bind(JsonElement route, string p, ConfigReader r)
    {
        if (!r.TryGet(route, p, nameof(RouteConfig.Ai), false, out var e) || !r.IsObject(e, ConfigReader.Child(p, nameof(RouteConfig.Ai)))) return null;
        var ap = ConfigReader.Child(p, nameof(RouteConfig.Ai));
        r.CheckUnknown(e, ap, AiProperties);
        var d = new AiRouteConfig();
        return new AiRouteConfig
        {
            Providers = r.Objects(e, ap, nameof(AiRouteConfig.Providers), true, (x, xp) =>
            {
                r.CheckUnknown(x, xp, ProviderProperties);
                return new AiProviderConfig
                {
                    Id = r.String(x, xp, nameof(AiProviderConfig.Id), required: true) ?? "",
                    Kind = r.String(x, xp, nameof(AiProviderConfig.Kind), required: true) ?? "",
                    BaseUrl = r.String(x, xp, nameof(AiProviderConfig.BaseUrl)),
                    Cluster = r.String(x, xp, nameof(AiProviderConfig.Cluster)),
                    BasePath = r.String(x, xp, nameof(AiProviderConfig.BasePath)),
                    KeyEnv = r.Strings(x, xp, nameof(AiProviderConfig.KeyEnv)),
                    KeyFiles = r.Strings(x, xp, nameof(AiProviderConfig.KeyFiles)),
                    KeyReloadInterval = r.Duration(x, xp, nameof(AiProviderConfig.KeyReloadInterval)) ?? TimeSpan.FromSeconds(10),
                    ApiVersion = r.String(x, xp, nameof(AiProviderConfig.ApiVersion)),
                    Tls = Configuration.ClusterConfigBinder.BindUpstreamTls(x, xp, r),
                };
            }),
            Models = r.Objects(e, ap, nameof(AiRouteConfig.Models), true, (x, xp) =>
            {
                r.CheckUnknown(x, xp, ModelProperties);
                var weights = new List<long>();
                if (r.TryGet(x, xp, nameof(AiModelConfig.Weights), false, out var w))
                {
                    if (w.ValueKind != JsonValueKind.Array) r.Error(ConfigReader.Child(xp, nameof(AiModelConfig.Weights)), "expected an array of integers");
                    else
                    {
                        int index = 0;
                        foreach (var item in w.EnumerateArray())
                        {
                            // 0: a fallback, never the first try while a weighted target is not cooling down
                            if (item.ValueKind == JsonValueKind.Number && item.TryGetInt64(out long n) && n >= 0) weights.Add(n);
                            else r.Error(ConfigReader.Index(ConfigReader.Child(xp, nameof(AiModelConfig.Weights)), index), "expected an integer of 0 or more");
                            index++;
                        }
                    }
                }
                return new AiModelConfig { Name = r.String(x, xp, nameof(AiModelConfig.Name), required: true) ?? "", Targets = r.Strings(x, xp, nameof(AiModelConfig.Targets)), Weights = weights };
            }),
            MaxBodyBytes = r.Integer(e, ap, nameof(AiRouteConfig.MaxBodyBytes), 1, 64L << 20) ?? d.MaxBodyBytes,
            MaxResponseBytes = r.Integer(e, ap, nameof(AiRouteConfig.MaxResponseBytes), 1, 256L << 20) ?? d.MaxResponseBytes,
            ConnectTimeout = r.Duration(e, ap, nameof(AiRouteConfig.ConnectTimeout)) ?? d.ConnectTimeout,
            ResponseTimeout = r.Duration(e, ap, nameof(AiRouteConfig.ResponseTimeout)) ?? d.ResponseTimeout,
            Cooldown = r.Duration(e, ap, nameof(AiRouteConfig.Cooldown)) ?? d.Cooldown,
            Guard = BindGuard(e, ap, r),
            Access = r.Objects(e, ap, nameof(AiRouteConfig.Access), false, (x, xp) =>
            {
                r.CheckUnknown(x, xp, AccessProperties);
                return new AiAccessConfig { Consumer = r.String(x, xp, nameof(AiAccessConfig.Consumer), required: true) ?? "", Models = r.Strings(x, xp, nameof(AiAccessConfig.Models)) };
            }),
            Prices = r.Objects(e, ap, nameof(AiRouteConfig.Prices), false, (x, xp) =>
            {
                r.CheckUnknown(x, xp, PriceProperties);
                return new AiPriceConfig
                {
                    Target = r.String(x, xp, nameof(AiPriceConfig.Target), required: true) ?? "",
                    Input = r.Number(x, xp, nameof(AiPriceConfig.Input), 0, AiPriceConfig.MaxPrice) ?? 0,
                    Completion = r.Number(x, xp, nameof(AiPriceConfig.Completion), 0, AiPriceConfig.MaxPrice) ?? 0,
                };
            }),
            MaxUsageSeries = (int)(r.Integer(e, ap, nameof(AiRouteConfig.MaxUsageSeries), 1, 100_000) ?? d.MaxUsageSeries),
            Templates = r.Objects(e, ap, nameof(AiRouteConfig.Templates), false, (x, xp) => AiTemplateConfigBinder.Bind(x, xp, r)),
            TemplatesOnly = r.Bool(e, ap, nameof(AiRouteConfig.TemplatesOnly)) ?? false,
            Quotas = r.Objects(e, ap, nameof(AiRouteConfig.Quotas), false, (x, xp) =>
            {
                r.CheckUnknown(x, xp, QuotaProperties);
                return new AiQuotaConfig
                {
                    RateLimit = r.String(x, xp, nameof(AiQuotaConfig.RateLimit), required: true) ?? "",
                    Models = r.Strings(x, xp, nameof(AiQuotaConfig.Models)),
                    Consumers = r.Strings(x, xp, nameof(AiQuotaConfig.Consumers)),
                };
            }),
        };
    }

    private static AiGuardConfig? BindGuard(JsonElement e, string p, ConfigReader r)
    {
        if (!r.TryGet(e, p, nameof(AiRouteConfig.Guard), false, out var g) || !r.IsObject(g, ConfigReader.Child(p, nameof(AiRouteConfig.Guard)))) return null;
        var gp = ConfigReader.Child(p, nameof(AiRouteConfig.Guard));
        r.CheckUnknown(g, gp, GuardProperties);
        return new AiGuardConfig
        {
            Detect = r.Strings(g, gp, nameof(AiGuardConfig.Detect)),
            Patterns = r.Objects(g, gp, nameof(AiGuardConfig.Patterns), false, (x, xp) =>
            {
                r.CheckUnknown(x, xp, GuardPatternProperties);
                return new AiGuardPatternConfig
                {
                    Kind = r.String(x, xp, nameof(AiGuardPatternConfig.Kind), required: true) ?? "",
                    Pattern = r.String(x, xp, nameof(AiGuardPatternConfig.Pattern), required: true) ?? "",
                    IgnoreCase = r.Bool(x, xp, nameof(AiGuardPatternConfig.IgnoreCase)) ?? false,
                };
            }),
            Action = r.String(g, gp, nameof(AiGuardConfig.Action)) ?? "mask",
            Responses = r.Bool(g, gp, nameof(AiGuardConfig.Responses)) ?? false,
            Deny = r.Strings(g, gp, nameof(AiGuardConfig.Deny)),
            MaxPromptTokens = r.Integer(g, gp, nameof(AiGuardConfig.MaxPromptTokens), 1, int.MaxValue) ?? 0,
        };
    }

    public static void Validate(AiRouteConfig ai, string p, GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var clusters = config.Clusters.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        if (ai.Providers.Count == 0) errors.Add(new ConfigError(p + ".providers", "at least one provider is required"));
        for (int i = 0; i < ai.Providers.Count; i++)
        {
            var pr = ai.Providers[i];
            string pp = $"{p}.providers[{i}]";
            if (pr.Id.Length > 0 && !ids.Add(pr.Id)) errors.Add(new ConfigError(pp + ".id", $"duplicate provider id '{pr.Id}'"));
            if (pr.Kind.Length > 0 && Array.IndexOf(Kinds, pr.Kind) < 0)
                errors.Add(new ConfigError(pp + ".kind", $"unknown provider kind '{pr.Kind}' (known: {string.Join(", ", Kinds)})"));
            if ((pr.BaseUrl is null) == (pr.Cluster is null)) errors.Add(new ConfigError(pp, "give either baseUrl or cluster"));
            if (pr.BaseUrl is { } url && (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https")))
                errors.Add(new ConfigError(pp + ".baseUrl", $"'{url}' is not an http(s) URL"));
            if (pr.BasePath is { } bp && (pr.Cluster is null || !bp.StartsWith('/')))
                errors.Add(new ConfigError(pp + ".basePath", "a path starting with '/', with cluster only"));
            if (pr.Cluster is { } c && !clusters.Contains(c)) errors.Add(new ConfigError(pp + ".cluster", $"unknown cluster '{c}'"));
            if (pr.Tls is { } tls)
            {
                if (pr.Cluster is not null) errors.Add(new ConfigError(pp + ".tls", "a cluster provider takes its cluster's tls; set it there"));
                else Configuration.ClusterConfigBinder.ValidateUpstreamTls(config, tls, pp + ".tls",
                    pr.BaseUrl is { } b && b.StartsWith("https://", StringComparison.OrdinalIgnoreCase), errors,
                    "tls applies to an https:// baseUrl; use https:// or remove tls");
            }
            if (pr.Kind == "azure-openai" && pr.ApiVersion is null) errors.Add(new ConfigError(pp + ".apiVersion", "is required for azure-openai"));
            for (int k = 0; k < pr.KeyFiles.Count; k++)
            {
                if (!config.Files.TryResolve(config.BaseDirectory, pr.KeyFiles[k], out var full, out var why))
                    errors.Add(new ConfigError($"{pp}.keyFiles[{k}]", why ?? "not readable"));
                else if (!File.Exists(full)) errors.Add(new ConfigError($"{pp}.keyFiles[{k}]", $"file '{full}' does not exist"));
                else if (AiKeyPool.ReadFile(full).Any(key => key.Any(ch => ch is < ' ' or > '~')))
                    errors.Add(new ConfigError($"{pp}.keyFiles[{k}]", "a key holds characters a header value cannot carry"));
            }
            for (int k = 0; k < pr.KeyEnv.Count; k++)
            {
                var v = Environment.GetEnvironmentVariable(pr.KeyEnv[k]);
                if (string.IsNullOrEmpty(v)) errors.Add(new ConfigError($"{pp}.keyEnv[{k}]", $"environment variable '{pr.KeyEnv[k]}' is not set"));
                else if (v.Any(ch => ch is < ' ' or > '~')) errors.Add(new ConfigError($"{pp}.keyEnv[{k}]", $"environment variable '{pr.KeyEnv[k]}' holds characters a header value cannot carry"));
            }
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (ai.Models.Count == 0) errors.Add(new ConfigError(p + ".models", "at least one model is required"));
        for (int i = 0; i < ai.Models.Count; i++)
        {
            var m = ai.Models[i];
            string mp = $"{p}.models[{i}]";
            if (m.Name.Length > 0 && !names.Add(m.Name)) errors.Add(new ConfigError(mp + ".name", $"duplicate model '{m.Name}'"));
            if (m.Targets.Count == 0) errors.Add(new ConfigError(mp + ".targets", "at least one \"provider:model\" target is required"));
            if (m.Weights.Count > 0 && m.Weights.Count != m.Targets.Count) errors.Add(new ConfigError(mp + ".weights", "give one weight per target"));
            for (int t = 0; t < m.Targets.Count; t++)
            {
                var target = m.Targets[t];
                int colon = target.IndexOf(':');
                if (colon <= 0 || colon == target.Length - 1) errors.Add(new ConfigError($"{mp}.targets[{t}]", $"expected \"provider:model\" (found '{target}')"));
                else if (!ids.Contains(target[..colon])) errors.Add(new ConfigError($"{mp}.targets[{t}]", $"unknown provider '{target[..colon]}'"));
            }
        }
        var consumers = config.Consumers.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < ai.Access.Count; i++)
        {
            var a = ai.Access[i];
            if (a.Consumer.Length > 0 && !consumers.Contains(a.Consumer)) errors.Add(new ConfigError($"{p}.access[{i}].consumer", $"unknown consumer '{a.Consumer}'"));
            for (int k = 0; k < a.Models.Count; k++)
                if (!names.Contains(a.Models[k])) errors.Add(new ConfigError($"{p}.access[{i}].models[{k}]", $"unknown model '{a.Models[k]}'"));
        }
        var targets = ai.Models.SelectMany(m => m.Targets).ToHashSet(StringComparer.Ordinal);
        var priced = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < ai.Prices.Count; i++)
        {
            var t = ai.Prices[i].Target;
            string tp = $"{p}.prices[{i}].target";
            if (t.Length == 0) continue; // required: reported by the binder
            if (!targets.Contains(t)) errors.Add(new ConfigError(tp, $"'{t}' is not a target of any model (use \"provider:model\" as in models[].targets)"));
            else if (!priced.Add(t)) errors.Add(new ConfigError(tp, $"duplicate price for '{t}'"));
        }
        AiTemplateConfigBinder.Validate(ai.Templates, p, names, errors);
        if (ai.TemplatesOnly && ai.Templates.Count == 0) errors.Add(new ConfigError(p + ".templatesOnly", "there are no templates to serve"));
        var limits = config.RateLimits.ToDictionary(l => l.Id, StringComparer.Ordinal);
        for (int i = 0; i < ai.Quotas.Count; i++)
        {
            var q = ai.Quotas[i];
            string qp = $"{p}.quotas[{i}]";
            if (q.RateLimit.Length > 0)
            {
                if (!limits.TryGetValue(q.RateLimit, out var limit)) errors.Add(new ConfigError(qp + ".rateLimit", $"unknown rate limit '{q.RateLimit}'"));
                else if (!limit.CountsTokens) errors.Add(new ConfigError(qp + ".rateLimit", $"rate limit '{q.RateLimit}' counts requests: a quota needs one with \"unit\": \"tokens\""));
            }
            for (int k = 0; k < q.Models.Count; k++)
                if (!names.Contains(q.Models[k])) errors.Add(new ConfigError($"{qp}.models[{k}]", $"unknown model '{q.Models[k]}'"));
            for (int k = 0; k < q.Consumers.Count; k++)
                if (!consumers.Contains(q.Consumers[k])) errors.Add(new ConfigError($"{qp}.consumers[{k}]", $"unknown consumer '{q.Consumers[k]}'"));
        }
        if (ai.Guard is { } g)
        {
            string gp = p + ".guard";
            if (g.Action is not ("mask" or "block" or "report")) errors.Add(new ConfigError(gp + ".action", $"expected mask, block or report (found '{g.Action}')"));
            for (int i = 0; i < g.Detect.Count; i++)
                if (Array.IndexOf(Detectors, g.Detect[i]) < 0) errors.Add(new ConfigError($"{gp}.detect[{i}]", $"unknown detector '{g.Detect[i]}' (known: {string.Join(", ", Detectors)})"));
            var kinds = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < g.Patterns.Count; i++)
            {
                var pat = g.Patterns[i];
                string pp = $"{gp}.patterns[{i}]";
                if (pat.Kind.Length > 0)
                {
                    if (!GuardKind().IsMatch(pat.Kind))
                        errors.Add(new ConfigError(pp + ".kind", "a kind is 1-32 of a-z, 0-9, '-' and '_', starting with a letter (it is a metric label and the mask's name)"));
                    else if (Array.IndexOf(Detectors, pat.Kind) >= 0 || pat.Kind == "deny")
                        errors.Add(new ConfigError(pp + ".kind", $"'{pat.Kind}' is a built-in kind (use detect for it)"));
                    else if (!kinds.Add(pat.Kind)) errors.Add(new ConfigError(pp + ".kind", $"duplicate kind '{pat.Kind}'"));
                }
                if (pat.Pattern.Length == 0) continue; // required: reported by the binder
                try { _ = new System.Text.RegularExpressions.Regex(pat.Pattern); }
                catch (ArgumentException ex) { errors.Add(new ConfigError(pp + ".pattern", "not a regular expression: " + ex.Message)); }
            }
            for (int i = 0; i < g.Deny.Count; i++)
            {
                try { _ = new System.Text.RegularExpressions.Regex(g.Deny[i]); }
                catch (ArgumentException ex) { errors.Add(new ConfigError($"{gp}.deny[{i}]", "not a regular expression: " + ex.Message)); }
            }
        }
    }
}
