using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace FastGate.Waf;

/// <summary>What a rule set is compiled with besides its files (a WAF profile's settings).</summary>
public sealed record WafLoadOptions
{
    /// <summary>A folder with crs-setup.conf and rules/*.conf, or the Debian package's /usr/share/modsecurity-crs (owasp-crs.load).</summary>
    public required string Rules { get; init; }
    /// <summary>The setup file (default: the folder's crs-setup.conf, or what owasp-crs.load includes).</summary>
    public string? Setup { get; init; }
    /// <summary>Set tx.paranoia_level (and the executing level) after the setup file; null: the setup file's.</summary>
    public int? ParanoiaLevel { get; init; }
    /// <summary>Set tx.inbound_anomaly_score_threshold after the setup file; null: the setup file's.</summary>
    public int? InboundThreshold { get; init; }
    /// <summary>Rule ids or "from-to" ranges removed (SecRuleRemoveById).</summary>
    public IReadOnlyList<string> RemoveRanges { get; init; } = [];
    /// <summary>Rules removed by tag.</summary>
    public IReadOnlyList<string> RemoveTags { get; init; } = [];
    /// <summary>Targets excluded from rules by id range and/or tag (as SecRuleUpdateTargetById/ByTag with '!').</summary>
    public IReadOnlyList<WafTargetExclusion> ExcludeTargets { get; init; } = [];
    /// <summary>Fold the rules that only test a TX variable no rule changes after the setup (WafRuleSet.Fold); off:
    /// the plain walk (tests compare the two).</summary>
    internal bool FoldConstants { get; init; } = true;
}

/// <summary>A target the rules of <see cref="Rule"/> (an id range; null: any) carrying <see cref="Tag"/> (null: any) no longer read.</summary>
public sealed record WafTargetExclusion((int From, int To)? Rule, string? Tag, WafTarget Target);

/// <summary>
/// A compiled rule set: the rules of each phase in order (chains hang off their first link, markers sit in every
/// phase list), compiled once — regexes built, @pm lists as one automaton, macros pre-split. Errors make the load
/// fail (a config error with file:line); warnings are rules that cannot run here (an unsupported operator,
/// variable or action: the rule is disabled and listed, never silently dropped).
/// </summary>
public sealed class WafRuleSet
{
    public WafRule[][] Phases { get; } = new WafRule[6][];
    public List<WafLoadIssue> Errors { get; } = [];
    public List<WafLoadIssue> Warnings { get; } = [];
    public int RuleCount { get; private set; }
    public string? ComponentSignature { get; private set; }
    /// <summary>SecRuleEngine in the files (On, Off, DetectionOnly), or null.</summary>
    public string? FileRuleEngine { get; private set; }
    public int RequestBodyLimit { get; private set; } = 13107200;

    private readonly Dictionary<int, WafDisruptive> _defaultDisruptive = [];
    private readonly Dictionary<int, List<Transforms.Fn>> _defaultTransforms = [];
    private readonly List<WafRule> _all = [];
    private readonly List<(int From, int To)> _removedIds = [];
    private readonly List<string> _removedTags = [];
    private readonly List<(int Id, List<WafTarget> Targets, SecDirective Where)> _updates = [];
    private readonly List<WafTargetExclusion> _excludeTargets = [];

    /// <summary>Per <see cref="WafLoadOptions.ExcludeTargets"/> entry, how many rules it applied to (0: a config error).</summary>
    public int[] ExcludeTargetRules { get; private set; } = [];

    private static readonly HashSet<string> NoOpDirectives = new(StringComparer.OrdinalIgnoreCase)
    {
        "SecRequestBodyAccess", "SecRequestBodyNoFilesLimit", "SecRequestBodyLimitAction", "SecRequestBodyInMemoryLimit",
        "SecRequestBodyJsonDepthLimit", "SecArgumentsLimit", "SecPcreMatchLimit", "SecPcreMatchLimitRecursion",
        "SecResponseBodyAccess", "SecResponseBodyMimeType", "SecResponseBodyLimit", "SecResponseBodyLimitAction",
        "SecTmpDir", "SecDataDir", "SecUploadDir", "SecAuditEngine", "SecAuditLog", "SecAuditLog2", "SecAuditLogParts",
        "SecAuditLogRelevantStatus", "SecAuditLogType", "SecAuditLogFormat", "SecAuditLogStorageDir", "SecAuditLogDirMode",
        "SecAuditLogFileMode", "SecDebugLog", "SecDebugLogLevel", "SecArgumentSeparator", "SecCookieFormat",
        "SecUnicodeMapFile", "SecStatusEngine", "SecCollectionTimeout", "SecTmpSaveUploadedFiles", "SecUploadKeepFiles",
        "SecUploadFileMode", "SecUploadFileLimit", "SecHttpBlKey", "SecGeoLookupDb", "SecConnEngine", "SecXmlExternalEntity",
    };

    public static readonly HashSet<string> Collections = new(StringComparer.Ordinal)
    {
        "ARGS", "ARGS_NAMES", "ARGS_GET", "ARGS_GET_NAMES", "ARGS_POST", "ARGS_POST_NAMES", "ARGS_COMBINED_SIZE",
        "REQUEST_HEADERS", "REQUEST_HEADERS_NAMES", "REQUEST_COOKIES", "REQUEST_COOKIES_NAMES", "REQUEST_URI", "REQUEST_URI_RAW",
        "REQUEST_FILENAME", "REQUEST_BASENAME", "REQUEST_LINE", "REQUEST_METHOD", "REQUEST_PROTOCOL", "QUERY_STRING",
        "REQUEST_BODY", "REQUEST_BODY_LENGTH", "FILES", "FILES_NAMES", "FILES_COMBINED_SIZE", "FILES_SIZES", "MULTIPART_PART_HEADERS",
        "MULTIPART_STRICT_ERROR", "MULTIPART_UNMATCHED_BOUNDARY", "REQBODY_PROCESSOR", "REQBODY_ERROR", "REQBODY_ERROR_MSG",
        "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "UNIQUE_ID", "DURATION", "TX", "MATCHED_VAR", "MATCHED_VARS",
        "MATCHED_VAR_NAME", "MATCHED_VARS_NAMES", "XML", "IP", "GLOBAL", "GEO", "RESPONSE_BODY", "RESPONSE_STATUS",
        "RESPONSE_HEADERS", "RESPONSE_HEADERS_NAMES", "RESPONSE_CONTENT_TYPE", "RESPONSE_CONTENT_LENGTH", "RESPONSE_PROTOCOL", "RULE", "REQUEST_HEADERS_COUNT", "SESSION", "USER",
    };

    public static WafRuleSet Load(WafLoadOptions options)
    {
        var set = new WafRuleSet();
        var directives = new List<SecDirective>();
        var dir = Path.GetFullPath(options.Rules);
        var load = Path.Combine(dir, "owasp-crs.load");
        int overrideAt;
        if (!Directory.Exists(dir)) { set.Errors.Add(new WafLoadIssue(dir, 0, "the rules folder does not exist")); return set; }
        if (options.Setup is null && !File.Exists(Path.Combine(dir, "crs-setup.conf")) && File.Exists(load))
        {
            directives = SecLangReader.ReadFile(load, set.Errors);
            overrideAt = directives.FindLastIndex(d => Path.GetFileName(d.File) == "crs-setup.conf") + 1;
        }
        else
        {
            var setup = options.Setup ?? Path.Combine(dir, "crs-setup.conf");
            if (!File.Exists(setup)) { set.Errors.Add(new WafLoadIssue(setup, 0, "the setup file does not exist (crs-setup.conf; copy crs-setup.conf.example)")); return set; }
            directives.AddRange(SecLangReader.ReadFile(setup, set.Errors));
            overrideAt = directives.Count;
            var rulesDir = Directory.Exists(Path.Combine(dir, "rules")) ? Path.Combine(dir, "rules") : dir;
            var files = Directory.GetFiles(rulesDir, "*.conf");
            Array.Sort(files, StringComparer.Ordinal);
            foreach (var f in files)
                if (Path.GetFullPath(f) != Path.GetFullPath(setup)) directives.AddRange(SecLangReader.ReadFile(f, set.Errors));
        }
        var overrides = new List<string>();
        if (options.ParanoiaLevel is int pl)
        {
            overrides.Add($"setvar:tx.paranoia_level={pl}");
            overrides.Add($"setvar:tx.executing_paranoia_level={pl}");
        }
        if (options.InboundThreshold is int th) overrides.Add($"setvar:tx.inbound_anomaly_score_threshold={th}");
        if (overrides.Count > 0)
            directives.Insert(overrideAt, new SecDirective("SecAction", [$"id:1,phase:1,pass,nolog,{string.Join(',', overrides)}"], "(profile settings)", 0));
        foreach (var r in options.RemoveRanges) if (ParseIdRange(r) is { } range) set._removedIds.Add(range);
        set._removedTags.AddRange(options.RemoveTags);
        set._excludeTargets.AddRange(options.ExcludeTargets);
        set.Compile(directives, options.FoldConstants);
        return set;
    }

    /// <summary>Compiles SecLang text (tests, single files).</summary>
    public static WafRuleSet FromText(string text, string file = "(text)") => FromText(text, file, fold: true);

    internal static WafRuleSet FromText(string text, string file, bool fold)
    {
        var set = new WafRuleSet();
        var directives = SecLangReader.ReadText(text, file, set.Errors);
        set.Compile(directives, fold);
        return set;
    }

    private void Compile(List<SecDirective> directives, bool fold)
    {
        WafRule? chainParent = null;
        foreach (var d in directives)
        {
            var name = d.Name;
            if (chainParent is not null && !name.Equals("SecRule", StringComparison.OrdinalIgnoreCase))
            {
                Errors.Add(new WafLoadIssue(d.File, d.Line, $"a chained rule must be followed by SecRule, not {name}"));
                chainParent = null;
            }
            switch (name.ToLowerInvariant())
            {
                case "secrule":
                    if (d.Args.Count is < 2 or > 3) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecRule takes VARIABLES OPERATOR [ACTIONS]")); break; }
                    var rule = new WafRule { File = d.File, Line = d.Line, IsChainLink = chainParent is not null };
                    ParseTargets(d, d.Args[0], rule.Targets, rule.Exclusions);
                    ParseOperator(d, d.Args[1], rule);
                    ParseActions(d, d.Args.Count == 3 ? d.Args[2] : "", rule, chainParent is not null);
                    chainParent = Attach(rule, chainParent);
                    break;
                case "secaction":
                    if (d.Args.Count != 1) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecAction takes ACTIONS")); break; }
                    var action = new WafRule { File = d.File, Line = d.Line, Operator = new UnconditionalOperator { Name = "unconditionalMatch" } };
                    action.Targets.Add(new WafTarget { Collection = "REQUEST_METHOD" }); // one value: the actions run once
                    ParseActions(d, d.Args[0], action, false);
                    chainParent = Attach(action, null);
                    break;
                case "secmarker":
                    if (d.Args.Count != 1) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecMarker takes a name")); break; }
                    _all.Add(new WafRule { File = d.File, Line = d.Line, Marker = d.Args[0], Id = 0 });
                    break;
                case "secdefaultaction":
                    if (d.Args.Count != 1) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecDefaultAction takes ACTIONS")); break; }
                    var def = new WafRule { File = d.File, Line = d.Line };
                    ParseActions(d, d.Args[0], def, true);
                    _defaultDisruptive[def.Phase] = def.Disruptive;
                    _defaultTransforms[def.Phase] = [.. def.Transforms];
                    break;
                case "secruleremovebyid":
                    foreach (var a in d.Args)
                        foreach (var part in a.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries))
                        {
                            if (ParseIdRange(part) is { } r) _removedIds.Add(r);
                            else Errors.Add(new WafLoadIssue(d.File, d.Line, $"SecRuleRemoveById: '{part}' is not an id or id range"));
                        }
                    break;
                case "secruleremovebytag":
                    _removedTags.AddRange(d.Args);
                    break;
                case "secruleupdatetargetbyid":
                    if (d.Args.Count is < 2 or > 3 || !int.TryParse(d.Args[0], out var uid)) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecRuleUpdateTargetById takes ID TARGETS")); break; }
                    if (d.Args.Count == 3) { Errors.Add(new WafLoadIssue(d.File, d.Line, "SecRuleUpdateTargetById: replacing a target is not supported")); break; }
                    var targets = new List<WafTarget>();
                    ParseTargets(d, d.Args[1], targets, targets);
                    _updates.Add((uid, targets, d));
                    break;
                case "seccomponentsignature":
                    ComponentSignature = d.Args.Count > 0 ? d.Args[0] : null;
                    break;
                case "secruleengine":
                    FileRuleEngine = d.Args.Count > 0 ? d.Args[0] : null;
                    break;
                case "secrequestbodylimit":
                    if (d.Args.Count == 1 && int.TryParse(d.Args[0], out var limit)) RequestBodyLimit = limit;
                    break;
                default:
                    if (!NoOpDirectives.Contains(name)) Errors.Add(new WafLoadIssue(d.File, d.Line, $"unsupported directive {name}"));
                    break;
            }
        }
        if (chainParent is not null) Errors.Add(new WafLoadIssue(chainParent.File, chainParent.Line, "the last rule asks for a chain that never comes"));

        var byId = new Dictionary<int, WafRule>();
        foreach (var r in _all) if (r.Marker is null && r.Id != 0) byId.TryAdd(r.Id, r);
        foreach (var (id, targets, where) in _updates)
        {
            if (!byId.TryGetValue(id, out var r)) continue; // ModSecurity too: an update for a rule not loaded is no error
            foreach (var t in targets) (t.Exclude ? r.Exclusions : r.Targets).Add(t);
        }
        // the profile's excludeTargets: each adds its target to the exclusions of the rules it names (chain starters,
        // as SecRuleUpdateTargetById does), removed rules included in the count (naming one is not an error)
        ExcludeTargetRules = new int[_excludeTargets.Count];
        for (int k = 0; k < _excludeTargets.Count; k++)
        {
            var (range, tag, target) = _excludeTargets[k];
            foreach (var r in _all)
            {
                if (r.Marker is not null || r.Id == 0) continue;
                if (range is { } rr && (r.Id < rr.From || r.Id > rr.To)) continue;
                if (tag is not null && !r.Tags.Contains(tag)) continue;
                r.Exclusions.Add(target);
                ExcludeTargetRules[k]++;
            }
        }
        var phases = new List<WafRule>[6];
        for (int p = 0; p < 6; p++) phases[p] = [];
        foreach (var r in _all)
        {
            if (r.Marker is not null) { for (int p = 1; p < 6; p++) phases[p].Add(r); continue; }
            if (IsRemoved(r)) continue;
            if (r.Disruptive == WafDisruptive.Block)
                r.Disruptive = _defaultDisruptive.TryGetValue(r.Phase, out var dd) && dd != WafDisruptive.None ? dd : WafDisruptive.Pass;
            for (var link = r; link is not null; link = link.Chain)
                if (link.Unsupported is { } why) Warnings.Add(new WafLoadIssue(link.File, link.Line, $"rule {r.Id} disabled: {why}"));
            r.Ordinal = RuleCount++;
            phases[Math.Clamp(r.Phase, 1, 5)].Add(r);
        }
        for (int p = 0; p < 6; p++) Phases[p] = [.. phases[p]];
        BindTx();
        BuildRuns();
        if (fold && Errors.Count == 0) BuildFold();
    }

    // TX variables the rules name (setvar:tx.name, TX:name, %{tx.name}), each a slot of a transaction's TX array, so
    // reading and writing them is an index and not a string hash; names made at run time (setvar:'tx.%{rule.id}-...')
    // live in a dictionary beside it. Filled at load, read-only after (lookups from many requests at once are safe).
    private readonly Dictionary<string, int> _txSlots = new(StringComparer.Ordinal);
    /// <summary>Each slot's name, and "TX:" + the name (the matched-variable name).</summary>
    internal string[] TxSlotNames { get; private set; } = [];
    internal string[] TxSlotFullNames { get; private set; } = [];

    /// <summary>How many rule links with a pure operator the set has (their WafRule.LinkNumber is 1..LinkCount).</summary>
    internal int LinkCount { get; private set; }

    /// <summary>What a link (with a pure operator) last computed for a value: the transformed value and the
    /// operator's raw result. Immutable: published with one reference write.</summary>
    internal sealed class KeptResult(string value, string transformed, bool hit)
    {
        public readonly string Value = value;
        public readonly string Transformed = transformed;
        public readonly bool Hit = hit;
    }

    internal const int KeptWays = 4;

    /// <summary>The way of <paramref name="value"/> among a link's KeptWays entries: from its text (the same text
    /// takes the same way on every connection), cheap (length and two characters).</summary>
    internal static int KeptWay(string value) =>
        (value.Length + (value.Length > 0 ? value[0] * 7 + value[^1] * 31 : 0)) & (KeptWays - 1);

    /// <summary>
    /// Per link with a pure operator (WafRule.LinkNumber), KeptWays entries: the result a transaction last computed
    /// there for a value, found again by comparing the text (a connection's and other connections' requests repeat
    /// their method, line, Host, User-Agent...). Shared by every transaction of the set, read and written without
    /// locks (a reader sees an entry whole or the one before it; a race only costs a computation), small enough to
    /// stay in cache (a table per connection was a cache miss per lookup under load). Only values of the request head,
    /// TX and the matched variables are looked up here (WafTransaction.StableCollections).
    /// </summary>
    internal KeptResult?[] KeptResults { get; private set; } = [];

    /// <summary>How many setvars have a macro in the name (WafSetVar.NameIndex).</summary>
    internal int DynamicNames { get; private set; }
    /// <summary>How many setvars have a value of two or more parts (WafSetVar.ValueIndex).</summary>
    internal int DynamicValues { get; private set; }

    internal bool TryTxSlot(string name, out int slot) => _txSlots.TryGetValue(name, out slot);

    private int TxSlotOf(string name)
    {
        if (!_txSlots.TryGetValue(name, out var slot)) _txSlots[name] = slot = _txSlots.Count;
        return slot;
    }

    private void BindTx()
    {
        for (int g = 0; g < 10; g++) TxSlotOf(g.ToString(CultureInfo.InvariantCulture)); // captures TX:0-9: slots 0-9
        foreach (var r in _all)
            for (var link = r; link is not null; link = link.Chain)
            {
                foreach (var t in link.Targets) if (t.Source == TargetSource.Tx && t.Key is { } key) t.TxSlot = TxSlotOf(key);
                foreach (var sv in link.SetVars)
                {
                    if (sv.Collection == "TX" && sv.Name2 is null) sv.Slot = TxSlotOf(sv.Name);
                    if (sv.Name2 is not null) sv.NameIndex = DynamicNames++;
                    if (sv.Value is { PartCount: > 1 }) sv.ValueIndex = DynamicValues++;
                    sv.Name2?.Bind(TxSlotOf);
                    sv.Value?.Bind(TxSlotOf);
                }
                link.Msg?.Bind(TxSlotOf);
                link.LogData?.Bind(TxSlotOf);
                link.Operator?.ParamMacro?.Bind(TxSlotOf);
            }
        var names = new string[_txSlots.Count];
        foreach (var (name, slot) in _txSlots) names[slot] = name;
        TxSlotNames = names;
        TxSlotFullNames = [.. names.Select(n => "TX:" + n)];
        foreach (var r in _all)
            for (var link = r; link is not null; link = link.Chain)
                foreach (var t in link.Targets)
                    if (t.Source == TargetSource.Tx && t.Key is null)
                        t.TxSlotsSelected = [.. Enumerable.Range(0, names.Length).Where(s => t.SelectsKey(names[s]))];
    }

    /// <summary>Each phase's rules without its markers, the order kept: what a transaction walks.</summary>
    internal WafRule[][] Runs { get; } = new WafRule[6][];
    /// <summary>
    /// Per rule of <see cref="Runs"/>: where its skipAfter resumes, an index into the same run (the first rule after
    /// the first marker of that name that follows the rule; the run's length when none follows: the rest of the phase
    /// is skipped). Resolved once per load, so a skip costs one jump instead of a walk over the rules it passes (CRS
    /// skips each paranoia level above the profile's that way, file after file).
    /// </summary>
    internal int[][] SkipAfterIndex { get; } = new int[6][];

    /// <summary>
    /// Per rule of <see cref="Runs"/>: <see cref="RuleRef.Needs"/>, the request collections its first link reads, as bits of
    /// <see cref="WafTransaction.CollectionBit"/>, or all bits when it reads anything else (TX, MATCHED_VAR, a count:
    /// a count of nothing is 0, which a rule may test). A rule none of whose collections has a value cannot match (no
    /// value is tested), so a transaction passes it by this array alone, without reading the rule (CRS's attack rules
    /// read ARGS, cookies, XML... which a plain GET does not have).
    /// </summary>
    internal RuleRef[][] RunRules { get; } = new RuleRef[6][];
    /// <summary>Per phase, the first links' targets of <see cref="Runs"/> one after the other (<see cref="RuleRef.TargetStart"/>).</summary>
    internal TargetRef[][] RunTargets { get; } = new TargetRef[6][];

    private static ulong NeedsMask(WafRule rule)
    {
        if (rule.Operator is null || rule.Targets.Count == 0) return ulong.MaxValue;
        ulong mask = 0;
        foreach (var t in rule.Targets)
        {
            if (t.Count || t.Source is not (TargetSource.Request or TargetSource.Xml)) return ulong.MaxValue;
            mask |= WafTransaction.CollectionBit(t.CollectionId);
        }
        return mask;
    }

    private void BuildRuns()
    {
        // one number per distinct sequence of transformations (CRS uses a few dozen sequences over hundreds of rules)
        var chains = new List<Transforms.Fn[]>();
        int links = 0;
        foreach (var r in _all)
            for (var link = r; link is not null; link = link.Chain)
            {
                link.TargetRefs = [.. link.Targets.Select(t => new TargetRef(t))];
                link.ExclusionArray = [.. link.Exclusions];
                link.TransformArray = [.. link.Transforms];
                link.SetVarArray = [.. link.SetVars];
                link.CtlArray = [.. link.Ctls];
                link.PureOperator = link.Operator?.Pure == true && link.Unsupported is null;
                // only links whose results a transaction keeps are numbered (the size of WafTransaction's table)
                if (link.PureOperator) link.LinkNumber = ++links;
                if (link.Transforms.Count == 0) { link.TransformChainId = 0; continue; }
                int id = chains.FindIndex(c => c.AsSpan().SequenceEqual(CollectionsMarshal.AsSpan(link.Transforms)));
                if (id < 0) { chains.Add([.. link.Transforms]); id = chains.Count - 1; }
                link.TransformChainId = id + 1;
            }
        LinkCount = links;
        KeptResults = new KeptResult?[(links + 1) * KeptWays];
        for (int p = 0; p < 6; p++)
        {
            var all = Phases[p] ?? [];
            var runs = new List<WafRule>(all.Length);
            var runIndexAt = new int[all.Length + 1]; // all[i] -> the index in runs of the first rule at or after i
            for (int i = 0; i < all.Length; i++)
            {
                runIndexAt[i] = runs.Count;
                if (all[i].Marker is null) runs.Add(all[i]);
            }
            runIndexAt[all.Length] = runs.Count;
            var jumps = new int[runs.Count];
            int r = 0;
            for (int i = 0; i < all.Length; i++)
            {
                if (all[i].Marker is not null) continue;
                jumps[r] = runs.Count;
                if (all[i].SkipAfter is { } marker)
                    for (int j = i + 1; j < all.Length; j++)
                        if (all[j].Marker == marker) { jumps[r] = runIndexAt[j]; break; }
                r++;
            }
            Runs[p] = [.. runs];
            SkipAfterIndex[p] = jumps;
            var edges = new RuleEdge[runs.Count];
            for (int i = 0; i < runs.Count; i++) edges[i] = new RuleEdge(i + 1, 0, PlainJump(runs[i], i, jumps[i], runs.Count), 0);
            RunEdges[p] = edges;
            var hot = new RuleRef[runs.Count];
            var targets = new List<TargetRef>();
            for (int i = 0; i < runs.Count; i++)
            {
                var rule = runs[i];
                hot[i] = new RuleRef(NeedsMask(rule), targets.Count, rule.TargetRefs.Length, rule.Unsupported is not null || rule.Operator is null);
                targets.AddRange(rule.TargetRefs);
            }
            RunRules[p] = hot;
            RunTargets[p] = [.. targets];
        }
    }

    /// <summary>Per rule of <see cref="Runs"/>: where the walk goes after it, when it did not match and when it did
    /// (skipAfter, skip), and the matched variables of folded rules to record on the way (<see cref="Fold"/>).</summary>
    internal RuleEdge[][] RunEdges { get; } = new RuleEdge[6][];

    /// <summary>Where a rule that matched resumes in the plain walk: its skipAfter's target, past its skip:N rules, or the next rule.</summary>
    private static int PlainJump(WafRule rule, int i, int skipAfterTarget, int n) =>
        rule.SkipAfter is not null ? skipAfterTarget : rule.Skip > 0 ? (int)Math.Min((long)i + 1 + rule.Skip, n) : i + 1;

    /// <summary>
    /// CRS's paranoia-level checks folded at load (<c>SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2" "...,pass,nolog,skipAfter:END-..."</c>,
    /// eight per rule file, two of which a PL1 request met in each phase): a rule that only tests a TX variable that
    /// no rule can set past <see cref="ConstantFold.GuardAt"/> (phase 1) has the same outcome on every request whose
    /// variable holds the value the fold assumed, so the walk's edges route around it — past the rules it skips
    /// when it matches, recording the matched variable it would have set (later rules may read MATCHED_VARS). The
    /// walk checks the assumption once, where the last writer is behind it (and at the start of each later phase),
    /// and keeps the plain edges when it does not hold. Null when nothing could be folded.
    /// </summary>
    internal ConstantFold? Fold { get; private set; }

    private void BuildFold()
    {
        // a ctl that could remove one of the folded rules, or a target of one, at run time: when it runs, the walk
        // goes back to the plain edges (WafCtl.TouchesFold)
        var ctls = new List<WafCtl>();
        foreach (var r in _all) for (var link = r; link is not null; link = link.Chain) ctls.AddRange(link.Ctls);
        static bool Touches(WafCtl c, WafRule r)
        {
            switch (c.Kind)
            {
                case CtlKind.RuleRemoveById or CtlKind.RuleRemoveTargetById:
                    foreach (var (from, to) in c.Ids) if (r.Id >= from && r.Id <= to) return true;
                    return false;
                case CtlKind.RuleRemoveByTag or CtlKind.RuleRemoveTargetByTag:
                    return r.Tags.Contains(c.Value);
                default:
                    return false;
            }
        }
        // a rule whose targets are all TX variables (TX:name, &TX:name), tested by a constant number, with no action
        // but its flow (pass, nolog, skipAfter/skip)
        static bool Candidate(WafRule r)
        {
            if (r.Chain is not null || r.Targets.Count == 0 || r.Exclusions.Count != 0 || r.SetVars.Count != 0 || r.Ctls.Count != 0) return false;
            if (r.Log && r.Id > 1) return false; // a match would be recorded
            if (r.Disruptive is not (WafDisruptive.None or WafDisruptive.Pass) || r.Capture || r.MultiMatch || r.Unsupported is not null) return false;
            if (r.Operator is not NumericOperator { Pure: true }) return false;
            foreach (var t in r.Targets) if (t.Source != TargetSource.Tx || t.Exclude || t.TxSlot < 10) return false; // TX:0-9: captures write them
            return true;
        }
        // the variables the candidates test, and where each is written: a variable written in any phase but 1 is not folded
        var slots = new Dictionary<int, int>(); // slot -> the phase-1 run index past its last writer
        for (int p = 1; p < 6; p++) foreach (var r in Runs[p]) if (Candidate(r)) foreach (var t in r.Targets) slots.TryAdd(t.TxSlot, 0);
        if (slots.Count == 0) return;
        var dropped = new HashSet<int>();
        for (int p = 1; p < 6; p++)
            for (int i = 0; i < Runs[p].Length; i++)
                for (var link = Runs[p][i]; link is not null; link = link.Chain)
                    foreach (var sv in link.SetVars)
                    {
                        if (sv.Collection != "TX") continue;
                        foreach (var slot in slots.Keys)
                        {
                            bool writes = sv.Slot == slot || sv.Name2 is { } m && m.CouldExpandTo(TxSlotNames[slot]);
                            if (!writes) continue;
                            if (p != 1) dropped.Add(slot);
                            else slots[slot] = Math.Max(slots[slot], i + 1);
                        }
                    }
        foreach (var d in dropped) slots.Remove(d);
        if (slots.Count == 0) return;
        int guard = slots.Values.Max();
        int[] foldSlots = [.. slots.Keys.Order()];
        // the values to assume: what a plain request's phase 1 leaves in them (the walk checks them before it folds)
        var probe = new WafRequest { Method = "GET", Uri = "/", RemoteAddress = "127.0.0.1" };
        probe.Headers.Add(("Host", "localhost"));
        var tx = new WafTransaction(this, probe);
        tx.Evaluate(1);
        var values = foldSlots.Select(tx.TxSlotValue).ToArray();

        var fx = new List<(string Name, string Value)[]> { Array.Empty<(string, string)>() };
        var fold = new ConstantFold { Slots = foldSlots, Values = values };
        for (int p = 1; p < 6; p++)
        {
            var runs = Runs[p];
            int n = runs.Length, from = p == 1 ? guard : 0;
            // per rule from the guard on: -1 a rule the walk visits, 0 never matches, 1 always matches (fx: what it records)
            var kind = new int[n];
            var kindFx = new (string, string)[n][];
            int folded = 0;
            for (int k = from; k < n; k++)
            {
                kind[k] = -1;
                var r = runs[k];
                if (!Candidate(r) || r.Targets.Any(t => Array.IndexOf(foldSlots, t.TxSlot) < 0)) continue;
                folded++;
                // as the walk tests it: each target's value (a count: 0 or 1), transformed, then the operator
                List<(string, string)>? hits = null;
                foreach (var t in r.Targets)
                {
                    var known = values[Array.IndexOf(foldSlots, t.TxSlot)];
                    string v, name;
                    if (t.Count) { v = known is null ? "0" : "1"; name = t.Collection; }
                    else if (known is null) continue;
                    else { v = known; name = TxSlotFullNames[t.TxSlot]; }
                    if (v.Length > 0) foreach (var fn in r.TransformArray) { if (v.Length == 0) break; v = fn(v); }
                    if (r.Operator!.Match(v, null!, false) != r.Negated) (hits ??= []).Add((name, v));
                }
                kind[k] = hits is null ? 0 : 1;
                if (hits is not null) kindFx[k] = [.. hits];
                foreach (var c in ctls) if (Touches(c, r)) c.TouchesFold = true;
            }
            if (folded == 0) continue;
            var plain = RunEdges[p];
            (int At, int Fx) Resolve(int k)
            {
                List<(string, string)>? seen = null;
                while (k < n && kind[k] >= 0)
                {
                    if (kind[k] == 1) { (seen ??= []).AddRange(kindFx[k]); k = plain[k].Jump; }
                    else k++;
                }
                if (seen is null) return (k, 0);
                fx.Add([.. seen]);
                return (k, fx.Count - 1);
            }
            var edges = (RuleEdge[])plain.Clone();
            for (int k = from; k < n; k++)
            {
                if (kind[k] >= 0) continue;
                var next = Resolve(k + 1);
                var jump = plain[k].Jump == k + 1 ? next : Resolve(plain[k].Jump);
                edges[k] = new RuleEdge(next.At, next.Fx, jump.At, jump.Fx);
            }
            var entries = new (int, int)[n - from + 1];
            for (int k = from; k <= n; k++) entries[k - from] = Resolve(k);
            fold.Edges[p] = edges;
            fold.Entries[p] = entries;
            fold.GuardAt[p] = from;
            fold.FoldedRules += folded;
        }
        fold.Fx = [.. fx];
        if (fold.FoldedRules > 0) Fold = fold;
    }

    private bool IsRemoved(WafRule r)
    {
        foreach (var (from, to) in _removedIds) if (r.Id >= from && r.Id <= to) return true;
        foreach (var tag in _removedTags) if (r.Tags.Contains(tag)) return true;
        return false;
    }

    private WafRule? Attach(WafRule rule, WafRule? chainParent)
    {
        if (chainParent is null)
        {
            _all.Add(rule);
            if (!_defaultTransforms.TryGetValue(rule.Phase, out var dt) || rule.TransformsReset) { }
            else rule.Transforms.InsertRange(0, dt);
        }
        else
        {
            var last = chainParent;
            last.Chain = rule;
            rule.Phase = last.Phase;
        }
        return rule.IsChainRequested ? rule : null;
    }

    internal static (int, int)? ParseIdRange(string s)
    {
        var dash = s.IndexOf('-', 1);
        if (dash < 0) return int.TryParse(s, out var id) ? (id, id) : null;
        return int.TryParse(s[..dash], out var a) && int.TryParse(s[(dash + 1)..], out var b) ? (a, b) : null;
    }

    // ---------------- variables ----------------

    private void ParseTargets(SecDirective d, string text, List<WafTarget> targets, List<WafTarget> exclusions)
    {
        foreach (var part in SplitTargets(text))
        {
            var t = ParseTarget(d, part, out var error);
            if (t is null) { Errors.Add(new WafLoadIssue(d.File, d.Line, error!)); continue; }
            (t.Exclude ? exclusions : targets).Add(t);
        }
    }

    /// <summary>A target to exclude, as a profile's excludeTargets[].target writes it (COLLECTION, COLLECTION:name,
    /// COLLECTION:/regex/; no '!' or '&amp;'), or null with why.</summary>
    public static WafTarget? ParseExclusionTarget(string text, out string? error)
    {
        var s = text.Trim();
        if (s.Length == 0 || s[0] is '!' or '&') { error = $"'{text}' is not a target: write COLLECTION, COLLECTION:name or COLLECTION:/regex/ (no '!' or '&')"; return null; }
        if (s.Contains('|')) { error = $"'{text}': one target per entry (no '|')"; return null; }
        var t = ParseTarget(null, "!" + s, out error);
        if (t is null) return null;
        if (t.Source is not (TargetSource.Request or TargetSource.Tx or TargetSource.Xml)) { error = $"'{text}': {t.Collection} cannot be excluded"; return null; }
        return t;
    }

    internal static WafTarget? ParseTarget(SecDirective? d, string part, out string? error)
    {
        error = null;
        bool exclude = false, count = false;
        var s = part.Trim();
        if (s.StartsWith('!')) { exclude = true; s = s[1..]; }
        if (s.StartsWith('&')) { count = true; s = s[1..]; }
        string collection = s, key = "";
        var colon = s.IndexOf(':');
        if (colon < 0) colon = s.IndexOf('.'); // TX.foo
        if (colon > 0) { collection = s[..colon]; key = s[(colon + 1)..]; }
        collection = collection.ToUpperInvariant();
        if (!Collections.Contains(collection)) { error = $"unknown variable {collection}"; return null; }
        if (key.Length >= 2 && key[0] == '\'' && key[^1] == '\'') key = key[1..^1];
        Regex? rx = null;
        (string Literal, bool Anchored)? literal = null;
        if (key.Length >= 2 && key[0] == '/' && key[^1] == '/' && collection != "XML")
        {
            try { rx = new Regex(PcreRegex.Translate(key[1..^1]), RegexOptions.IgnoreCase | RegexOptions.CultureInvariant); }
            catch (ArgumentException e) { error = $"bad selector regex {key}: {e.Message}"; return null; }
            literal = WafTarget.LiteralForm(key[1..^1]);
            key = "";
        }
        string? xpath = null;
        if (collection == "XML" && key.Length > 0)
        {
            // an XPath selector (XML:/*, XML://@*), checked here so a bad one is a load error with its line
            try { System.Xml.XPath.XPathExpression.Compile(key); }
            catch (System.Xml.XPath.XPathException e) { error = $"bad XPath {key}: {e.Message}"; return null; }
            xpath = key;
            key = "";
        }
        return new WafTarget
        {
            XPath = xpath,
            Collection = collection, Key = key.Length == 0 ? null : key.ToLowerInvariant(), KeyRegex = rx, Count = count, Exclude = exclude,
            KeyLiteral = literal?.Literal, KeyLiteralAnchored = literal?.Anchored ?? false,
        };
    }

    private static bool IsXmlSelector(StringBuilder token)
    {
        int i = 0;
        while (i < token.Length && token[i] is '!' or '&' or ' ') i++;
        return token.Length - i >= 4 && char.ToUpperInvariant(token[i]) == 'X' && char.ToUpperInvariant(token[i + 1]) == 'M'
            && char.ToUpperInvariant(token[i + 2]) == 'L' && token[i + 3] == ':';
    }

    private static List<string> SplitTargets(string text)
    {
        var list = new List<string>();
        var sb = new StringBuilder();
        bool inRegex = false, inQuote = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\\' && inRegex && i + 1 < text.Length) { sb.Append(c).Append(text[++i]); continue; }
            if (c == '\'' && !inRegex) inQuote = !inQuote;
            // XML:/path is an XPath, not a /regex/ (its slashes do not open one)
            if (c == '/' && !inQuote && !IsXmlSelector(sb) && (inRegex || sb.Length > 0 && (sb[^1] == ':' || sb[^1] == '\''))) inRegex = !inRegex;
            if (c == '|' && !inRegex && !inQuote) { if (sb.Length > 0) list.Add(sb.ToString()); sb.Clear(); continue; }
            sb.Append(c);
        }
        if (sb.Length > 0) list.Add(sb.ToString());
        return list;
    }

    // ---------------- operators ----------------

    private void ParseOperator(SecDirective d, string text, WafRule rule)
    {
        var s = text;
        if (s.StartsWith('!')) { rule.Negated = true; s = s[1..]; }
        string name = "rx", param = s;
        if (s.StartsWith('@'))
        {
            int sp = s.IndexOf(' ');
            name = sp < 0 ? s[1..] : s[1..sp];
            param = sp < 0 ? "" : s[(sp + 1)..];
        }
        try
        {
            rule.Operator = CompileOperator(d, name, param, out var unsupported);
            if (unsupported is not null) rule.Unsupported ??= unsupported;
        }
        catch (ArgumentException e)
        {
            rule.Unsupported ??= $"@{name}: {e.Message}";
        }
    }

    /// <summary>
    /// A rule's @rx. The non-backtracking engine where the pattern allows it: matching is linear in the input (no
    /// catastrophic backtracking on attacker-chosen values) and, with CRS's large alternations, several times faster
    /// than the backtracking interpreter (Native AOT has no compiled regexes). Patterns it refuses (lookarounds,
    /// backreferences, atomic groups) use the backtracking engine.
    /// </summary>
    private static readonly Regex NeverMatches = new("(?!)", RegexOptions.CultureInvariant);

    internal static Regex CompileRx(string pattern)
    {
        const RegexOptions options = RegexOptions.Singleline | RegexOptions.CultureInvariant;
        try { return new Regex(pattern, options | RegexOptions.NonBacktracking); }
        catch (NotSupportedException) { return new Regex(pattern, options); }
    }

    private WafOperator? CompileOperator(SecDirective d, string name, string param, out string? unsupported)
    {
        unsupported = null;
        switch (name.ToLowerInvariant())
        {
            case "rx":
                if (param.Contains("%{", StringComparison.Ordinal)) // compiled per expansion (RxOperator.Pattern)
                    return new RxOperator { Name = name, Regex = NeverMatches, Pattern = Macro.Parse(param) };
                return new RxOperator { Name = name, Regex = CompileRx(PcreRegex.Translate(param)) };
            case "pm":
                return new PmOperator { Name = name, Phrases = new AhoCorasick(param.Split(' ', StringSplitOptions.RemoveEmptyEntries)) };
            case "pmfromfile" or "pmf":
                var phrases = new List<string>();
                foreach (var f in param.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                {
                    var path = Path.IsPathRooted(f) ? f : Path.Combine(Path.GetDirectoryName(d.File) ?? ".", f);
                    if (!File.Exists(path)) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"@pmFromFile: {path} does not exist")); continue; }
                    foreach (var line in File.ReadAllLines(path, Encoding.Latin1))
                    {
                        var t = line.Trim();
                        if (t.Length == 0 || t[0] == '#') continue;
                        phrases.Add(t);
                    }
                }
                return new PmOperator { Name = name, Phrases = new AhoCorasick(phrases) };
            case "contains": return new StringOperator { Name = name, Op = StringOp.Contains, Param = Macro.Parse(param) };
            case "beginswith": return new StringOperator { Name = name, Op = StringOp.BeginsWith, Param = Macro.Parse(param) };
            case "endswith": return new StringOperator { Name = name, Op = StringOp.EndsWith, Param = Macro.Parse(param) };
            case "streq": return new StringOperator { Name = name, Op = StringOp.StrEq, Param = Macro.Parse(param) };
            case "within": return new StringOperator { Name = name, Op = StringOp.Within, Param = Macro.Parse(param) };
            case "eq": return new NumericOperator { Name = name, Op = NumOp.Eq, Param = Macro.Parse(param) };
            case "ge": return new NumericOperator { Name = name, Op = NumOp.Ge, Param = Macro.Parse(param) };
            case "gt": return new NumericOperator { Name = name, Op = NumOp.Gt, Param = Macro.Parse(param) };
            case "le": return new NumericOperator { Name = name, Op = NumOp.Le, Param = Macro.Parse(param) };
            case "lt": return new NumericOperator { Name = name, Op = NumOp.Lt, Param = Macro.Parse(param) };
            case "validatebyterange":
                var allowed = ByteRangeOperator.Parse(param);
                if (allowed is null) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"@validateByteRange: bad range '{param}'")); return null; }
                return new ByteRangeOperator { Name = name, Allowed = allowed };
            case "validateurlencoding": return new UrlEncodingOperator { Name = name };
            case "validateutf8encoding": return new Utf8EncodingOperator { Name = name };
            case "detectsqli": return new SqliOperator { Name = name };
            case "detectxss": return new XssOperator { Name = name };
            case "unconditionalmatch": return new UnconditionalOperator { Name = name };
            case "nomatch": return new UnconditionalOperator { Name = name, Result = false };
            case "ipmatch":
                var ranges = new List<Policy.AddressRange>();
                foreach (var part in param.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries))
                {
                    if (Policy.Cidr.TryParse(part, out var range, out var err)) ranges.Add(range);
                    else Errors.Add(new WafLoadIssue(d.File, d.Line, $"@ipMatch: {err}"));
                }
                return new IpMatchOperator { Name = name, Set = Policy.CidrSet.Build(ranges) };
            default:
                unsupported = $"operator @{name} is not supported";
                return null;
        }
    }

    // ---------------- actions ----------------

    private void ParseActions(SecDirective d, string text, WafRule rule, bool chainLinkOrDefault)
    {
        foreach (var (name, value) in SplitActions(text))
        {
            switch (name.ToLowerInvariant())
            {
                case "id":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var id)) Errors.Add(new WafLoadIssue(d.File, d.Line, $"id: '{value}' is not a number"));
                    rule.Id = id;
                    break;
                case "phase":
                    rule.Phase = value.ToLowerInvariant() switch { "request" => 2, "response" => 4, "logging" => 5, _ => int.TryParse(value, out var p) && p is >= 1 and <= 5 ? p : -1 };
                    if (rule.Phase < 0) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"phase: '{value}' is not 1–5")); rule.Phase = 2; }
                    break;
                case "t":
                    if (value.Equals("none", StringComparison.OrdinalIgnoreCase)) { rule.Transforms.Clear(); rule.TransformsReset = true; break; }
                    var fn = Transforms.Get(value);
                    if (fn is null) rule.Unsupported ??= $"transformation t:{value} is not supported";
                    else rule.Transforms.Add(fn);
                    break;
                case "block": rule.Disruptive = WafDisruptive.Block; break;
                case "deny": rule.Disruptive = WafDisruptive.Deny; break;
                case "drop": rule.Disruptive = WafDisruptive.Drop; break;
                case "pass": rule.Disruptive = WafDisruptive.Pass; break;
                case "allow":
                    if (value.Length > 0) rule.Unsupported ??= $"allow:{value} is not supported";
                    rule.Disruptive = WafDisruptive.Allow;
                    break;
                case "capture": rule.Capture = true; break;
                case "chain": rule.IsChainRequested = true; break;
                case "multimatch": rule.MultiMatch = true; break;
                case "log": case "auditlog": rule.Log = true; break;
                case "nolog": rule.Log = false; break;
                case "noauditlog": break;
                case "msg": rule.Msg = Macro.Parse(value); break;
                case "logdata": rule.LogData = Macro.Parse(value); break;
                case "tag": rule.Tags.Add(value); break;
                case "ver": case "rev": case "maturity": case "accuracy": break;
                case "severity":
                    rule.Severity = value.ToUpperInvariant() switch
                    {
                        "EMERGENCY" => 0, "ALERT" => 1, "CRITICAL" => 2, "ERROR" => 3, "WARNING" => 4, "NOTICE" => 5, "INFO" => 6, "DEBUG" => 7,
                        _ => int.TryParse(value, out var sv) ? sv : -1,
                    };
                    break;
                case "status": _ = int.TryParse(value, out var st); rule.Status = st; break;
                case "skipafter": rule.SkipAfter = value; break;
                case "skip": _ = int.TryParse(value, out var sk); rule.Skip = sk; break;
                case "setvar":
                    if (ParseSetVar(value) is { } sv2) rule.SetVars.Add(sv2);
                    else Errors.Add(new WafLoadIssue(d.File, d.Line, $"setvar: cannot read '{value}'"));
                    break;
                case "expirevar": break; // persistent collections are not kept: nothing expires
                case "initcol":
                    Warnings.Add(new WafLoadIssue(d.File, d.Line, $"initcol:{value}: persistent collections are not supported (the collection lives for one request)"));
                    break;
                case "ctl":
                    if (ParseCtl(d, value) is { } ctl) rule.Ctls.Add(ctl);
                    break;
                default:
                    rule.Unsupported ??= $"action {name} is not supported";
                    break;
            }
        }
        _ = chainLinkOrDefault;
    }

    private WafCtl? ParseCtl(SecDirective d, string value)
    {
        var eq = value.IndexOf('=');
        if (eq < 0) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:{value}: expected name=value")); return null; }
        var name = value[..eq];
        var v = value[(eq + 1)..];
        switch (name.ToLowerInvariant())
        {
            case "ruleremovebyid":
                var ids = new List<(int, int)>();
                foreach (var part in v.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    if (ParseIdRange(part) is { } r) ids.Add(r);
                    else Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:ruleRemoveById: '{part}' is not an id"));
                return new WafCtl(CtlKind.RuleRemoveById, v, [.. ids], null);
            case "ruleremovebytag": return new WafCtl(CtlKind.RuleRemoveByTag, v, [], null);
            case "ruleremovetargetbyid":
            case "ruleremovetargetbytag":
                var semi = v.IndexOf(';');
                if (semi < 0) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:{name}: expected ID;TARGET")); return null; }
                var target = ParseTarget(d, v[(semi + 1)..], out var err);
                if (target is null) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:{name}: {err}")); return null; }
                if (name.Equals("ruleRemoveTargetById", StringComparison.OrdinalIgnoreCase))
                {
                    var range = ParseIdRange(v[..semi]);
                    if (range is null) { Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:{name}: '{v[..semi]}' is not an id")); return null; }
                    return new WafCtl(CtlKind.RuleRemoveTargetById, v[..semi], [range.Value], target);
                }
                return new WafCtl(CtlKind.RuleRemoveTargetByTag, v[..semi], [], target);
            case "ruleengine": return new WafCtl(CtlKind.RuleEngine, v, [], null);
            case "requestbodyprocessor": return new WafCtl(CtlKind.RequestBodyProcessor, v.ToUpperInvariant(), [], null);
            case "forcerequestbodyvariable": return new WafCtl(CtlKind.ForceRequestBodyVariable, v, [], null);
            case "auditengine": case "auditlogparts": case "debugloglevel": return new WafCtl(CtlKind.Ignored, v, [], null);
            default:
                Errors.Add(new WafLoadIssue(d.File, d.Line, $"ctl:{name} is not supported"));
                return null;
        }
    }

    private static WafSetVar? ParseSetVar(string v)
    {
        bool delete = v.StartsWith('!');
        if (delete) v = v[1..];
        var eq = v.IndexOf('=');
        var target = eq < 0 ? v : v[..eq];
        var dot = target.IndexOf('.');
        if (dot <= 0) return null;
        var collection = target[..dot].ToUpperInvariant();
        var name = target[(dot + 1)..];
        char op = '=';
        Macro? value = null;
        if (eq >= 0)
        {
            var rest = v[(eq + 1)..];
            if (rest.StartsWith('+') || rest.StartsWith('-')) { op = rest[0]; rest = rest[1..]; }
            value = Macro.Parse(rest);
        }
        else if (!delete) value = Macro.Parse("1");
        var nameMacro = name.Contains("%{", StringComparison.Ordinal) ? Macro.Parse(name) : null;
        return new WafSetVar(collection, name.ToLowerInvariant(), nameMacro, op, value, delete);
    }

    private static List<(string Name, string Value)> SplitActions(string text)
    {
        var list = new List<(string, string)>();
        int i = 0;
        while (i < text.Length)
        {
            while (i < text.Length && (text[i] == ',' || text[i] == ' ' || text[i] == '\t')) i++;
            if (i >= text.Length) break;
            int start = i;
            while (i < text.Length && text[i] != ':' && text[i] != ',') i++;
            var name = text[start..i].Trim();
            string value = "";
            if (i < text.Length && text[i] == ':')
            {
                i++;
                while (i < text.Length && text[i] == ' ') i++;
                if (i < text.Length && text[i] == '\'')
                {
                    var sb = new StringBuilder();
                    i++;
                    while (i < text.Length && text[i] != '\'')
                    {
                        if (text[i] == '\\' && i + 1 < text.Length && text[i + 1] == '\'') { sb.Append('\''); i += 2; continue; }
                        sb.Append(text[i++]);
                    }
                    i++;
                    value = sb.ToString();
                }
                else
                {
                    int vs = i;
                    while (i < text.Length && text[i] != ',') i++;
                    value = text[vs..i].Trim();
                }
            }
            list.Add((name, value));
        }
        return list;
    }
}
