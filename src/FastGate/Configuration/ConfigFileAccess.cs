namespace FastGate.Configuration;

/// <summary>
/// Which files checking a config may open. The gateway's own loads (start, reload, `fastgate validate`) open any
/// file the config names. POST /admin/validate checks a config someone sent over HTTP, so it opens only files under
/// the running config's directory (relative paths resolve there too); a file named outside it is an error and is
/// never opened, so its existence or contents cannot be probed. A gateway started from text has no such directory:
/// there admin validation opens no file at all.
/// </summary>
public sealed class ConfigFileAccess
{
    /// <summary>Any file the process can read (the gateway's own config).</summary>
    public static readonly ConfigFileAccess Any = new(null, anyFile: true);

    /// <summary>No file at all.</summary>
    public static readonly ConfigFileAccess None = new(null, anyFile: false);

    private readonly string? _root;
    private readonly bool _any;

    private ConfigFileAccess(string? root, bool anyFile)
    {
        _root = root;
        _any = anyFile;
    }

    /// <summary>Only files whose full path lies under <paramref name="directory"/> (after resolving "." and "..").</summary>
    public static ConfigFileAccess Under(string directory) =>
        new(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)) + Path.DirectorySeparatorChar, anyFile: false);

    /// <summary>
    /// Resolves <paramref name="path"/> against <paramref name="baseDirectory"/>. True: the caller may open
    /// <paramref name="fullPath"/>. False: it must not, and <paramref name="error"/> says why (without touching the file).
    /// </summary>
    public bool TryResolve(string baseDirectory, string path, out string fullPath, out string? error)
    {
        error = null;
        try
        {
            fullPath = ConfigPath.Resolve(path, baseDirectory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            fullPath = "";
            error = $"'{path}' is not a file path";
            return false;
        }
        if (_any) return true;
        if (_root is null)
        {
            error = "admin validation opens no files here (the gateway was not started from a config file); check file references with `fastgate validate`";
            return false;
        }
        if (fullPath.StartsWith(_root, OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal)) return true;
        error = $"'{path}' is outside the directory of the running configuration ({_root.TrimEnd(Path.DirectorySeparatorChar)}): admin validation opens only files under it";
        return false;
    }
}
