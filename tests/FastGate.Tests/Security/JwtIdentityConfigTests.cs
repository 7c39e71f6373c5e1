using FastGate.Configuration;
using static FastGate.Tests.Policy.PolicyTestKit;

namespace FastGate.Tests.Security;

/// <summary>consumers[].jwt, policy subjects, the subject limit key and the jwt header names: every mistake with its JSON path.</summary>
public class JwtIdentityConfigTests
{
    private const string Issuers = """
        "jwtIssuers": [
          { "id": "corp", "issuer": "https://idp.corp/", "audiences": ["a"], "secret": "corp-shared-secret-0123456789abcdef" },
          { "id": "partner", "issuer": "https://partner.test/", "audiences": ["a"], "secret": "partner-shared-secret-0123456789abcd" }
        ]
        """;

    private static void AssertError(string sections, string path, string messagePart)
    {
        var result = Load(Issuers + "," + sections);
        Assert.True(result.Errors.Any(e => e.Path == path && e.Message.Contains(messagePart, StringComparison.Ordinal)),
            $"expected {path}: ...{messagePart}... in\n" + string.Join("\n", result.Errors));
    }

    [Fact]
    public void ValidIdentities_BindByIssuerIdOrIss()
    {
        var result = Load(Issuers + """
            , "consumers": [ { "id": "ops", "jwt": [ { "issuer": "corp", "subject": "svc-1" },
                                                    { "issuer": "https://partner.test/", "claim": "client_id", "values": ["ci"] } ] } ],
            "rateLimits": [ { "id": "s", "rate": 1, "key": ["subject", "route"] } ],
            "jwt": { "subjectHeader": "X-Sub", "issuerHeader": "X-Iss" },
            "policies": [ { "id": "r", "match": { "subjects": [ { "issuer": "partner", "subject": "ops" } ] }, "actions": [ { "type": "deny" } ] } ]
            """);
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        var c = result.Config!;
        Assert.Equal("svc-1", c.Consumers[0].Jwt[0].Subject);
        Assert.Equal(["ci"], c.Consumers[0].Jwt[1].Values);
        Assert.Equal("X-Sub", c.Jwt.SubjectHeader);
        Assert.Equal("ops", c.Policies[0].Match.Subjects[0].Subject);
    }

    [Fact] public void ConsumerJwt_UnknownIssuer_DidYouMean() =>
        AssertError("""  "consumers": [ { "id": "ops", "jwt": [ { "issuer": "crop", "subject": "s" } ] } ] """,
            "$.consumers[0].jwt[0].issuer", "did you mean 'corp'?");

    [Fact] public void ConsumerJwt_SubjectAndClaim_Refused() =>
        AssertError("""  "consumers": [ { "id": "ops", "jwt": [ { "issuer": "corp", "subject": "s", "claim": "c", "values": ["v"] } ] } ] """,
            "$.consumers[0].jwt[0]", "either subject");

    [Fact] public void ConsumerJwt_NeitherSubjectNorClaim_Refused() =>
        AssertError("""  "consumers": [ { "id": "ops", "jwt": [ { "issuer": "corp" } ] } ] """, "$.consumers[0].jwt[0]", "either subject");

    [Fact] public void ConsumerJwt_ClaimWithoutValues_Refused() =>
        AssertError("""  "consumers": [ { "id": "ops", "jwt": [ { "issuer": "corp", "claim": "client_id" } ] } ] """,
            "$.consumers[0].jwt[0].values", "at least one");

    [Fact] public void ConsumerJwt_UnknownProperty_Refused() =>
        AssertError("""  "consumers": [ { "id": "ops", "jwt": [ { "issuer": "corp", "sub": "s" } ] } ] """, "$.consumers[0].jwt[0].sub", "unknown property");

    [Fact] public void ConsumerJwt_IdentityOwnedTwice_Refused() =>
        AssertError("""
            "consumers": [ { "id": "a", "jwt": [ { "issuer": "corp", "subject": "s" } ] },
                           { "id": "b", "jwt": [ { "issuer": "https://idp.corp/", "subject": "s" } ] } ]
            """, "$.consumers[1].jwt[0].subject", "already belongs to consumer 'a'");

    [Fact] public void ConsumerJwt_SameSubjectOfAnotherIssuer_IsAnotherIdentity() =>
        Assert.True(Load(Issuers + """
            , "consumers": [ { "id": "a", "jwt": [ { "issuer": "corp", "subject": "s" } ] }, { "id": "b", "jwt": [ { "issuer": "partner", "subject": "s" } ] } ]
            """).IsValid);

    [Fact] public void ConsumerId_WithSpace_Refused() =>
        AssertError("""  "consumers": [ { "id": "a b" } ] """, "$.consumers[0].id", "printable ASCII");

    [Fact] public void PolicySubjects_UnknownIssuer_Refused() =>
        AssertError("""  "policies": [ { "id": "r", "match": { "subjects": [ { "issuer": "nope", "subject": "s" } ] }, "actions": [ { "type": "deny" } ] } ] """,
            "$.policies[0].match.subjects[0].issuer", "no jwtIssuers entry has id or issuer 'nope'");

    [Fact] public void PolicySubjects_MissingSubject_Refused() =>
        AssertError("""  "policies": [ { "id": "r", "match": { "not": { "subjects": [ { "issuer": "corp" } ] } }, "actions": [ { "type": "deny" } ] } ] """,
            "$.policies[0].match.not.subjects[0].subject", "required");

    [Fact] public void PolicySubjects_StringInsteadOfObject_Refused()
    {
        var result = Load(Issuers + """, "policies": [ { "id": "r", "match": { "subjects": [ "corp|ops" ] }, "actions": [ { "type": "deny" } ] } ] """);
        Assert.Contains(result.Errors, e => e.Path.StartsWith("$.policies[0].match.subjects", StringComparison.Ordinal));
    }

    [Fact] public void JwtHeaders_SameAsConsumerHeader_Refused() =>
        AssertError("""  "jwt": { "subjectHeader": "x-consumer-id" } """, "$.jwt.subjectHeader", "a subject is not a consumer");

    [Fact] public void JwtHeaders_NotAHeaderName_Refused() =>
        AssertError("""  "jwt": { "issuerHeader": "X Iss" } """, "$.jwt.issuerHeader", "not a header name");
}
