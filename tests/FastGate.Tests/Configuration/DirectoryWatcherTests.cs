using FastGate.Configuration;
using Xunit;

namespace FastGate.Tests.Configuration;

/// <summary>
/// The config directory's watch: a log that stays open and grows beside the config (the access log's default place)
/// raises nothing; a config written in place, or swapped in by a rename (editors, a Kubernetes ConfigMap), does.
/// inotify delivers events in order, so when the look for the config write arrives, any look the log's writes raised
/// has arrived before it: the count of looks is exact.
/// </summary>
public sealed class DirectoryWatcherTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fg-watch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_log_growing_beside_the_config_raises_no_look_and_a_config_write_raises_one()
    {
        if (!OperatingSystem.IsLinux()) return; // elsewhere it is FileSystemWatcher, which reports every write
        var config = Path.Combine(_dir, "fastgate.json");
        File.WriteAllText(config, "{}");
        await using var log = new FileStream(Path.Combine(_dir, "access.log"), FileMode.Append, FileAccess.Write, FileShare.ReadWrite, 1);
        int looks = 0;
        var looked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var watcher = new DirectoryWatcher(_dir, () => { Interlocked.Increment(ref looks); looked.TrySetResult(); });
        Assert.True(watcher.UsesInotify);

        var line = new byte[400];
        for (int i = 0; i < 200; i++)
        {
            log.Write(line);
            log.Flush();
        }
        File.WriteAllText(config, "{ \"routes\": [] }");
        await looked.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, Volatile.Read(ref looks));

        // a rename into place (an editor's save, a ConfigMap's ..data swap) is one look as well; the new text is
        // written outside the watched directory first, so the rename is the only event
        var outside = Directory.CreateTempSubdirectory("fg-watch-next-").FullName;
        try
        {
            var next = Path.Combine(outside, "fastgate.json");
            File.WriteAllText(next, "{}");
            looked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            File.Move(next, config, overwrite: true);
            await looked.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(2, Volatile.Read(ref looks));
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }
}
