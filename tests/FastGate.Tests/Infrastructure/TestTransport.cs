using System.Runtime.CompilerServices;

namespace FastGate.Tests.Infrastructure;

/// <summary>
/// The transport matrix: FASTGATE_TEST_TRANSPORT=native or kestrel runs every gateway the tests start (in process, and
/// the fastgate processes of FastgateProcess) on that transport; unset, each config's own choice (the default, auto:
/// the native transport on Linux x64).
/// </summary>
internal static class TestTransport
{
    public static string? Name => Environment.GetEnvironmentVariable("FASTGATE_TEST_TRANSPORT") is { Length: > 0 } t ? t : null;

    /// <summary>
    /// One event loop unless a config sets nativeLoops: the suite's pooling tests (RetryTests and the like) expect the
    /// next client connection to reuse the upstream connection the previous one pooled, and idle upstream connections
    /// are per loop. Several loops are NativeTransportTests' subject.
    /// </summary>
    [ModuleInitializer]
    internal static void Apply()
    {
        FastGate.Transport.NativeTransport.Override = Name;
        FastGate.Transport.NativeTransport.DefaultLoopsOverride = 1;
        FastGate.Transport.NativeTransport.IoOverride = Io;
    }

    /// <summary>FASTGATE_TEST_NATIVE_IO=io_uring runs the native matrix on the io_uring loops (unset: each config's choice, epoll).</summary>
    public static string? Io => Environment.GetEnvironmentVariable("FASTGATE_TEST_NATIVE_IO") is { Length: > 0 } io ? io : null;

    /// <summary>A fastgate process's config with the matrix's transport and one loop (when the config does not choose its transport itself).</summary>
    public static string ForProcess(string configJson)
    {
        if (configJson.Contains("\"transport\"", StringComparison.Ordinal) || configJson.Contains("\"nativeLoops\"", StringComparison.Ordinal)) return configJson;
        int brace = configJson.IndexOf('{');
        if (brace < 0) return configJson;
        return configJson[..(brace + 1)] + (Name is { } t ? $"\"transport\": \"{t}\", " : "") + "\"nativeLoops\": 1, "
            + (Io is { } io ? $"\"nativeIo\": \"{io}\", " : "") + configJson[(brace + 1)..];
    }
}
