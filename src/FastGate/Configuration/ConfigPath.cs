namespace FastGate.Configuration;

/// <summary>
/// The one rule for file paths written in a config (ipLists files, TLS certificates, keys and CA bundles, JWT key
/// files, the access log): an absolute path stays as it is; a relative one resolves against the directory of the
/// config file (<see cref="GatewayConfig.BaseDirectory"/>), never the process's working directory.
/// </summary>
public static class ConfigPath
{
    /// <summary>The full path of <paramref name="path"/>, resolved against <paramref name="baseDirectory"/> when relative.</summary>
    /// <exception cref="ArgumentException">The path is not a valid file path (as <see cref="Path.GetFullPath(string)"/>).</exception>
    public static string Resolve(string path, string baseDirectory) => Path.GetFullPath(Path.Combine(baseDirectory, path));
}
