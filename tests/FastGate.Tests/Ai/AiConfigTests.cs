using FastGate.Configuration;
using static FastGate.Tests.Ai.AiGatewayKit;

namespace FastGate.Tests.Ai;

/// <summary>The routes[].ai block: every mistake refused with its JSON path.</summary>
public class AiConfigTests
{
    private static List<string> Errors(string providers, string models, string guard = "") =>
        ConfigLoader.Load(Config(providers, models, guard)).Errors.Select(e => e.ToString()).ToList();

    [Fact]
    public void Valid_Config_Loads()
    {
        Assert.Empty(Errors("""{ "id": "oa", "kind": "openai", "baseUrl": "https://api.openai.com/v1" }""", """{ "name": "m", "targets": ["oa:gpt-4o-mini"] }"""));
    }

    [Fact]
    public void Errors_CarryTheirJsonPaths()
    {
        var errors = Errors(
            """
            { "id": "oa", "kind": "openia", "baseUrl": "ftp://x" },
            { "id": "oa", "kind": "azure-openai", "baseUrl": "https://x", "keyEnv": ["FASTGATE_TEST_UNSET_AI_KEY"] },
            { "id": "both", "kind": "anthropic" , "baseUrl": "https://x", "cluster": "nope" }
            """,
            """{ "name": "m", "targets": ["oa", "ghost:x"], "weights": [1] }, { "name": "m", "targets": [] }""",
            """, "guard": { "detect": ["emails"], "action": "hide", "deny": ["("] }, "tiemout": "1s" """);
        string[] expected =
        [
            "$.routes[0].ai.tiemout: unknown property",
            "$.routes[0].ai.providers[0].kind: unknown provider kind 'openia'",
            "$.routes[0].ai.providers[0].baseUrl: 'ftp://x' is not an http(s) URL",
            "$.routes[0].ai.providers[1].id: duplicate provider id 'oa'",
            "$.routes[0].ai.providers[1].apiVersion: is required for azure-openai",
            "$.routes[0].ai.providers[1].keyEnv[0]: environment variable 'FASTGATE_TEST_UNSET_AI_KEY' is not set",
            "$.routes[0].ai.providers[2]: give either baseUrl or cluster",
            "$.routes[0].ai.providers[2].cluster: unknown cluster 'nope'",
            "$.routes[0].ai.models[0].targets[0]: expected \"provider:model\"",
            "$.routes[0].ai.models[0].targets[1]: unknown provider 'ghost'",
            "$.routes[0].ai.models[0].weights: give one weight per target",
            "$.routes[0].ai.models[1].name: duplicate model 'm'",
            "$.routes[0].ai.models[1].targets: at least one",
            "$.routes[0].ai.guard.detect[0]: unknown detector 'emails'",
            "$.routes[0].ai.guard.action: expected mask, block or report",
            "$.routes[0].ai.guard.deny[0]: not a regular expression",
        ];
        foreach (var e in expected) Assert.Contains(errors, x => x.StartsWith(e, StringComparison.Ordinal));
    }
    [Fact]
    public void Weights_are_integers_of_zero_or_more()
    {
        const string providers = """{ "id": "oa", "kind": "openai", "baseUrl": "https://api.openai.com/v1" }""";
        Assert.Empty(Errors(providers, """{ "name": "m", "targets": ["oa:a", "oa:b"], "weights": [0, 0] }"""));
        var errors = Errors(providers, """{ "name": "m", "targets": ["oa:a", "oa:b", "oa:c"], "weights": [0, -1, "x"] }""");
        Assert.Contains(errors, x => x.StartsWith("$.routes[0].ai.models[0].weights[1]: expected an integer of 0 or more", StringComparison.Ordinal));
        Assert.Contains(errors, x => x.StartsWith("$.routes[0].ai.models[0].weights[2]: expected an integer of 0 or more", StringComparison.Ordinal));
    }
}
