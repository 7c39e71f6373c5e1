using System.Text.Json;
using FastGate.Configuration;
using Prometheus;

namespace FastGate.Waf;

/// <summary>The top-level <c>waf</c> section: named profiles that routes refer to by id (<c>routes[].waf</c>).</summary>
public sealed record WafConfig
{
    public IReadOnlyList<WafProfileConfig> Profiles { get; init; } = [];
}

public enum WafMode : byte { Block, Detect }

/// <summary>One WAF profile: a CRS rule folder and how it is run.</summary>
public sealed record WafProfileConfig
{
    public string Id { get; init; } = "";
    /// <summary>A folder with crs-setup.conf and rules/*.conf, or Debian's /usr/share/modsecurity-crs.</summary>
    public string Rules { get; init; } = "";
    /// <summary>The setup file (default: the folder's crs-setup.conf, or Debian's /etc/modsecurity/crs/crs-setup.conf).</summary>
    public string? Setup { get; init; }
    /// <summary>block: refuse with 403 what the rules deny; detect: log and count it, forward the request.</summary>
    public WafMode Mode { get; init; } = WafMode.Block;
    /// <summary>tx.paranoia_level (1–4); null: what the setup file says (CRS: 1).</summary>
    public int? ParanoiaLevel { get; init; }
    /// <summary>tx.inbound_anomaly_score_threshold; null: the setup file's (CRS: 5).</summary>
    public int? InboundThreshold { get; init; }
    /// <summary>Rule ids (or "from-to" ranges) removed from the profile.</summary>
    public IReadOnlyList<string> RemoveRules { get; init; } = [];
    /// <summary>Rules removed by tag (e.g. "attack-protocol").</summary>
    public IReadOnlyList<string> RemoveTags { get; init; } = [];
    /// <summary>Targets excluded from rules (as SecRuleUpdateTargetById with <c>!ARGS:password</c>).</summary>
    public IReadOnlyList<WafExcludeTargetConfig> ExcludeTargets { get; init; } = [];
    /// <summary>Run the response phases (3: status and headers; 4: the body) on the upstream's response before any of it
    /// goes to the client (ModSecurity's SecResponseBodyAccess). Off by default: responses are streamed untouched.</summary>
    public bool InspectResponses { get; init; }
    /// <summary>The most of a response body phase 4 reads (SecResponseBodyLimit, ProcessPartial: a longer body has its
    /// first bytes inspected and the rest streamed); 0: phase 4 runs without RESPONSE_BODY.</summary>
    public int ResponseBodyLimit { get; init; } = DefaultResponseBodyLimit;
    /// <summary>The media types whose bodies phase 4 reads (SecResponseBodyMimeType; parameters ignored, case-insensitive).</summary>
    public IReadOnlyList<string> ResponseBodyTypes { get; init; } = DefaultResponseBodyTypes;
    /// <summary>The rule set, loaded by the validator (a bad rule file is a config error with file:line).</summary>
    internal WafRuleSet? RuleSet { get; set; }

    /// <summary>ModSecurity's recommended configuration: 512 KiB, text/plain, text/html and text/xml.</summary>
    public const int DefaultResponseBodyLimit = 524288;
    public static readonly IReadOnlyList<string> DefaultResponseBodyTypes = ["text/plain", "text/html", "text/xml"];
}

/// <summary>
/// One target exclusion of a profile: the rules it applies to (an id or "from-to" range, and/or a tag) stop reading
/// <see cref="Target"/> (e.g. <c>ARGS:password</c>, <c>REQUEST_COOKIES:/^sess_/</c>), as ModSecurity's
/// <c>SecRuleUpdateTargetById 942100 "!ARGS:password"</c> (or <c>SecRuleUpdateTargetByTag</c>) does.
/// </summary>
public sealed record WafExcludeTargetConfig
{
    /// <summary>A rule id or "from-to" range; null: every rule with <see cref="Tag"/>.</summary>
    public string? Rule { get; init; }
    /// <summary>Only the rules (of <see cref="Rule"/>, when given) that carry this tag.</summary>
    public string? Tag { get; init; }
    /// <summary>COLLECTION:name or COLLECTION:/regex/ (no '!' or '&amp;').</summary>
    public string Target { get; init; } = "";
}

/// <summary>Binds and checks <c>waf</c>; loading the rules is part of validation, so a reload with a bad file keeps the running config.</summary>
internal static class WafConfigBinder
{
    internal static readonly string[] SectionProperties = ConfigReader.Names(nameof(WafConfig.Profiles));
    internal static readonly string[] ProfileProperties =
        ConfigReader.Names(nameof(WafProfileConfig.Id), nameof(WafProfileConfig.Rules), nameof(WafProfileConfig.Setup), nameof(WafProfileConfig.Mode),
        nameof(WafProfileConfig.ParanoiaLevel), nameof(WafProfileConfig.InboundThreshold), nameof(WafProfileConfig.RemoveRules),
        nameof(WafProfileConfig.RemoveTags), nameof(WafProfileConfig.ExcludeTargets), nameof(WafProfileConfig.InspectResponses),
        nameof(WafProfileConfig.ResponseBodyLimit), nameof(WafProfileConfig.ResponseBodyTypes));
    internal static readonly string[] ExcludeTargetProperties =
        ConfigReader.Names(nameof(WafExcludeTargetConfig.Rule), nameof(WafExcludeTargetConfig.Tag), nameof(WafExcludeTargetConfig.Target));

    public static WafConfig Bind(JsonElement root, string path, ConfigReader r)
    {
        if (!r.TryGet(root, path, nameof(GatewayConfig.Waf), false, out var w) || !r.IsObject(w, ConfigReader.Child(path, nameof(GatewayConfig.Waf)))) return new WafConfig();
        var wp = ConfigReader.Child(path, nameof(GatewayConfig.Waf));
        r.CheckUnknown(w, wp, SectionProperties);
        return new WafConfig { Profiles = r.Objects(w, wp, nameof(WafConfig.Profiles), false, (e, p) => BindProfile(e, p, r)) };
    }

    private static WafProfileConfig BindProfile(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, ProfileProperties);
        var mode = r.String(e, p, nameof(WafProfileConfig.Mode));
        WafMode m = WafMode.Block;
        if (mode is not null)
        {
            if (mode == "block") m = WafMode.Block;
            else if (mode == "detect") m = WafMode.Detect;
            else r.Error(ConfigReader.Child(p, nameof(WafProfileConfig.Mode)), $"expected \"block\" or \"detect\", found \"{mode}\"");
        }
        return new WafProfileConfig
        {
            Id = r.String(e, p, nameof(WafProfileConfig.Id), required: true) ?? "",
            Rules = r.String(e, p, nameof(WafProfileConfig.Rules), required: true) ?? "",
            Setup = r.String(e, p, nameof(WafProfileConfig.Setup)),
            Mode = m,
            ParanoiaLevel = (int?)r.Integer(e, p, nameof(WafProfileConfig.ParanoiaLevel), 1, 4),
            InboundThreshold = (int?)r.Integer(e, p, nameof(WafProfileConfig.InboundThreshold), 1, 10000),
            RemoveRules = r.Strings(e, p, nameof(WafProfileConfig.RemoveRules)),
            RemoveTags = r.Strings(e, p, nameof(WafProfileConfig.RemoveTags)),
            ExcludeTargets = r.Objects(e, p, nameof(WafProfileConfig.ExcludeTargets), false, (x, xp) => BindExcludeTarget(x, xp, r)),
            InspectResponses = r.Bool(e, p, nameof(WafProfileConfig.InspectResponses)) ?? false,
            ResponseBodyLimit = (int?)r.Integer(e, p, nameof(WafProfileConfig.ResponseBodyLimit), 0, 64 << 20) ?? WafProfileConfig.DefaultResponseBodyLimit,
            ResponseBodyTypes = BindTypes(e, p, r),
        };
    }

    private static IReadOnlyList<string> BindTypes(JsonElement e, string p, ConfigReader r)
    {
        if (!e.TryGetProperty(ConfigReader.Names(nameof(WafProfileConfig.ResponseBodyTypes))[0], out _)) return WafProfileConfig.DefaultResponseBodyTypes;
        var types = r.Strings(e, p, nameof(WafProfileConfig.ResponseBodyTypes));
        for (int i = 0; i < types.Count; i++)
        {
            var t = types[i].Trim();
            int slash = t.IndexOf('/');
            if (slash <= 0 || slash == t.Length - 1 || t.IndexOfAny([';', ' ', ',']) >= 0)
                r.Error($"{ConfigReader.Child(p, nameof(WafProfileConfig.ResponseBodyTypes))}[{i}]", $"'{types[i]}' is not a media type (type/subtype, no parameters)");
            types[i] = t.ToLowerInvariant();
        }
        return types;
    }

    private static WafExcludeTargetConfig BindExcludeTarget(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, ExcludeTargetProperties);
        return new WafExcludeTargetConfig
        {
            Rule = r.String(e, p, nameof(WafExcludeTargetConfig.Rule)),
            Tag = r.String(e, p, nameof(WafExcludeTargetConfig.Tag)),
            Target = r.String(e, p, nameof(WafExcludeTargetConfig.Target), required: true) ?? "",
        };
    }

    public static void Validate(GatewayConfig config, List<ConfigError> errors)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.Waf.Profiles.Count; i++)
        {
            var w = config.Waf.Profiles[i];
            var p = $"$.waf.profiles[{i}]";
            if (w.Id.Length > 0 && !ids.Add(w.Id)) errors.Add(new ConfigError(p + ".id", $"duplicate WAF profile id '{w.Id}'"));
            if (w.Rules.Length == 0) continue;
            int before = errors.Count;
            if (!config.Files.TryResolve(config.BaseDirectory, w.Rules, out var rules, out var refused)) { errors.Add(new ConfigError(p + ".rules", refused!)); continue; }
            string? setup = null;
            if (w.Setup is not null && !config.Files.TryResolve(config.BaseDirectory, w.Setup, out setup, out refused)) { errors.Add(new ConfigError(p + ".setup", refused!)); continue; }
            var removeRanges = new List<string>();
            for (int k = 0; k < w.RemoveRules.Count; k++)
            {
                if (WafRuleSet.ParseIdRange(w.RemoveRules[k]) is null) errors.Add(new ConfigError($"{p}.removeRules[{k}]", $"'{w.RemoveRules[k]}' is not a rule id or id range"));
                else removeRanges.Add(w.RemoveRules[k]);
            }
            var exclusions = new List<WafTargetExclusion>();
            var exclusionIndex = new List<int>(); // exclusions[j] is excludeTargets[exclusionIndex[j]]
            for (int k = 0; k < w.ExcludeTargets.Count; k++)
            {
                var x = w.ExcludeTargets[k];
                var xp = $"{p}.excludeTargets[{k}]";
                (int, int)? range = null;
                bool ok = true;
                if (x.Rule is not null && (range = WafRuleSet.ParseIdRange(x.Rule)) is null)
                {
                    errors.Add(new ConfigError(xp + ".rule", $"'{x.Rule}' is not a rule id or id range"));
                    ok = false;
                }
                if (x.Rule is null && x.Tag is null) { errors.Add(new ConfigError(xp, "needs a rule (id or range) or a tag")); ok = false; }
                if (x.Tag is { Length: 0 }) { errors.Add(new ConfigError(xp + ".tag", "empty tag")); ok = false; }
                WafTarget? target = null;
                if (x.Target.Length > 0 && (target = WafRuleSet.ParseExclusionTarget(x.Target, out var why)) is null)
                {
                    errors.Add(new ConfigError(xp + ".target", why!));
                    ok = false;
                }
                if (!ok || target is null) continue;
                exclusions.Add(new WafTargetExclusion(range, x.Tag, target));
                exclusionIndex.Add(k);
            }
            var set = WafRuleSet.Load(new WafLoadOptions
            {
                ExcludeTargets = exclusions,
                Rules = rules,
                Setup = setup,
                ParanoiaLevel = w.ParanoiaLevel,
                InboundThreshold = w.InboundThreshold,
                RemoveRanges = removeRanges,
                RemoveTags = w.RemoveTags,
            });
            for (int j = 0; j < exclusions.Count && set.Errors.Count == 0; j++)
                if (set.ExcludeTargetRules[j] == 0)
                {
                    var x = w.ExcludeTargets[exclusionIndex[j]];
                    var where = $"{p}.excludeTargets[{exclusionIndex[j]}]";
                    errors.Add(x.Rule is not null
                        ? new ConfigError(where + ".rule", $"no rule of the profile has the id {x.Rule}" + (x.Tag is not null ? $" and the tag '{x.Tag}'" : ""))
                        : new ConfigError(where + ".tag", $"no rule of the profile has the tag '{x.Tag}'"));
                }
            foreach (var e in set.Errors.Take(20)) errors.Add(new ConfigError(p + ".rules", e.ToString()));
            if (set.Errors.Count > 20) errors.Add(new ConfigError(p + ".rules", $"... and {set.Errors.Count - 20} more errors"));
            w.RuleSet = set.Errors.Count == 0 && errors.Count == before ? set : null;
        }
        for (int i = 0; i < config.Routes.Count; i++)
            if (config.Routes[i].Waf is { } id && !ids.Contains(id))
                errors.Add(new ConfigError($"$.routes[{i}].waf", $"unknown WAF profile '{id}'" + ConfigValidator.Suggest(id, ids)));
    }
}

/// <summary>A compiled profile in the snapshot: its rule set, mode and metric children.</summary>
public sealed class WafProfile
{
    private readonly Counter _requests;
    private readonly Counter _rules;
    private readonly Counter.Child _blocked, _detected, _passed;

    public WafProfile(string id, WafRuleSet rules, WafMode mode, Observability.GatewayMetrics metrics, WafProfileConfig? config = null)
    {
        Id = id;
        Rules = rules;
        Mode = mode;
        InspectResponses = config?.InspectResponses ?? false;
        ResponseBodyLimit = config?.ResponseBodyLimit ?? WafProfileConfig.DefaultResponseBodyLimit;
        ResponseBodyTypes = [.. config?.ResponseBodyTypes ?? WafProfileConfig.DefaultResponseBodyTypes];
        _requests = metrics.WafRequests;
        _rules = metrics.WafRuleMatches;
        _blocked = _requests.WithLabels(id, "blocked");
        _detected = _requests.WithLabels(id, "detected");
        _passed = _requests.WithLabels(id, "passed");
    }

    public string Id { get; }
    public WafRuleSet Rules { get; }
    public WafMode Mode { get; }
    /// <summary>Phases 3 and 4 run on the upstream's responses (<see cref="WafProfileConfig.InspectResponses"/>).</summary>
    public bool InspectResponses { get; }
    public int ResponseBodyLimit { get; }
    public string[] ResponseBodyTypes { get; }

    /// <summary>Whether phase 4 reads a body of this Content-Type (its media type, parameters and case ignored).</summary>
    public bool ReadsResponseBody(ReadOnlySpan<byte> contentType)
    {
        if (ResponseBodyLimit == 0 || contentType.IsEmpty) return false;
        int semi = contentType.IndexOf((byte)';');
        var media = (semi < 0 ? contentType : contentType[..semi]).Trim((byte)' ').Trim((byte)'\t');
        foreach (var t in ResponseBodyTypes)
            if (media.Length == t.Length && System.Text.Ascii.EqualsIgnoreCase(media, t)) return true;
        return false;
    }
    /// <summary>What the load reported (disabled rules, no-op actions), file:line each; shown by GET /admin/waf.</summary>
    public IReadOnlyList<WafLoadIssue> Warnings => Rules.Warnings;

    // the per-rule children of fastgate_waf_rule_matches_total, by outcome (0 passed, 1 blocked, 2 detected) and rule
    // ordinal: made the first time a rule matches with that outcome (a series exists only once it counted something),
    // then reused; a race makes the same child twice, which prometheus-net hands back as one
    private readonly Counter.Child?[][] _ruleChildren = [new Counter.Child?[0], new Counter.Child?[0], new Counter.Child?[0]];

    /// <summary>Counts one inspected request: its outcome and each logged rule that matched (rule ids: a bounded set, the profile's).</summary>
    public void Record(WafTransaction tx)
    {
        bool denied = tx.Interruption is not null;
        int outcome = denied ? Mode == WafMode.Block ? 1 : 2 : 0;
        (outcome == 1 ? _blocked : outcome == 2 ? _detected : _passed).Inc();
        foreach (var m in System.Runtime.InteropServices.CollectionsMarshal.AsSpan(tx.Matches)) RuleChild(outcome, m).Inc();
    }

    private Counter.Child RuleChild(int outcome, in WafMatch m)
    {
        var children = Volatile.Read(ref _ruleChildren[outcome]);
        if ((uint)m.Ordinal < (uint)children.Length && children[m.Ordinal] is { } child) return child;
        var made = _rules.WithLabels(Id, m.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), outcome == 1 ? "blocked" : outcome == 2 ? "detected" : "passed");
        if (m.Ordinal < 0 || m.Ordinal >= Rules.RuleCount) return made;
        if (children.Length == 0)
        {
            Interlocked.CompareExchange(ref _ruleChildren[outcome], new Counter.Child?[Rules.RuleCount], children);
            children = Volatile.Read(ref _ruleChildren[outcome]);
        }
        Volatile.Write(ref children[m.Ordinal], made);
        return made;
    }

    /// <summary>"ids score" for the access log: the logged rules that matched and the anomaly score, e.g. "942100,949110 score=5".</summary>
    public static string Summary(WafTransaction tx) => tx.Summary();
}

internal static class WafProfileCompiler
{
    /// <summary>The profiles the routes use, from the rule sets validation loaded (loaded here when it did not run).</summary>
    public static Dictionary<string, WafProfile> Compile(GatewayConfig config, Observability.GatewayMetrics metrics)
    {
        var profiles = new Dictionary<string, WafProfile>(StringComparer.Ordinal);
        foreach (var w in config.Waf.Profiles)
        {
            if (!config.Routes.Any(r => r.Waf == w.Id)) continue;
            var set = w.RuleSet ?? throw new InvalidOperationException($"WAF profile '{w.Id}' was not validated (its rules are loaded by validation)");
            profiles[w.Id] = new WafProfile(w.Id, set, w.Mode, metrics, w);
        }
        return profiles;
    }
}
