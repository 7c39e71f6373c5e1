using System.Text.RegularExpressions;

namespace FastGate.Waf;

/// <summary>A variable selector of a rule: COLLECTION, COLLECTION:key, COLLECTION:/regex/, and &amp;COLLECTION (a count).</summary>
public sealed class WafTarget
{
    private readonly string _collection = "";
    public required string Collection
    {
        get => _collection;
        init
        {
            _collection = value;
            CollectionId = WafCollections.Id(value);
            Source = value switch
            {
                "TX" => TargetSource.Tx,
                "MATCHED_VAR" => TargetSource.MatchedVar,
                "MATCHED_VAR_NAME" => TargetSource.MatchedVarName,
                "MATCHED_VARS" => TargetSource.MatchedVars,
                "MATCHED_VARS_NAMES" => TargetSource.MatchedVarsNames,
                "IP" or "GLOBAL" or "SESSION" or "USER" => TargetSource.Persistent,
                "XML" => TargetSource.Xml,
                _ => TargetSource.Request,
            };
        }
    }
    /// <summary>Lower-cased key, or null for the whole collection.</summary>
    public string? Key { get; init; }
    public Regex? KeyRegex { get; init; }
    /// <summary>The XPath expression of an XML:xpath target (XML:/*, XML://@*), or null.</summary>
    public string? XPath { get; init; }
    public bool Count { get; init; }
    public bool Exclude { get; init; }
    /// <summary>The TX slot of a TX:key target in its rule set's TX table (bound at load), else -1.</summary>
    internal int TxSlot { get; set; } = -1;
    /// <summary>For a TX target without a key (TX:/^header_name_/, TX): the slots of its rule set's TX table whose
    /// names it selects, worked out at load (the slot names are fixed), so it is not matched against every slot's name
    /// per request; names made at run time are still matched one by one. Null: not worked out.</summary>
    internal int[]? TxSlotsSelected { get; set; }
    /// <summary>"TX:key", made once for the matched-variable name of a TX:key target.</summary>
    internal string? TxName { get; set; }

    /// <summary><see cref="Collection"/>'s number in <see cref="WafCollections"/>.</summary>
    internal int CollectionId { get; private init; }
    /// <summary>Where the values come from, worked out once from <see cref="Collection"/>.</summary>
    internal TargetSource Source { get; private init; }

    /// <summary>
    /// A selector regex that is only a literal (CRS's <c>/__utm/</c>, <c>/^header_name_/</c>, <c>/rfi_parameter_.*/</c>,
    /// <c>/MULTIPART_HEADERS_CONTENT_TYPES_*/</c>) as the text every key that matches contains (or starts with, when
    /// <see cref="KeyLiteralAnchored"/>): keys are then matched with a case-insensitive search instead of the regex.
    /// </summary>
    internal string? KeyLiteral { get; init; }
    internal bool KeyLiteralAnchored { get; init; }

    /// <summary>Whether this target's key part (a name, a regex or none) selects <paramref name="key"/> (lower-cased).</summary>
    internal bool SelectsKey(string key)
    {
        if (Key is not null) return Key == key;
        if (KeyLiteral is { } lit)
            return KeyLiteralAnchored ? key.StartsWith(lit, StringComparison.OrdinalIgnoreCase) : key.Contains(lit, StringComparison.OrdinalIgnoreCase);
        return KeyRegex is null || KeyRegex.IsMatch(key);
    }

    public bool Selects(string collection, string key) => collection == Collection && SelectsKey(key);

    /// <summary>
    /// The literal a selector regex amounts to, or null: <c>^?LIT</c>, <c>^?LIT.*</c> or <c>^?LITx*</c> (x the
    /// literal's last character: zero or more of it adds nothing to "contains"), LIT letters, digits, '_' and '-'.
    /// </summary>
    internal static (string Literal, bool Anchored)? LiteralForm(string pattern)
    {
        var p = pattern.AsSpan();
        bool anchored = p.Length > 0 && p[0] == '^';
        if (anchored) p = p[1..];
        if (p.EndsWith(".*")) p = p[..^2];
        else if (p.Length >= 2 && p[^1] == '*' && IsLiteral(p[^2])) p = p[..^2];
        if (p.Length == 0) return null;
        foreach (var c in p) if (!IsLiteral(c)) return null;
        return (p.ToString(), anchored);
    }

    private static bool IsLiteral(char c) => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_' or '-';

    public override string ToString() => (Exclude ? "!" : Count ? "&" : "") + Collection + (Key is not null ? ":" + Key : KeyRegex is not null ? ":/" + KeyRegex + "/" : XPath is not null ? ":" + XPath : "");
}

/// <summary>
/// A number for each collection name (REQUEST_HEADERS, ARGS, ...), the same for every rule set of the process: a
/// transaction keeps its collections in an array indexed by it. Names come from rule files and the engine's own
/// collections, a bounded set.
/// </summary>
internal static class WafCollections
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> s_ids = new(StringComparer.Ordinal);
    private static readonly object s_lock = new();

    public static int Count => s_ids.Count;

    public static readonly int RequestHeaders = Id("REQUEST_HEADERS"), RequestHeadersNames = Id("REQUEST_HEADERS_NAMES"), Xml = Id("XML");

    public static int Id(string name)
    {
        if (s_ids.TryGetValue(name, out int id)) return id;
        lock (s_lock) // rare: a name seen for the first time (rule loading, the first request)
        {
            if (!s_ids.TryGetValue(name, out id)) s_ids[name] = id = s_ids.Count;
            return id;
        }
    }
}

/// <summary>
/// What the rule walk reads of a target before it knows there are values, copied out of the <see cref="WafTarget"/>
/// into arrays of these (one per phase for the rules' first links, one per chain link), so passing a target whose
/// collection is empty touches one contiguous array and not a list, its array and the target object (the walk was
/// bound by those cache misses).
/// </summary>
internal readonly struct TargetRef(WafTarget target)
{
    public readonly WafTarget Target = target;
    public readonly int CollectionId = target.CollectionId;
    public readonly TargetSource Source = target.Source;
    public readonly bool Count = target.Count;
    public readonly int TxSlot = target.TxSlot;
}

/// <summary>A rule of a phase's run as the walk first sees it: the collections it needs (WafRuleSet.RunRules), where its
/// first link's targets start in the phase's target array and how many, and whether it cannot run at all.</summary>
internal readonly record struct RuleRef(ulong Needs, int TargetStart, int TargetCount, bool Disabled);

/// <summary>Where the walk goes after a rule of a phase's run: <see cref="Next"/> when it did not match, <see cref="Jump"/>
/// when it did (its skipAfter or skip; the next rule otherwise), and the folded rules' matched variables to record on
/// the way (an index into <see cref="ConstantFold.Fx"/>, 0: none).</summary>
internal readonly record struct RuleEdge(int Next, int NextFx, int Jump, int JumpFx);

/// <summary>The rule set's constant checks folded into the walk's edges (WafRuleSet.Fold): valid while the TX
/// <see cref="Slots"/> hold <see cref="Values"/>, which the walk checks at <see cref="GuardAt"/>.</summary>
internal sealed class ConstantFold
{
    public required int[] Slots { get; init; }
    public required string?[] Values { get; init; }
    /// <summary>Per phase: the folded edges (null: nothing folded in that phase).</summary>
    public RuleEdge[]?[] Edges { get; } = new RuleEdge[]?[6];
    /// <summary>Per phase: the run index from which the fold holds (phase 1: past the last rule that may set a slot; later phases: 0).</summary>
    public int[] GuardAt { get; } = new int[6];
    /// <summary>Per phase: for each run index k from GuardAt on (and the run's end), where the folded walk continues and what it records.</summary>
    public (int At, int Fx)[]?[] Entries { get; } = new (int, int)[]?[6];
    /// <summary>The matched variables (name, value) the folded rules would have recorded, by the index the edges carry; [0] is empty.</summary>
    public (string Name, string Value)[][] Fx { get; set; } = [];
    /// <summary>How many rules (over all phases) the folded walk never visits for being constant.</summary>
    public int FoldedRules { get; set; }
}

internal enum TargetSource : byte { Unset, Tx, MatchedVar, MatchedVarName, MatchedVars, MatchedVarsNames, Persistent, Request, Xml }

public enum WafDisruptive : byte { None, Pass, Block, Deny, Drop, Allow }

public enum CtlKind : byte { RuleRemoveById, RuleRemoveByTag, RuleRemoveTargetById, RuleRemoveTargetByTag, RuleEngine, RequestBodyProcessor, ForceRequestBodyVariable, Ignored }

public sealed record WafCtl(CtlKind Kind, string Value, (int From, int To)[] Ids, WafTarget? Target)
{
    /// <summary>Whether this ctl may remove a rule the rule set's fold routes around (or a target of one), set at load:
    /// once it runs, the transaction walks the plain edges (WafRuleSet.Fold).</summary>
    internal bool TouchesFold { get; set; }
}

public sealed record WafSetVar(string Collection, string Name, Macro? Name2, char Op, Macro? Value, bool Delete)
{
    /// <summary>The TX slot of a tx.name setvar whose name has no macro (bound at load), else -1.</summary>
    internal int Slot { get; set; } = -1;
    /// <summary>This setvar's number among its rule set's setvars with a macro in the name (bound at load), else -1.</summary>
    internal int NameIndex { get; set; } = -1;
    /// <summary>This setvar's number among its rule set's setvars whose value has two or more parts (CRS 920450's
    /// '/%{tx.0}/'), bound at load, else -1: a transaction keeps what it expanded to while the parts repeat.</summary>
    internal int ValueIndex { get; set; } = -1;
}

/// <summary>One compiled SecRule / SecAction (a chain link points at the next), or a SecMarker.</summary>
public sealed class WafRule
{
    public int Id { get; set; }
    public int Phase { get; set; } = 2;
    public required string File { get; init; }
    public int Line { get; init; }
    public string? Marker { get; init; }
    public List<WafTarget> Targets { get; } = [];
    public List<WafTarget> Exclusions { get; } = [];
    public WafOperator? Operator { get; set; }
    public bool Negated { get; set; }
    public List<Transforms.Fn> Transforms { get; } = [];
    /// <summary>A number for this link's sequence of transformations, the same for every link of the rule set with the
    /// same sequence (0: none); a transaction keeps each value's result per sequence (set at load).</summary>
    internal int TransformChainId { get; set; }
    public bool TransformsReset { get; set; }
    public bool Capture { get; set; }
    public bool MultiMatch { get; set; }
    public bool Log { get; set; } = true;
    public WafDisruptive Disruptive { get; set; }
    public List<WafSetVar> SetVars { get; } = [];
    public List<WafCtl> Ctls { get; } = [];
    public string? SkipAfter { get; set; }
    public int Skip { get; set; }
    public Macro? Msg { get; set; }
    public Macro? LogData { get; set; }
    public List<string> Tags { get; } = [];
    public int Severity { get; set; } = -1;
    public int Status { get; set; }
    public WafRule? Chain { get; set; }
    /// <summary>Why the rule cannot run (an unsupported operator, variable, action): it never matches.</summary>
    public string? Unsupported { get; set; }
    public bool IsChainLink { get; init; }
    public bool IsChainRequested { get; set; }

    public string Where => $"{File}:{Line}";

    /// <summary>The lists above as arrays (set at load, BuildRuns): what the rule walk iterates.</summary>
    internal TargetRef[] TargetRefs { get; set; } = [];
    internal WafTarget[] ExclusionArray { get; set; } = [];
    internal Transforms.Fn[] TransformArray { get; set; } = [];
    internal WafSetVar[] SetVarArray { get; set; } = [];
    internal WafCtl[] CtlArray { get; set; } = [];

    /// <summary>Whether the operator's result depends on the value alone (<see cref="WafOperator.Pure"/>), set at load.</summary>
    internal bool PureOperator { get; set; }
    /// <summary>This link's place in a transaction's table of kept results (1.., in load order; 0: a link whose
    /// operator is not pure, whose results are not kept), set at load.</summary>
    internal int LinkNumber { get; set; }

    /// <summary>This rule's number among its rule set's chain starters (0..RuleSet.Ordinals-1), set at load.</summary>
    internal int Ordinal { get; set; }

    private string? _idText;
    /// <summary>The id as text (%{rule.id}), made once.</summary>
    internal string IdText => _idText ??= Id.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
