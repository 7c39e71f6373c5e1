using System.Runtime.CompilerServices;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// The transport matrix: FASTGATE_TEST_TRANSPORT=native runs every gateway the tests start (in process, and the
/// fastgate processes of FastgateProcess) on the native transport; unset, each config's own choice (Kestrel).
/// </summary>
internal static class TestTransport
{
    public static string? Name => Environment.GetEnvironmentVariable("FASTGATE_TEST_TRANSPORT") is { Length: > 0 } t ? t : null;

    [ModuleInitializer]
    internal static void Apply() => FastGate.Transport.NativeTransport.Override = Name;

    /// <summary>A fastgate process's config with the matrix's transport (when the config does not choose one itself).</summary>
    public static string ForProcess(string configJson)
    {
        if (Name is not { } t || configJson.Contains("\"transport\"", StringComparison.Ordinal)) return configJson;
        int brace = configJson.IndexOf('{');
        return brace < 0 ? configJson : configJson[..(brace + 1)] + $"\"transport\": \"{t}\", " + configJson[(brace + 1)..];
    }
}
