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
/// /admin/config. Reloads are serialised; the file watcher is debounced.
/// </summary>
public sealed class ConfigReloader : IDisposable
{
    private static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(100);
    private readonly GatewayRuntime _runtime;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private FileSystemWatcher? _watcher;
    private ITimer? _debounce;
    private PosixSignalRegistration? _sighup;
    private ReloadResult? _last;

    public ConfigReloader(string path, GatewayRuntime runtime, ILogger logger, TimeProvider? time = null)
    {
        SourcePath = Path.GetFullPath(path);
        _runtime = runtime;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    public string SourcePath { get; }
    public ReloadResult? LastReload => Volatile.Read(ref _last);
    public event Action<ReloadResult>? Reloaded;

    /// <summary>Starts watching the file and listening for SIGHUP.</summary>
    public void Start()
    {
        var dir = Path.GetDirectoryName(SourcePath)!;
        _watcher = new FileSystemWatcher(dir, Path.GetFileName(SourcePath))
        {
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
        };
        _watcher.Changed += (_, _) => Schedule();
        _watcher.Created += (_, _) => Schedule();
        _watcher.Renamed += (_, _) => Schedule();
        _watcher.EnableRaisingEvents = true;
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

    private void Schedule()
    {
        var t = _debounce;
        if (t is null)
        {
            t = _time.CreateTimer(_ => _ = ReloadAsync("file"), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            if (Interlocked.CompareExchange(ref _debounce, t, null) is not null) { t.Dispose(); t = _debounce!; }
        }
        t.Change(Debounce, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Reads, validates, compiles and applies the file. Never throws; the result says what happened.</summary>
    public async Task<ReloadResult> ReloadAsync(string trigger)
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            var loaded = ConfigLoader.LoadFile(SourcePath);
            var at = _time.GetUtcNow();
            ReloadResult result;
            if (!loaded.IsValid)
            {
                result = new ReloadResult(false, trigger, at, null, loaded.Errors);
                GatewayMetrics.ConfigReloads.WithLabels("failure").Inc();
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
                    GatewayMetrics.ConfigReloads.WithLabels("failure").Inc();
                    _logger.LogError("configuration reload ({Trigger}) failed: {Message}", trigger, e.Message);
                    Volatile.Write(ref _last, result);
                    Reloaded?.Invoke(result);
                    return result;
                }
                if (!ListenersEqual(current.Config, next.Config))
                    _logger.LogWarning("listener or admin addresses changed in {Path}: they apply at the next restart", SourcePath);
                if (next.Version == current.Version)
                {
                    result = new ReloadResult(true, trigger, at, next.Version, []);
                }
                else
                {
                    _runtime.Swap(next);
                    result = new ReloadResult(true, trigger, at, next.Version, []);
                    _logger.LogInformation("configuration {Version} applied ({Trigger})", next.Version, trigger);
                }
                GatewayMetrics.ConfigReloads.WithLabels("success").Inc();
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

    private static bool ListenersEqual(GatewayConfig a, GatewayConfig b) =>
        a.Listeners.SequenceEqual(b.Listeners) && Equals(a.Admin, b.Admin);

    public void Dispose()
    {
        _watcher?.Dispose();
        _debounce?.Dispose();
        _sighup?.Dispose();
        _gate.Dispose();
    }
}
