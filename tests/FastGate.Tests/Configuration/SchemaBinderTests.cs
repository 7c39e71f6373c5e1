using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastGate.Configuration;

namespace FastGate.Tests.Configuration;

/// <summary>
/// config/fastgate.schema.json against the binders, both ways, for every object of the config: the test writes a
/// config holding every object the schema describes (each property present, leaves null, one item per array), binds
/// it while recording what the binders check, and compares. An object the schema describes must be checked by a
/// binder with exactly the schema's property names (and the schema must refuse other names, as the binder does); an
/// object a binder checks must be described by the schema; and every name a binder accepts must be one it reads.
/// </summary>
public class SchemaBinderTests
{
    [Fact]
    public void Schema_AndBinders_KnowTheSameProperties_InEveryObject()
    {
        using var schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(ValidateCommandTests.RepoRoot(), "config", "fastgate.schema.json")));
        var walk = new SchemaWalk(schema.RootElement);
        var instance = walk.Instance(schema.RootElement, "$", []);
        var trace = ConfigLoader.TraceBinding(instance!.ToJsonString());

        var binder = new SortedDictionary<string, string[]>(StringComparer.Ordinal);
        foreach (var (path, known) in trace.Objects) binder[Normalize(path)] = known;
        var reads = trace.Reads.Select(r => (Normalize(r.Path), r.Name)).ToHashSet();

        var problems = new List<string>();
        foreach (var (path, names) in walk.Objects)
        {
            if (!binder.TryGetValue(path, out var known))
            {
                problems.Add($"{path}: the schema lists properties, no binder checks this object");
                continue;
            }
            foreach (var n in names.Except(known)) problems.Add($"{path}.{n}: in the schema, not accepted by the binder");
            foreach (var n in known.Except(names)) problems.Add($"{path}.{n}: accepted by the binder, not in the schema");
        }
        foreach (var path in binder.Keys.Except(walk.Objects.Keys))
            problems.Add($"{path}: a binder checks this object's properties ({string.Join(", ", binder[path])}), the schema lists none");
        foreach (var path in walk.Open) problems.Add($"{path}: the schema allows other properties (additionalProperties is not false); the binder refuses them");
        foreach (var (path, known) in binder)
            foreach (var n in known)
                if (n != "$schema" && !reads.Contains((path, n))) problems.Add($"{path}.{n}: accepted by the binder but never read");
        Assert.True(problems.Count == 0, string.Join("\n", problems));

        // the walk covered the config: the sections and the deep objects are there
        Assert.True(walk.Objects.Count >= 30, $"only {walk.Objects.Count} schema objects walked");
        Assert.Contains("$.listeners[].tls.sni[]", walk.Objects.Keys);
        Assert.Contains("$.policies[].match.headers[]", walk.Objects.Keys);
        Assert.Contains("$.policies[].actions[]", walk.Objects.Keys);
    }

    [Fact]
    public void Comparison_FindsAPropertyMissingFromTheSchema()
    {
        // the same comparison, on a schema with one route property removed: the test above can fail
        var text = File.ReadAllText(Path.Combine(ValidateCommandTests.RepoRoot(), "config", "fastgate.schema.json"));
        var node = JsonNode.Parse(text)!;
        node["properties"]!["routes"]!["items"]!["properties"]!.AsObject().Remove("hsts");
        using var schema = JsonDocument.Parse(node.ToJsonString());
        var walk = new SchemaWalk(schema.RootElement);
        var instance = walk.Instance(schema.RootElement, "$", []);
        var trace = ConfigLoader.TraceBinding(instance!.ToJsonString());
        var known = trace.Objects.Single(o => Normalize(o.Path) == "$.routes[]").Known;
        Assert.Equal(["hsts"], known.Except(walk.Objects["$.routes[]"]));
    }

    [Fact]
    public void Names_LowerCaseTheFirstLetterOfEachRecordProperty()
    {
        Assert.Equal(["maxBodyBytes", "ipLists", "ca"],
            ConfigReader.Names(nameof(LimitsConfig.MaxBodyBytes), nameof(GatewayConfig.IpLists), nameof(UpstreamTlsConfig.Ca)));
        Assert.Contains("requestBufferBytes", LimitsConfigBinder.Properties);
    }

    private static string Normalize(string path) => Regex.Replace(path, @"\[\d+\]", "[]");

    /// <summary>Walks a schema: the objects it describes (by path, "[]" for an array's items) and a config holding all of them.</summary>
    private sealed class SchemaWalk(JsonElement root)
    {
        public SortedDictionary<string, string[]> Objects { get; } = new(StringComparer.Ordinal);
        public List<string> Open { get; } = [];

        public JsonNode? Instance(JsonElement node, string path, string[] refs)
        {
            if (node.TryGetProperty("$ref", out var r))
            {
                var name = r.GetString()!;
                Assert.StartsWith("#/$defs/", name);
                name = name["#/$defs/".Length..];
                if (refs.Contains(name)) return null; // a recursive definition (policyMatch.not): one level is enough
                return Instance(root.GetProperty("$defs").GetProperty(name), path, [.. refs, name]);
            }
            if (node.TryGetProperty("properties", out var props))
            {
                Assert.False(Objects.ContainsKey(path), $"{path} described twice");
                Objects[path] = props.EnumerateObject().Select(p => p.Name).ToArray();
                if (!node.TryGetProperty("additionalProperties", out var extra) || extra.ValueKind != JsonValueKind.False) Open.Add(path);
                var obj = new JsonObject();
                foreach (var p in props.EnumerateObject()) obj[p.Name] = Instance(p.Value, path + "." + p.Name, refs);
                return obj;
            }
            var type = node.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            if (type == "array" && node.TryGetProperty("items", out var items))
                return Instance(items, path + "[]", refs) is JsonObject item ? new JsonArray(item) : null;
            return type == "object" ? new JsonObject() : null;
        }
    }
}
