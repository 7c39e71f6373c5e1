using System.Runtime.InteropServices;
using System.Text;

namespace FastGate.Waf;

/// <summary>The request as the WAF sees it: text fields hold bytes as Latin-1 chars.</summary>
public sealed class WafRequest
{
    public string Method { get; set; } = "GET";
    /// <summary>The request target as received (path and query).</summary>
    public string Uri { get; set; } = "/";
    public string Protocol { get; set; } = "HTTP/1.1";
    public string RemoteAddress { get; set; } = "127.0.0.1";
    public List<(string Name, string Value)> Headers { get; } = [];
    public byte[]? Body { get; set; }
}

/// <summary>A rule that matched: its id, the anomaly-relevant severity, and a short prefix of the matched data.</summary>
public readonly record struct WafMatch(int Id, int Severity, string Message, string Data)
{
    /// <summary>The rule's number in its rule set (<see cref="WafRule.Ordinal"/>): what per-rule tables are indexed by.</summary>
    internal int Ordinal { get; init; }
}

/// <summary>
/// One request's evaluation: the request's collections (built once), TX, the matches. Not on the plain path: only
/// routes with a WAF profile create one.
/// </summary>
public sealed partial class WafTransaction
{
    private WafRuleSet _set;
    private WafRequest _request;
    // the request's collections by WafCollections id (a number per collection name, fixed for the process), so a
    // rule's target finds its values by index rather than by hashing the collection name
    private List<(string Key, string Name, string Value)>?[] _collections = new List<(string, string, string)>?[WafCollections.Count + 8];
    // TX: the rule set's named variables by slot (WafRuleSet.TxSlotOf), names made at run time in _txDynamic
    private string?[] _txs = [];
    private readonly Dictionary<string, string> _txDynamic = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<string, string>> _other = new(StringComparer.Ordinal);
    private readonly List<(int From, int To)> _removedIds = [];
    private readonly List<string> _removedTags = [];
    private readonly List<(int From, int To, WafTarget Target)> _removedTargetsById = [];
    private readonly List<(string Tag, WafTarget Target)> _removedTargetsByTag = [];
    private readonly List<(string Name, string Value)> _matchedVars = [];
    private readonly List<(string Key, string Name, string Value)> _resolved = [], _counted = [];
    // transformation results of this request: CRS rules apply the same chains (t:urlDecodeUni, t:htmlEntityDecode,
    // t:lowercase...) to the same values over and over; each (value, function) is computed once
    private readonly Dictionary<(string Value, Transforms.Fn Fn), string> _transformed = new(TransformKeyComparer.Instance);
    private readonly Dictionary<(string Value, int Chain), string> _chained = new(ChainKeyComparer.Instance);
    // kept from request to request (a connection's requests repeat their method, line, Host, User-Agent... and
    // WafStep keeps those strings while their bytes repeat): the results of pure operators (WafOperator.Pure) and of
    // transformation sequences, keyed by the value string's identity — a string never changes, so an entry stays true
    // for as long as it exists. Only values that repeat go in: the request line's and headers' collections
    // (StableCollections), TX and the matched variables; arguments, cookies and bodies are new strings every request.
    // Cleared when the rule set changes or past StableLimit entries (a bound on what a connection keeps).
    private readonly Dictionary<(string Value, WafOperator Op), bool> _opResults = new(OpKeyComparer.Instance);
    private readonly Dictionary<(string Value, int Chain), string> _chainedStable = new(ChainKeyComparer.Instance);
    private WafRuleSet? _stableSet;
    private bool _stableValues;
    private const int StableLimit = 1024;

    /// <summary>The request collections whose values are the same strings request after request while their bytes
    /// repeat (WafStep.Same, the line and URI memos below), as CollectionBit bits (never bit 63, which ids past 62 share).</summary>
    private static readonly ulong StableCollections = Mask("REQUEST_METHOD", "REQUEST_PROTOCOL", "REQUEST_LINE", "REQUEST_URI_RAW", "REQUEST_URI",
        "REQUEST_FILENAME", "REQUEST_BASENAME", "QUERY_STRING", "REMOTE_ADDR", "UNIQUE_ID", "DURATION", "REQUEST_HEADERS",
        "REQUEST_HEADERS_NAMES", "REQBODY_ERROR", "MULTIPART_STRICT_ERROR", "MULTIPART_UNMATCHED_BOUNDARY", "ARGS_COMBINED_SIZE");

    private static ulong Mask(params string[] names)
    {
        ulong mask = 0;
        foreach (var n in names) { int id = WafCollections.Id(n); if (id < 63) mask |= 1UL << id; }
        return mask;
    }
    private string _matchedVar = "", _matchedVarName = "";
    private WafRule? _currentRule;
    private bool _bodyDone;

    public WafTransaction(WafRuleSet set, WafRequest request)
    {
        _set = set;
        _request = request;
        _stableSet = set;
        NewSlots(set);
        BuildRequestCollections();
    }

    /// <summary>
    /// Starts the evaluation of another request on this transaction's collections, tables and caches (a connection
    /// keeps one: the lists and dictionaries a CRS evaluation fills are cleared, not allocated again).
    /// </summary>
    public void Reset(WafRuleSet set, WafRequest request)
    {
        _set = set;
        _request = request;
        foreach (var list in _collections) list?.Clear();
        _present = 1UL << 63;
        if (_txs.Length != set.TxSlotNames.Length) NewSlots(set);
        else if (_dirtyOverflow) Array.Clear(_txs);
        else
        {
            // only the slots this request gave a value (a CRS request touches a few dozen of some hundred)
            var dirty = _dirtySlots;
            for (int i = 0; i < _dirtyCount; i++) _txs[dirty[i]] = null;
        }
        _dirtyCount = 0;
        _dirtyOverflow = false;
        _txDynamic.Clear();
        _other.Clear();
        _removedIds.Clear();
        _removedTags.Clear();
        _removedTargetsById.Clear();
        _removedTargetsByTag.Clear();
        _matchedVars.Clear();
        _resolved.Clear();
        _counted.Clear();
        _transformed.Clear();
        if (_chained.Count > 0) _chained.Clear();
        if (!ReferenceEquals(_stableSet, set) || _opResults.Count > StableLimit || _chainedStable.Count > StableLimit)
        {
            _opResults.Clear();
            _chainedStable.Clear();
            _stableSet = set;
        }
        _xml = null;
        _xpathValues.Clear();
        _matchedVar = _matchedVarName = "";
        _currentRule = null;
        _bodyDone = false;
        ResponseInspected = false;
        _foldBroken = false;
        Matches.Clear();
        Interruption = null;
        Status = 0;
        RuleEngine = null;
        Allowed = false;
        RequestBodyProcessor = "";
        BuildRequestCollections();
    }

    public List<WafMatch> Matches { get; } = [];

    // the access log's summary of the last request on this transaction, and what it was made of (a connection's
    // requests often match the same rules with the same score: the string is reused, not built again)
    private string? _summary;
    private int[] _summaryIds = [];
    private int _summaryCount = -1, _summaryScore;

    /// <summary>"ids score" for the access log (WafProfile.Summary), reused while the matched ids and score repeat.</summary>
    internal string Summary()
    {
        int score = AnomalyScore;
        var matches = CollectionsMarshal.AsSpan(Matches);
        if (_summary is not null && _summaryCount == matches.Length && _summaryScore == score)
        {
            bool same = true;
            for (int i = 0; i < matches.Length; i++) if (_summaryIds[i] != matches[i].Id) { same = false; break; }
            if (same) return _summary;
        }
        var sb = new StringBuilder();
        foreach (var m in matches) { if (sb.Length > 0) sb.Append(','); sb.Append(m.Id); }
        sb.Append(sb.Length > 0 ? " " : "").Append("score=").Append(score);
        if (_summaryIds.Length < matches.Length) _summaryIds = new int[Math.Max(8, matches.Length)];
        for (int i = 0; i < matches.Length; i++) _summaryIds[i] = matches[i].Id;
        _summaryCount = matches.Length;
        _summaryScore = score;
        return _summary = sb.ToString();
    }

    /// <summary>The request body (read before phase 2).</summary>
    public void SetBody(byte[]? body) { if (!_bodyDone) _request.Body = body; }
    /// <summary>The rule that interrupted (deny/drop), or null.</summary>
    public WafRule? Interruption { get; private set; }
    public int Status { get; private set; }
    /// <summary>ctl:ruleEngine of this request (On, Off, DetectionOnly), or null.</summary>
    public string? RuleEngine { get; private set; }
    public bool Allowed { get; private set; }
    public string RequestBodyProcessor { get; private set; } = "";
    public int AnomalyScore => (int)NumericOperator.ToNumber(Tx("anomaly_score") ?? Tx("inbound_anomaly_score") ?? "0");
    public string? Tx(string name) => _set.TryTxSlot(name, out var slot) ? _txs[slot] : _txDynamic.TryGetValue(name, out var v) ? v : null;

    private void TxSet(string name, string value)
    {
        if (_set.TryTxSlot(name, out var slot)) SetSlot(slot, value);
        else _txDynamic[name] = value;
    }

    // the TX slots given a value since the last Reset (each time one went from null to a value), so Reset clears
    // those and not the whole table; past the array's length, Reset clears it all
    private int[] _dirtySlots = [];
    private int _dirtyCount;
    private bool _dirtyOverflow;

    private void NewSlots(WafRuleSet set)
    {
        _txs = new string?[set.TxSlotNames.Length];
        _dirtySlots = new int[set.TxSlotNames.Length];
        _dirtyCount = 0;
        _dirtyOverflow = false;
    }

    private void SetSlot(int slot, string value)
    {
        if (_txs[slot] is null)
        {
            if (_dirtyCount < _dirtySlots.Length) _dirtySlots[_dirtyCount++] = slot;
            else _dirtyOverflow = true;
        }
        _txs[slot] = value;
    }

    // setvar arithmetic's results (anomaly scores...): the small ones without a new string each time
    private static readonly string[] s_numbers = [.. Enumerable.Range(0, 1000).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    private static string Number(long n) => (ulong)n < (ulong)s_numbers.Length ? s_numbers[n] : n.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private void TxRemove(string name)
    {
        if (_set.TryTxSlot(name, out var slot)) _txs[slot] = null;
        else _txDynamic.Remove(name);
    }

    /// <summary>Runs phase 1 (headers) and, with the body, phase 2. True when the request is to be refused.</summary>
    public bool Evaluate(int phase)
    {
        if (Interruption is not null || Allowed) return Interruption is not null;
        if (phase == 2 && !_bodyDone) ProcessBody();
        RunPhase(phase);
        return Interruption is not null;
    }

    // ---------------- collections ----------------

    private void Add(string collection, string key, string name, string value)
    {
        int id = WafCollections.Id(collection);
        if (id >= _collections.Length) Array.Resize(ref _collections, Math.Max(id + 1, _collections.Length * 2));
        (_collections[id] ??= []).Add((key.ToLowerInvariant(), name, value));
        _present |= CollectionBit(id);
    }

    private static (string, string, string, string) HeaderNames(string name) =>
        (name, name.ToLowerInvariant(), "REQUEST_HEADERS:" + name, "REQUEST_HEADERS_NAMES:" + name);

    /// <summary>Adds a value whose key is lower-cased already, to a collection by id.</summary>
    private void AddKeyed(int id, string key, string name, string value)
    {
        if (id >= _collections.Length) Array.Resize(ref _collections, Math.Max(id + 1, _collections.Length * 2));
        (_collections[id] ??= []).Add((key, name, value));
        _present |= CollectionBit(id);
    }

    /// <summary>The bit of a collection id in the masks of WafRuleSet.RunRules (RuleRef.Needs); ids past 62 share bit 63, which is
    /// always present (such a rule is always evaluated).</summary>
    internal static ulong CollectionBit(int id) => 1UL << Math.Min(id, 63);

    // the request collections that have a value, by CollectionBit (bit 63 always set)
    private ulong _present = 1UL << 63;

    private List<(string Key, string Name, string Value)>? Collection(int id) => id < _collections.Length ? _collections[id] : null;

    private void Clear(string collection)
    {
        int id = WafCollections.Id(collection);
        Collection(id)?.Clear();
        if (id < 63) _present &= ~CollectionBit(id);
    }

    private void Scalar(string collection, string value) => Add(collection, "", collection, value);

    /// <summary>A scalar of the request head, its collection's id known (no name lookup per request).</summary>
    private void Scalar(int id, string collection, string value) => AddKeyed(id, "", collection, value);

    private static readonly int IdMethod = WafCollections.Id("REQUEST_METHOD"), IdProtocol = WafCollections.Id("REQUEST_PROTOCOL"),
        IdLine = WafCollections.Id("REQUEST_LINE"), IdUriRaw = WafCollections.Id("REQUEST_URI_RAW"), IdUri = WafCollections.Id("REQUEST_URI"),
        IdFilename = WafCollections.Id("REQUEST_FILENAME"), IdBasename = WafCollections.Id("REQUEST_BASENAME"),
        IdQuery = WafCollections.Id("QUERY_STRING"), IdRemoteAddr = WafCollections.Id("REMOTE_ADDR"), IdUniqueId = WafCollections.Id("UNIQUE_ID"),
        IdDuration = WafCollections.Id("DURATION"), IdReqbodyError = WafCollections.Id("REQBODY_ERROR"),
        IdMultipartStrict = WafCollections.Id("MULTIPART_STRICT_ERROR"), IdMultipartUnmatched = WafCollections.Id("MULTIPART_UNMATCHED_BOUNDARY"),
        IdArgs = WafCollections.Id("ARGS"), IdArgsCombinedSize = WafCollections.Id("ARGS_COMBINED_SIZE");

    // what the previous request on this transaction derived from its line and header names: reused when the
    // request's strings are the same (WafStep keeps them while the bytes repeat), so a keep-alive connection's
    // requests do not build them again
    private (string Method, string Uri, string Protocol, string Line) _lineMemo = (null!, null!, null!, "");
    private (string Uri, string Decoded, string Path, string Basename, string Query) _uriMemo = (null!, "", "", "", "");
    private readonly List<(string Name, string Key, string HeaderName, string NamesName)> _headerMemo = [];

    private void BuildRequestCollections()
    {
        var r = _request;
        Scalar(IdMethod, "REQUEST_METHOD", r.Method);
        Scalar(IdProtocol, "REQUEST_PROTOCOL", r.Protocol);
        if (!ReferenceEquals(_lineMemo.Method, r.Method) || !ReferenceEquals(_lineMemo.Uri, r.Uri) || !ReferenceEquals(_lineMemo.Protocol, r.Protocol))
            _lineMemo = (r.Method, r.Uri, r.Protocol, r.Method + " " + r.Uri + " " + r.Protocol);
        Scalar(IdLine, "REQUEST_LINE", _lineMemo.Line);
        Scalar(IdUriRaw, "REQUEST_URI_RAW", r.Uri);
        if (!ReferenceEquals(_uriMemo.Uri, r.Uri))
        {
            var decoded = PercentDecode(r.Uri);
            var q = r.Uri.IndexOf('?');
            var dq = decoded.IndexOf('?');
            var path = dq < 0 ? decoded : decoded[..dq];
            var slash = path.LastIndexOf('/');
            _uriMemo = (r.Uri, decoded, path, slash < 0 ? path : path[(slash + 1)..], q < 0 ? "" : r.Uri[(q + 1)..]);
        }
        Scalar(IdUri, "REQUEST_URI", _uriMemo.Decoded);
        Scalar(IdFilename, "REQUEST_FILENAME", _uriMemo.Path);
        Scalar(IdBasename, "REQUEST_BASENAME", _uriMemo.Basename);
        Scalar(IdQuery, "QUERY_STRING", _uriMemo.Query);
        if (r.Uri.Contains('?')) ParseUrlEncoded(_uriMemo.Query, "ARGS_GET");
        Scalar(IdRemoteAddr, "REMOTE_ADDR", r.RemoteAddress);
        Scalar(IdUniqueId, "UNIQUE_ID", "fastgate");
        Scalar(IdDuration, "DURATION", "0");
        var headers = CollectionsMarshal.AsSpan(r.Headers);
        for (int i = 0; i < headers.Length; i++)
        {
            var (name, value) = headers[i];
            if (i >= _headerMemo.Count) _headerMemo.Add(HeaderNames(name));
            else if (!ReferenceEquals(_headerMemo[i].Name, name)) _headerMemo[i] = HeaderNames(name);
            var (_, key, headerName, namesName) = _headerMemo[i];
            AddKeyed(WafCollections.RequestHeaders, key, headerName, value);
            AddKeyed(WafCollections.RequestHeadersNames, key, namesName, name);
            if (key == "cookie") ParseCookies(value);
        }
        Scalar(IdReqbodyError, "REQBODY_ERROR", "0");
        Scalar(IdMultipartStrict, "MULTIPART_STRICT_ERROR", "0");
        Scalar(IdMultipartUnmatched, "MULTIPART_UNMATCHED_BOUNDARY", "0");
        Combined();
    }

    private void Combined()
    {
        long size = 0;
        if (Collection(IdArgs) is { } args) foreach (var a in CollectionsMarshal.AsSpan(args)) size += a.Key.Length + a.Value.Length;
        Collection(IdArgsCombinedSize)?.Clear();
        Scalar(IdArgsCombinedSize, "ARGS_COMBINED_SIZE", size.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    private static string PercentDecode(string s)
    {
        if (s.IndexOf('%') < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '%' && i + 2 < s.Length && Uri.IsHexDigit(s[i + 1]) && Uri.IsHexDigit(s[i + 2]))
            {
                sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 2), 16));
                i += 2;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private void Arg(string source, string name, string value)
    {
        Add("ARGS", name, "ARGS:" + name, value);
        Add("ARGS_NAMES", name, "ARGS_NAMES:" + name, name);
        Add(source, name, source + ":" + name, value);
        Add(source + "_NAMES", name, source + "_NAMES:" + name, name);
    }

    private void ParseUrlEncoded(string s, string source)
    {
        foreach (var pair in s.Split('&'))
        {
            if (pair.Length == 0) continue;
            var eq = pair.IndexOf('=');
            var name = Transforms.UrlDecode(eq < 0 ? pair : pair[..eq], false);
            var value = eq < 0 ? "" : Transforms.UrlDecode(pair[(eq + 1)..], false);
            Arg(source, name, value);
        }
    }

    private void ParseCookies(string header)
    {
        foreach (var part in header.Split(';'))
        {
            var t = part.Trim(' ', '\t');
            if (t.Length == 0) continue;
            var eq = t.IndexOf('=');
            var name = eq < 0 ? t : t[..eq];
            var value = eq < 0 ? "" : t[(eq + 1)..];
            Add("REQUEST_COOKIES", name, "REQUEST_COOKIES:" + name, value);
            Add("REQUEST_COOKIES_NAMES", name, "REQUEST_COOKIES_NAMES:" + name, name);
        }
    }

    private string Header(string name)
    {
        foreach (var (n, v) in _request.Headers) if (n.Equals(name, StringComparison.OrdinalIgnoreCase)) return v;
        return "";
    }

    private void ProcessBody()
    {
        _bodyDone = true;
        var body = _request.Body;
        if (body is null || body.Length == 0) return;
        var text = Encoding.Latin1.GetString(body);
        var type = Header("content-type").ToLowerInvariant();
        var processor = RequestBodyProcessor;
        if (processor.Length == 0)
            processor = type.StartsWith("application/x-www-form-urlencoded", StringComparison.Ordinal) ? "URLENCODED"
                : type.StartsWith("multipart/form-data", StringComparison.Ordinal) ? "MULTIPART"
                : type.StartsWith("application/json", StringComparison.Ordinal) ? "JSON"
                : XmlContentType.IsMatch(type) ? "XML" : "";
        RequestBodyProcessor = processor;
        Scalar("REQUEST_BODY", text);
        Scalar("REQUEST_BODY_LENGTH", body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (processor.Length > 0) Scalar("REQBODY_PROCESSOR", processor);
        // no lambda here: a closure over `text` would be allocated on entry, for every request, body or not
        bool ok = processor switch
        {
            "URLENCODED" => ParseUrlEncodedBody(text),
            "JSON" => ParseJson(body),
            "XML" => ParseXml(body),
            "MULTIPART" => ParseMultipart(text, type),
            _ => true,
        };
        if (!ok)
        {
            Clear("REQBODY_ERROR");
            Scalar("REQBODY_ERROR", "1");
        }
        Combined();
    }

    private bool ParseUrlEncodedBody(string text) { ParseUrlEncoded(text, "ARGS_POST"); return true; }

    /// <summary>The content types ModSecurity's recommended rule 200000 sends to the XML processor (lower-cased).</summary>
    private static readonly System.Text.RegularExpressions.Regex XmlContentType =
        new(@"(?:application(?:/soap\+|/)|text/)xml", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    // the XML body of this request (the XML processor), and the values each XPath of the rules selected from it
    private System.Xml.XmlDocument? _xml;
    private readonly Dictionary<string, List<(string Key, string Name, string Value)>> _xpathValues = new(StringComparer.Ordinal);

    /// <summary>
    /// The XML body processor: the body parsed as a document (no external entities or DTD fetches; entity expansion
    /// bounded), which XML:xpath targets then select from (XML:/* the text of the root element, XML://@* every
    /// attribute value), as ModSecurity does with libxml2. A body that does not parse is REQBODY_ERROR=1.
    /// </summary>
    private bool ParseXml(byte[] body)
    {
        var settings = new System.Xml.XmlReaderSettings
        {
            DtdProcessing = System.Xml.DtdProcessing.Parse,
            XmlResolver = null,
            MaxCharactersFromEntities = 1 << 16,
            MaxCharactersInDocument = Math.Max(1L << 20, body.Length * 4L),
        };
        try
        {
            using var reader = System.Xml.XmlReader.Create(new MemoryStream(body, writable: false), settings);
            var doc = new System.Xml.XmlDocument { PreserveWhitespace = true, XmlResolver = null };
            doc.Load(reader);
            if (doc.DocumentElement is null) return false;
            _xml = doc;
            _present |= CollectionBit(WafCollections.Xml);
            return true;
        }
        catch (System.Xml.XmlException) { return false; }
    }

    /// <summary>The values an XML target selects: the text of each node its XPath finds (UTF-8 bytes as Latin-1).</summary>
    private void ResolveXml(WafTarget target, List<(string Key, string Name, string Value)> into)
    {
        if (_xml is null) return;
        if (target.XPath is not { } xpath) { into.Add(("", "XML", "[XML document tree]")); return; }
        if (!_xpathValues.TryGetValue(xpath, out var values))
        {
            values = [];
            var name = "XML:" + xpath;
            System.Xml.XmlNodeList? nodes;
            try { nodes = _xml.SelectNodes(xpath); }
            catch (System.Xml.XPath.XPathException) { nodes = null; }
            if (nodes is not null)
                foreach (System.Xml.XmlNode node in nodes)
                    values.Add(("", name, Latin1(node is System.Xml.XmlAttribute a ? a.Value : node.InnerText)));
            _xpathValues[xpath] = values;
        }
        into.AddRange(values);
    }

    private bool ParseJson(byte[] body)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(body, new System.Text.Json.JsonDocumentOptions { MaxDepth = 512 });
            Json(doc.RootElement, "json");
            return true;
        }
        catch (System.Text.Json.JsonException) { return false; }
    }

    private void Json(System.Text.Json.JsonElement e, string path)
    {
        switch (e.ValueKind)
        {
            case System.Text.Json.JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) Json(p.Value, path + "." + Latin1(p.Name));
                break;
            case System.Text.Json.JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray()) Json(item, path + ".array_" + i++);
                break;
            case System.Text.Json.JsonValueKind.String:
                Arg("ARGS_POST", path, Latin1(e.GetString() ?? ""));
                break;
            case System.Text.Json.JsonValueKind.True: Arg("ARGS_POST", path, "true"); break;
            case System.Text.Json.JsonValueKind.False: Arg("ARGS_POST", path, "false"); break;
            case System.Text.Json.JsonValueKind.Null: Arg("ARGS_POST", path, ""); break;
            default: Arg("ARGS_POST", path, e.GetRawText()); break;
        }
    }

    private static string Latin1(string s) => Encoding.Latin1.GetString(Encoding.UTF8.GetBytes(s));

    private bool ParseMultipart(string text, string type)
    {
        var bi = type.IndexOf("boundary=", StringComparison.Ordinal);
        if (bi < 0) return false;
        // the boundary as written (case kept): read it from the original header
        var original = Header("content-type");
        var boundary = original[(bi + 9)..].Split(';')[0].Trim().Trim('"');
        if (boundary.Length == 0) return false;
        var delimiter = "--" + boundary;
        var parts = text.Split(delimiter);
        if (parts.Length < 2) return false;
        long filesSize = 0;
        for (int p = 1; p < parts.Length; p++)
        {
            var part = parts[p];
            if (part.StartsWith("--", StringComparison.Ordinal)) break;
            var headEnd = part.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headEnd < 0) return false;
            var head = part[..headEnd];
            var content = part[(headEnd + 4)..];
            if (content.EndsWith("\r\n", StringComparison.Ordinal)) content = content[..^2];
            string name = "", file = "";
            bool isFile = false;
            foreach (var line in head.Split("\r\n", StringSplitOptions.RemoveEmptyEntries))
            {
                Add("MULTIPART_PART_HEADERS", name, "MULTIPART_PART_HEADERS", line);
                if (!line.StartsWith("content-disposition:", StringComparison.OrdinalIgnoreCase)) continue;
                foreach (var attr in line.Split(';'))
                {
                    var a = attr.Trim();
                    if (a.StartsWith("name=", StringComparison.OrdinalIgnoreCase)) name = a[5..].Trim('"');
                    else if (a.StartsWith("filename=", StringComparison.OrdinalIgnoreCase)) { file = a[9..].Trim('"'); isFile = true; }
                }
            }
            if (isFile)
            {
                Add("FILES", name, "FILES:" + name, file);
                Add("FILES_NAMES", name, "FILES_NAMES:" + name, name);
                Add("FILES_SIZES", name, "FILES_SIZES:" + name, content.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
                filesSize += content.Length;
            }
            else Arg("ARGS_POST", name, content);
        }
        Scalar("FILES_COMBINED_SIZE", filesSize.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return true;
    }

    // ---------------- evaluation ----------------

    private void RunPhase(int phase)
    {
        // markers are not in the run: each skipAfter's resume point was resolved at load (WafRuleSet.RunEdges)
        var rules = _set.Runs[phase];
        var edges = _set.RunEdges[phase];
        var hot = _set.RunRules[phase];
        var targets = _set.RunTargets[phase];
        // the constant checks folded at load (WafRuleSet.Fold): from GuardAt on, if TX holds what the fold assumed,
        // the folded edges, which never visit them
        var fold = _set.Fold;
        int guardAt = fold?.Edges[phase] is not null ? fold.GuardAt[phase] : int.MaxValue;
        ulong present = _present;
        int i = 0;
        while (true)
        {
            if (i >= guardAt)
            {
                guardAt = int.MaxValue;
                if (FoldHolds(fold!))
                {
                    var (at, fx) = fold!.Entries[phase]![i - fold.GuardAt[phase]];
                    edges = fold.Edges[phase]!;
                    i = at;
                    if (fx != 0) Record(fold.Fx[fx]);
                }
            }
            if ((uint)i >= (uint)rules.Length) return;
            ref readonly var e = ref edges[i];
            ref readonly var h = ref hot[i];
            // none of the request collections the rule reads has a value: it cannot match (and it has no actions to run)
            if ((h.Needs & present) == 0 || h.Disabled) { if (e.NextFx != 0) Record(fold!.Fx[e.NextFx]); i = e.Next; continue; }
            if (RuleEngine is "Off" or "off") return;
            var rule = rules[i];
            if (IsRemoved(rule) || !Evaluate(rule, rule, targets.AsSpan(h.TargetStart, h.TargetCount)))
            {
                if (e.NextFx != 0) Record(fold!.Fx[e.NextFx]);
                i = e.Next;
                continue;
            }
            // the whole chain matched: the chain starter's disruptive and flow actions
            if (rule.Log && rule.Id > 1)
                Matches.Add(new WafMatch(rule.Id, LastSeverity(rule), rule.Msg?.Expand(this) ?? "", Short(_matchedVar)) { Ordinal = rule.Ordinal });
            for (var link = rule; link is not null; link = link.Chain)
                foreach (var ctl in link.CtlArray) ApplyCtl(ctl);
            // a ctl removed a folded rule (or a target of one): from here on the plain edges, which visit it
            if (_foldBroken && !ReferenceEquals(edges, _set.RunEdges[phase])) { edges = _set.RunEdges[phase]; e = ref edges[i]; }
            if (rule.Disruptive is WafDisruptive.Deny or WafDisruptive.Drop)
            {
                Interruption = rule;
                Status = rule.Status != 0 ? rule.Status : 403;
                return;
            }
            if (rule.Disruptive == WafDisruptive.Allow) { Allowed = true; return; }
            // its skipAfter, its skip:N or the next rule
            if (e.JumpFx != 0) Record(fold!.Fx[e.JumpFx]);
            i = e.Jump;
        }
    }

    /// <summary>Whether TX holds the values the rule set's fold assumed (no rule sets them from here on).</summary>
    private bool FoldHolds(ConstantFold fold)
    {
        if (_foldBroken) return false;
        var slots = fold.Slots;
        var values = fold.Values;
        for (int k = 0; k < slots.Length; k++) if (!string.Equals(_txs[slots[k]], values[k], StringComparison.Ordinal)) return false;
        return true;
    }

    /// <summary>What the folded rules passed on an edge would have recorded when they matched (as Test does).</summary>
    private void Record((string Name, string Value)[] matched)
    {
        foreach (var (name, value) in matched)
        {
            _matchedVar = value;
            _matchedVarName = name;
            _matchedVars.Add((name, value));
        }
    }

    /// <summary>A TX slot's value (the fold's probe reads what phase 1 left in the slots it folds).</summary>
    internal string? TxSlotValue(int slot) => _txs[slot];

    private static int LastSeverity(WafRule rule)
    {
        int s = rule.Severity;
        for (var l = rule.Chain; l is not null; l = l.Chain) if (l.Severity >= 0) s = l.Severity;
        return s;
    }

    private static string Short(string s) => s.Length <= 24 ? s : s[..24];

    private bool IsRemoved(WafRule r)
    {
        if (_removedIds.Count == 0 && _removedTags.Count == 0) return false;
        foreach (var (from, to) in CollectionsMarshal.AsSpan(_removedIds)) if (r.Id >= from && r.Id <= to) return true;
        foreach (var tag in CollectionsMarshal.AsSpan(_removedTags)) if (r.Tags.Contains(tag)) return true;
        return false;
    }

    /// <summary>Evaluates one link (and the links it chains to); true when all match.</summary>
    private bool Evaluate(WafRule link, WafRule starter, ReadOnlySpan<TargetRef> targets)
    {
        _currentRule = starter;
        bool matched = false;
        if (link.Operator is null) return false;
        foreach (ref readonly var t in targets)
        {
            _stableValues = t.Source switch
            {
                TargetSource.Request => (StableCollections & CollectionBit(t.CollectionId)) != 0,
                TargetSource.Xml => false,
                _ => true,
            };
            if (t.Source == TargetSource.Request && !t.Count)
            {
                // the request's collections do not change while rules run (only the body step fills them): walked in
                // place, no copy of the selected values
                if (Collection(t.CollectionId) is not { Count: > 0 } list) continue;
                var target = t.Target;
                foreach (var (key, name, value) in CollectionsMarshal.AsSpan(list))
                {
                    if (!target.SelectsKey(key) || Excluded(link, starter, t.CollectionId, key)) continue;
                    if (Test(link, value, name, value)) matched = true;
                }
                continue;
            }
            if (t.Count)
            {
                var n = Count(t.Target).ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (Test(link, n, t.Target.Collection, n)) matched = true;
                continue;
            }
            if (t.Source == TargetSource.Tx && t.TxSlot >= 0)
            {
                // TX:name (most rules: TX:EXECUTING_PARANOIA_LEVEL, the scores) is its slot, not a scan of TX
                if (_txs[t.TxSlot] is { } one && !Excluded(link, starter, t.CollectionId, t.Target.Key!) && Test(link, one, _set.TxSlotFullNames[t.TxSlot], one))
                    matched = true;
                continue;
            }
            // a snapshot of the selected values: SetVar may change TX (and MATCHED_VARS grows) while they are tested
            var values = _resolved;
            values.Clear();
            Resolve(t.Target, values);
            for (int i = 0; i < values.Count; i++)
            {
                var (key, name, value) = values[i];
                if (Excluded(link, starter, t.CollectionId, key)) continue;
                if (Test(link, value, name, value)) matched = true;
            }
        }
        if (!matched) return false;
        if (link.Chain is not { } next) return true;
        return Evaluate(next, starter, next.TargetRefs);
    }

    private bool Test(WafRule link, string value, string name, string original)
    {
        string v = value;
        bool hit = false;
        if (link.MultiMatch)
        {
            hit = Op(link, v);
            foreach (var t in link.TransformArray) { var next = Transform(t, v); if (!ReferenceEquals(next, v) && next != v) { v = next; hit |= Op(link, v); } }
        }
        else if (_stableValues && link.PureOperator)
        {
            // the value's transformed form and the operator's result on it, as this link last saw the same text (any
            // connection: the table is the rule set's, read lock-free; entries are immutable); a capturing rule's
            // match runs again (the capture goes to TX)
            // the link's KeptWays entries are searched from the value's own way on, so up to KeptWays values a link
            // sees in turn (a target list's Host, path and method) each keep their entry instead of evicting each other
            var table = _set.KeptResults;
            int first = link.LinkNumber * WafRuleSet.KeptWays, home = WafRuleSet.KeptWay(value), free = -1;
            WafRuleSet.KeptResult? known = null;
            for (int w = 0; w < WafRuleSet.KeptWays; w++)
            {
                int at = first + ((home + w) & (WafRuleSet.KeptWays - 1));
                var entry = Volatile.Read(ref table[at]);
                if (entry is null) { if (free < 0) free = at; continue; }
                if (string.Equals(entry.Value, value)) { known = entry; break; }
            }
            if (known is not null && !(known.Hit && link.Capture))
            {
                v = known.Transformed;
                hit = known.Hit != link.Negated;
            }
            else
            {
                if (link.TransformChainId != 0 && v.Length > 0) v = TransformChain(link, v);
                bool raw = link.Operator!.Match(v, this, link.Capture);
                // a capture's second run finds what the entry says: no new entry (nothing allocated); a new value
                // takes a free way, else its own way's entry
                if (known is null) Volatile.Write(ref table[free >= 0 ? free : first + home], new WafRuleSet.KeptResult(value, v, raw));
                hit = raw != link.Negated;
            }
        }
        else
        {
            if (link.TransformChainId != 0 && v.Length > 0) v = TransformChain(link, v);
            hit = Op(link, v);
        }
        if (!hit) return false;
        _matchedVar = v;
        _matchedVarName = name;
        _matchedVars.Add((name, v));
        foreach (var sv in link.SetVarArray) SetVar(sv);
        _ = original;
        return true;
    }

    /// <summary>The value after the link's whole sequence of transformations: one lookup by (value, sequence) when
    /// an earlier rule applied the same sequence to the same value (CRS rules share a few sequences), else step by
    /// step through the per-function cache.</summary>
    private string TransformChain(WafRule link, string value)
    {
        var key = (value, link.TransformChainId);
        var chained = _stableValues ? _chainedStable : _chained;
        if (chained.TryGetValue(key, out var done)) return done;
        var v = value;
        foreach (var t in link.TransformArray) v = Transform(t, v);
        chained[key] = v;
        return v;
    }

    private string Transform(Transforms.Fn fn, string value)
    {
        if (value.Length == 0) return value;
        if (_transformed.TryGetValue((value, fn), out var done)) return done;
        var result = fn(value);
        _transformed[(value, fn)] = result;
        return result;
    }

    private sealed class ChainKeyComparer : IEqualityComparer<(string Value, int Chain)>
    {
        public static readonly ChainKeyComparer Instance = new();
        public bool Equals((string Value, int Chain) x, (string Value, int Chain) y) => ReferenceEquals(x.Value, y.Value) && x.Chain == y.Chain;
        public int GetHashCode((string Value, int Chain) k) => System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Value) * 31 + k.Chain;
    }

    /// <summary>Keys by identity: the value strings are the transaction's own (or earlier results), so an identical
    /// reference is the same value, and comparing references costs nothing.</summary>
    private sealed class TransformKeyComparer : IEqualityComparer<(string Value, Transforms.Fn Fn)>
    {
        public static readonly TransformKeyComparer Instance = new();
        public bool Equals((string Value, Transforms.Fn Fn) x, (string Value, Transforms.Fn Fn) y) =>
            ReferenceEquals(x.Value, y.Value) && ReferenceEquals(x.Fn, y.Fn);
        public int GetHashCode((string Value, Transforms.Fn Fn) k) =>
            HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Value), System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Fn));
    }

    private bool Op(WafRule link, string v)
    {
        var op = link.Operator!;
        if (!_stableValues || !link.PureOperator) return op.Match(v, this, link.Capture) != link.Negated;
        // a pure operator's result for this very string, from this request or an earlier one on the connection; a
        // capturing rule's match runs again (the capture goes to TX), a miss never captures
        var key = (v, op);
        if (_opResults.TryGetValue(key, out var known) && !(known && link.Capture)) return known != link.Negated;
        var result = op.Match(v, this, link.Capture);
        _opResults[key] = result;
        return result != link.Negated;
    }

    private sealed class OpKeyComparer : IEqualityComparer<(string Value, WafOperator Op)>
    {
        public static readonly OpKeyComparer Instance = new();
        public bool Equals((string Value, WafOperator Op) x, (string Value, WafOperator Op) y) => ReferenceEquals(x.Value, y.Value) && ReferenceEquals(x.Op, y.Op);
        public int GetHashCode((string Value, WafOperator Op) k) =>
            System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Value) * 31 + System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Op);
    }

    private bool Excluded(WafRule link, WafRule starter, int collection, string key)
    {
        foreach (var e in link.ExclusionArray) if (e.CollectionId == collection && e.SelectsKey(key)) return true;
        if (link != starter) return false;
        foreach (var (from, to, t) in CollectionsMarshal.AsSpan(_removedTargetsById)) if (starter.Id >= from && starter.Id <= to && t.CollectionId == collection && t.SelectsKey(key)) return true;
        foreach (var (tag, t) in CollectionsMarshal.AsSpan(_removedTargetsByTag)) if (t.CollectionId == collection && starter.Tags.Contains(tag) && t.SelectsKey(key)) return true;
        return false;
    }

    private int Count(WafTarget target)
    {
        if (target.Source == TargetSource.Request)
        {
            if (Collection(target.CollectionId) is not { } list) return 0;
            int n = 0;
            foreach (var item in CollectionsMarshal.AsSpan(list)) if (target.SelectsKey(item.Key)) n++;
            return n;
        }
        var values = _counted;
        values.Clear();
        Resolve(target, values);
        return values.Count;
    }

    /// <summary>Adds the values <paramref name="target"/> selects to <paramref name="into"/> (no iterator: one
    /// buffer per transaction, reused by every rule).</summary>
    private void Resolve(WafTarget target, List<(string Key, string Name, string Value)> into)
    {
        switch (target.Source)
        {
            case TargetSource.Tx:
                // TX:name (most rules: TX:EXECUTING_PARANOIA_LEVEL, the scores) is one lookup, not a scan of TX
                if (target.Key is { } key)
                {
                    if (target.TxSlot >= 0) { if (_txs[target.TxSlot] is { } slotted) into.Add((key, _set.TxSlotFullNames[target.TxSlot], slotted)); }
                    else if (Tx(key) is { } one) into.Add((key, target.TxName ??= "TX:" + key, one));
                    return;
                }
                var names = _set.TxSlotNames;
                if (target.TxSlotsSelected is { } selected)
                {
                    foreach (var s in selected)
                        if (_txs[s] is { } v) into.Add((names[s], _set.TxSlotFullNames[s], v));
                }
                else
                    for (int s = 0; s < _txs.Length; s++)
                        if (_txs[s] is { } v && target.SelectsKey(names[s])) into.Add((names[s], _set.TxSlotFullNames[s], v));
                foreach (var (k, v) in _txDynamic)
                    if (target.SelectsKey(k)) into.Add((k, TxFullName(k), v));
                return;
            case TargetSource.MatchedVar: into.Add(("", "MATCHED_VAR", _matchedVar)); return;
            case TargetSource.MatchedVarName: into.Add(("", "MATCHED_VAR_NAME", _matchedVarName)); return;
            case TargetSource.MatchedVars:
                foreach (var (n, v) in CollectionsMarshal.AsSpan(_matchedVars)) into.Add((n.ToLowerInvariant(), "MATCHED_VARS:" + n, v));
                return;
            case TargetSource.MatchedVarsNames:
                foreach (var (n, _) in CollectionsMarshal.AsSpan(_matchedVars)) into.Add((n.ToLowerInvariant(), "MATCHED_VARS_NAMES:" + n, n));
                return;
            case TargetSource.Xml: ResolveXml(target, into); return;
            case TargetSource.Persistent:
                if (_other.TryGetValue(target.Collection, out var c))
                    foreach (var (k, v) in c) if (Selects(target, k)) into.Add((k, target.Collection + ":" + k, v));
                return;
        }
        if (Collection(target.CollectionId) is not { } list) return;
        foreach (var item in CollectionsMarshal.AsSpan(list))
            if (target.SelectsKey(item.Key)) into.Add(item);
    }

    private static bool Selects(WafTarget t, string key) => t.SelectsKey(key);

    private void SetVar(WafSetVar sv)
    {
        if (sv.Slot >= 0)
        {
            // tx.name with a name known at load: its slot
            if (sv.Delete) { _txs[sv.Slot] = null; return; }
            var v = SetVarValue(sv);
            if (sv.Op == '=') { SetSlot(sv.Slot, v); return; }
            long was = _txs[sv.Slot] is { } c ? NumericOperator.ToNumber(c) : 0;
            long by = NumericOperator.ToNumber(v);
            SetSlot(sv.Slot, Number(sv.Op == '+' ? was + by : was - by));
            return;
        }
        var name = sv.Name2 is { } m ? ExpandName(sv, m) : sv.Name;
        if (sv.Collection == "TX")
        {
            if (sv.Delete) { TxRemove(name); return; }
            var v = SetVarValue(sv);
            if (sv.Op == '=') { TxSet(name, v); return; }
            long was = Tx(name) is { } c ? NumericOperator.ToNumber(c) : 0;
            long by = NumericOperator.ToNumber(v);
            TxSet(name, (sv.Op == '+' ? was + by : was - by).ToString(System.Globalization.CultureInfo.InvariantCulture));
            return;
        }
        var dict = _other.TryGetValue(sv.Collection, out var d) ? d : _other[sv.Collection] = new(StringComparer.Ordinal);
        if (sv.Delete) { dict.Remove(name); return; }
        var value = SetVarValue(sv);
        if (sv.Op == '=') { dict[name] = value; return; }
        long current = dict.TryGetValue(name, out var cur) ? NumericOperator.ToNumber(cur) : 0;
        long delta = NumericOperator.ToNumber(value);
        dict[name] = (sv.Op == '+' ? current + delta : current - delta).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    // per setvar with a macro in its name (CRS: 'tx.%{rule.id}-OWASP_CRS/...-%{matched_var_name}'): the parts it
    // expanded to last and the lower-cased name made of them, kept from request to request (the parts are mostly the
    // same strings again: the rule id, the matched variable's name), so the name is not built again
    private (string[]? Parts, string? Name)[] _names = [];

    private string ExpandName(WafSetVar sv, Macro m)
    {
        if (sv.NameIndex < 0) return m.Expand(this).ToLowerInvariant();
        if (_names.Length != _set.DynamicNames) _names = new (string[]?, string?)[_set.DynamicNames];
        ref var memo = ref _names[sv.NameIndex];
        if (!m.SameParts(this, ref memo.Parts) || memo.Name is null) memo.Name = string.Concat(memo.Parts!).ToLowerInvariant();
        return memo.Name;
    }

    // per setvar whose value has two or more parts (920450's '/%{tx.0}/'): the parts it expanded to last and the
    // value made of them, kept from request to request as the names above are
    private (string[]? Parts, string? Value)[] _values = [];

    private string SetVarValue(WafSetVar sv)
    {
        if (sv.Value is not { } m) return "";
        if (sv.ValueIndex < 0) return m.Expand(this);
        if (_values.Length != _set.DynamicValues) _values = new (string[]?, string?)[_set.DynamicValues];
        ref var memo = ref _values[sv.ValueIndex];
        if (!m.SameParts(this, ref memo.Parts) || memo.Value is null) memo.Value = string.Concat(memo.Parts!);
        return memo.Value;
    }

    // "TX:" + a name made at run time (the matched-variable name of a TX:/regex/ target's value), by the name's text:
    // kept from request to request (bounded with the other kept results), so it is not built again
    private readonly Dictionary<string, string> _txFullNames = new(StringComparer.Ordinal);

    private string TxFullName(string name)
    {
        if (_txFullNames.TryGetValue(name, out var full)) return full;
        if (_txFullNames.Count >= StableLimit) _txFullNames.Clear();
        return _txFullNames[name] = "TX:" + name;
    }

    internal void SetCapture(int group, string value) => SetSlot(group, value); // TX:0-9 are slots 0-9

    // a ctl of this request may have removed a rule the fold routes around: the plain edges from then on
    private bool _foldBroken;

    private void ApplyCtl(WafCtl ctl)
    {
        if (ctl.TouchesFold) _foldBroken = true;
        switch (ctl.Kind)
        {
            case CtlKind.RuleRemoveById: _removedIds.AddRange(ctl.Ids); break;
            case CtlKind.RuleRemoveByTag: _removedTags.Add(ctl.Value); break;
            case CtlKind.RuleRemoveTargetById: _removedTargetsById.Add((ctl.Ids[0].From, ctl.Ids[0].To, ctl.Target!)); break;
            case CtlKind.RuleRemoveTargetByTag: _removedTargetsByTag.Add((ctl.Value, ctl.Target!)); break;
            case CtlKind.RuleEngine: RuleEngine = ctl.Value; break;
            case CtlKind.RequestBodyProcessor: if (!_bodyDone) RequestBodyProcessor = ctl.Value; break;
        }
    }

    /// <summary>%{collection.key} in a macro.</summary>
    internal string MacroValue(string collection, string? key, int txSlot, int collectionId)
    {
        if (txSlot >= 0) return _txs[txSlot] ?? "";
        switch (collection)
        {
            case "TX": return key is not null && Tx(key) is { } v ? v : "";
            case "MATCHED_VAR": return _matchedVar;
            case "MATCHED_VAR_NAME": return _matchedVarName;
            case "RULE":
                return key switch { "id" => _currentRule?.IdText ?? "", "msg" => _currentRule?.Msg?.Source ?? "", _ => "" };
            case "IP": case "GLOBAL": case "SESSION": case "USER":
                return key is not null && _other.TryGetValue(collection, out var c) && c.TryGetValue(key, out var ov) ? ov : "";
        }
        if (Collection(collectionId >= 0 ? collectionId : WafCollections.Id(collection)) is not { } list) return "";
        foreach (var item in CollectionsMarshal.AsSpan(list)) if (key is null || item.Key == key) return item.Value;
        return "";
    }
}
