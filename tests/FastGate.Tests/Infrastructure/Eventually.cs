namespace FastGate.Tests.Infrastructure;

/// <summary>
/// Waiting in tests. Prefer a signal (a TaskCompletionSource the peer completes) and <see cref="SignalledAsync"/>;
/// when the thing waited for has no signal (a reconnect inside a client library, a file watcher, an external process),
/// poll it here: one bounded deadline, a short poll interval, and a message that says what did not happen.
/// </summary>
public static class Eventually
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(20);

    /// <summary>Waits until <paramref name="condition"/> holds; fails with <paramref name="what"/> after the timeout.</summary>
    public static Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? timeout = null) =>
        WaitUntilAsync(() => Task.FromResult(condition()), what, timeout);

    /// <summary>Waits until <paramref name="condition"/> holds; fails with <paramref name="what"/> after the timeout.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null, Func<string>? describe = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? DefaultTimeout);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"timed out waiting until {what}" + (describe is null ? "" : ": " + describe()));
            await Task.Delay(PollInterval);
        }
    }

    /// <summary>Awaits a signal, failing with <paramref name="what"/> when it does not come within the timeout.</summary>
    public static async Task SignalledAsync(Task signal, string what, TimeSpan? timeout = null)
    {
        try { await signal.WaitAsync(timeout ?? DefaultTimeout); }
        catch (TimeoutException) { throw new TimeoutException($"timed out waiting until {what}"); }
    }

    /// <summary>Awaits a signal with a value, failing with <paramref name="what"/> when it does not come within the timeout.</summary>
    public static async Task<T> SignalledAsync<T>(Task<T> signal, string what, TimeSpan? timeout = null)
    {
        try { return await signal.WaitAsync(timeout ?? DefaultTimeout); }
        catch (TimeoutException) { throw new TimeoutException($"timed out waiting until {what}"); }
    }
}
