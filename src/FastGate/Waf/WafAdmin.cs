using System.Text.Json;
using FastGate.Configuration;

namespace FastGate.Waf;

/// <summary>GET /admin/waf: the running snapshot's WAF profiles, their mode, rule count and load warnings (file:line).</summary>
public static class WafAdmin
{
    public static void Write(Utf8JsonWriter w, GatewaySnapshot snapshot)
    {
        w.WriteStartArray("profiles");
        var seen = new HashSet<WafProfile>();
        foreach (var route in snapshot.Routes)
        {
            if (route.Waf is not { } p || !seen.Add(p)) continue;
            w.WriteStartObject();
            w.WriteString("id", p.Id);
            w.WriteString("mode", p.Mode == WafMode.Block ? "block" : "detect");
            w.WriteNumber("rules", p.Rules.RuleCount);
            w.WriteString("componentSignature", p.Rules.ComponentSignature);
            w.WriteStartArray("routes");
            foreach (var r in snapshot.Routes) if (ReferenceEquals(r.Waf, p)) w.WriteStringValue(r.Id);
            w.WriteEndArray();
            w.WriteStartArray("warnings");
            foreach (var warning in p.Warnings) w.WriteStringValue(warning.ToString());
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
