using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace FastGate.LoadTest.Scenarios;

/// <summary>Mints an HS256 JWT for a gateway issuer configured with a shared secret (load tests only).</summary>
public static class JwtMinter
{
    public static string Hs256(string secret, string issuer, string audience, string subject, TimeSpan lifetime, DateTimeOffset? now = null)
    {
        var at = now ?? DateTimeOffset.UtcNow;
        var payload = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["iss"] = issuer,
            ["aud"] = audience,
            ["sub"] = subject,
            ["iat"] = at.ToUnixTimeSeconds(),
            ["exp"] = at.Add(lifetime).ToUnixTimeSeconds(),
        });
        string signingInput = Base64Url("""{"alg":"HS256","typ":"JWT"}"""u8) + "." + Base64Url(payload);
        byte[] signature = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.ASCII.GetBytes(signingInput));
        return signingInput + "." + Base64Url(signature);
    }

    private static string Base64Url(ReadOnlySpan<byte> bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
