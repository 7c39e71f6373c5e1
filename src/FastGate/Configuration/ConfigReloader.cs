using System.Runtime.InteropServices;
using FastGate.Observability;
using FastGate.Proxy;
using Microsoft.Extensions.Logging;

namespace FastGate.Configuration;

public sealed record ReloadResult(bool Success, string Trigger, DateTimeOffset At, string? Version, IReadOnlyList<ConfigError> Errors);

/// <summary>
/// Live configuration updates. A reload (file change, SIGHUP or POST /admin/reload) reads, validates and compiles
/// off the request path, then swaps the snapshot atomically; requests in flight finish under the snapshot they
/// started with. A failed reload changes nothing in force: its errors are logged, counted and kept for
/// /admin/config. Reloads are serialised.
/// <para>
/// File changes: the whole directory of the file is watched (debounced), not the file name, because a Kubernetes
/// ConfigMap update renames a "..data" symlink and never touches the name the config is read by (files written and
/// closed, created, deleted or renamed: see <see cref="DirectoryWatcher"/>, which ignores a log growing beside the
/// config); every event, and a
/// poll every <see cref="PollInterval"/> (for file systems without change events), reads the file and reloads only
/// when its content hash differs from the text last read.
/// </para>
/// </summary>
public sealed class ConfigReloader : IDisposable
{
    private static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(100);
    /// <summary>How often the file is read for a change the watcher did not report.</summary>
    public static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(5);
    private readonly GatewayRuntime _runtime;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private DirectoryWatcher? _watcher;
    private ITimer? _debounce;
    private ITimer? _poll;
    private PosixSignalRegistration? _sighup;
    private ReloadResult? _last;
    private string _seen; // content version of the text the last load read (the running snapshot's at start)

    public ConfigReloader(string path, GatewayRuntime runtime, ILogger logger, TimeProvider? time = null)
    {
        SourcePath = Path.GetFullPath(path);
        _runtime = runtime;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _seen = runtime.Current.Version;
    }

    public string SourcePath { get; }
    public ReloadResult? LastReload => Volatile.Read(ref _last);
    public event Action<ReloadResult>? Reloaded;

    /// <summary>Starts watching the file's directory, polling the file, and listening for SIGHUP.</summary>
    public void Start()
    {
        var dir = Path.GetDirectoryName(SourcePath)!;
        _watcher = new DirectoryWatcher(dir, Schedule);
        _poll = _time.CreateTimer(_ => Poll(), null, PollInterval, PollInterval);
        try
        {
            _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, ctx =>
            {
                ctx.Cancel = true;
                _ = ReloadAsync("sighup");
            });
        }
        catch (PlatformNotSupportedException)
        {
            // Windows has no SIGHUP; the file watcher and POST /admin/reload remain.
        }
    }

    /// <summary>
    /// The poll reads the file only when its modification time moved (a stat allocates nothing; reading and hashing the
    /// file every 5 s was the idle gateway's largest allocation). Change events always read it.
    /// </summary>
    private void Poll()
    {
        DateTime stamp;
        try { stamp = File.GetLastWriteTimeUtc(SourcePath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { stamp = default; }
        if (stamp == _polledStamp && stamp != default) return;
        _polledStamp = stamp;
        _ = ReloadIfChangedAsync("file");
    }

    private DateTime _polledStamp;

    private void Schedule()
    {
        var t = _debounce;
        if (t is null)
        {
            t = _time.CreateTimer(_ => _ = ReloadIfChangedAsync("file"), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            if (Interlocked.CompareExchange(ref _debounce, t, null) is not null) { t.Dispose(); t = _debounce!; }
        }
        t.Change(Debounce, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The content version of the file as it is now (that of an empty text when it cannot be read, as the loader does).</summary>
    private string ReadVersion()
    {
        try
        {
            return SnapshotCompiler.VersionOf(File.ReadAllText(SourcePath));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return SnapshotCompiler.VersionOf("");
        }
    }

    /// <summary>Reloads when the file's content differs from the text last read; null when it does not.</summary>
    public async Task<ReloadResult?> ReloadIfChangedAsync(string trigger)
    {
        if (ReadVersion() == Volatile.Read(ref _seen)) return null;
        try
        {
            return await ReloadAsync(trigger).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            return null; // a timer that fired while the gateway stopped
        }
    }

    /// <summary>Reads, validates, compiles and applies the file. Never throws; the result says what happened.</summary>
    public async Task<ReloadResult> ReloadAsync(string trigger)
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            var loaded = ConfigLoader.LoadFile(SourcePath);
            Volatile.Write(ref _seen, SnapshotCompiler.VersionOf(loaded.Text));
            var at = _time.GetUtcNow();
            ReloadResult result;
            if (!loaded.IsValid)
            {
                result = new ReloadResult(false, trigger, at, null, loaded.Errors);
                _runtime.Metrics.ConfigReloads.WithLabels("failure").Inc();
                _logger.LogError("configuration reload ({Trigger}) failed with {Count} error(s); the running configuration stays in force:{Errors}",
                    trigger, loaded.Errors.Count, string.Concat(loaded.Errors.Select(e => "\n  " + e)));
            }
            else
            {
                foreach (var w in loaded.Warnings) _logger.LogWarning("configuration: {Warning}", w);
                var current = _runtime.Current;
                GatewaySnapshot next;
                try
                {
                    next = SnapshotCompiler.Compile(loaded.Config!, loaded.Text, _runtime.Pools, _time, _runtime.Limiters, _runtime.JwtKeys);
                }
                catch (Exception e) when (e is InvalidOperationException or ArgumentException or IOException)
                {
                    var errors = new[] { new ConfigError("$", "compilation failed: " + e.Message) };
                    result = new ReloadResult(false, trigger, at, null, errors);
                    _runtime.Metrics.ConfigReloads.WithLabels("failure").Inc();
                    _logger.LogError("configuration reload ({Trigger}) failed: {Message}", trigger, e.Message);
                    Volatile.Write(ref _last, result);
                    Reloaded?.Invoke(result);
                    return result;
                }
                if (next.Version == current.Version)
                {
                    result = new ReloadResult(true, trigger, at, next.Version, []);
                }
                else
                {
                    if (!ListenersEqual(current.Config, next.Config))
                        _logger.LogWarning("listener or admin addresses changed in {Path}: they apply at the next restart", SourcePath);
                    _runtime.Swap(next);
                    result = new ReloadResult(true, trigger, at, next.Version, []);
                    _logger.LogInformation("configuration {Version} applied ({Trigger})", next.Version, trigger);
                }
                _runtime.Metrics.ConfigReloads.WithLabels("success").Inc();
            }
            Volatile.Write(ref _last, result);
            Reloaded?.Invoke(result);
            return result;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Whether two configs bind the same listeners and admin API, compared by value. Record equality stops at list
    /// members (a TLS listener's sni list, an sni entry's hosts compare by reference), so lists are compared item by
    /// item and everything else by the records' own equality.
    /// </summary>
    internal static bool ListenersEqual(GatewayConfig a, GatewayConfig b)
    {
        if (a.Listeners.Count != b.Listeners.Count || !Equals(a.Admin, b.Admin)) return false;
        for (int i = 0; i < a.Listeners.Count; i++)
        {
            ListenerConfig x = a.Listeners[i], y = b.Listeners[i];
            if (x with { Tls = null } != y with { Tls = null } || !SameTls(x.Tls, y.Tls)) return false;
        }
        return true;
    }

    private static readonly SniCertificateConfig[] s_noSni = [];
    private static readonly string[] s_noHosts = [];

    private static bool SameTls(ListenerTlsConfig? x, ListenerTlsConfig? y)
    {
        if (x is null || y is null) return x is null && y is null;
        if (x with { Sni = s_noSni } != y with { Sni = s_noSni } || x.Sni.Count != y.Sni.Count) return false;
        for (int i = 0; i < x.Sni.Count; i++)
        {
            if (x.Sni[i] with { Hosts = s_noHosts } != y.Sni[i] with { Hosts = s_noHosts } || !x.Sni[i].Hosts.SequenceEqual(y.Sni[i].Hosts))
                return false;
        }
        return true;
    }

    public void Dispose()
    {
        _watcher?.Dispose();
        _poll?.Dispose();
        _debounce?.Dispose();
        _sighup?.Dispose();
        _gate.Dispose();
    }
}
