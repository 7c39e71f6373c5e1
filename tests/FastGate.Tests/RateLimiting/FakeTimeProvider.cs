using FastGate.RateLimiting;
using Xunit;

namespace FastGate.Tests.RateLimiting;

/// <summary>A clock that moves only when told to. Timestamps are 100 ns ticks; thread-safe.</summary>
public sealed class FakeTimeProvider : TimeProvider
{
    private long _ticks;
    private readonly DateTimeOffset _origin;

    public FakeTimeProvider(long startTicks = TimeSpan.TicksPerDay, DateTimeOffset? origin = null)
    {
        _ticks = startTicks;
        _origin = origin ?? new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    public override long GetTimestamp() => Volatile.Read(ref _ticks);
    public override DateTimeOffset GetUtcNow() => _origin.AddTicks(Volatile.Read(ref _ticks));
    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    public void AdvanceTicks(long ticks) => Interlocked.Add(ref _ticks, ticks);
}

internal static class Defs
{
    public static RateLimiterDefinition Make(RateLimitAlgorithm algorithm, long rate, TimeSpan per, long? burst = null,
        int maxKeys = RateLimiterDefinition.DefaultMaxKeys, MissingKeyBehavior missingKey = MissingKeyBehavior.SharedBucket,
        bool quotaHeaders = false, bool legacyHeaders = false, string id = "test",
        RateLimitScope scope = RateLimitScope.Local, StoreFailureMode onStoreFailure = StoreFailureMode.Allow,
        TimeSpan? storeTimeout = null)
    {
        var errors = new List<string>();
        var d = RateLimiterDefinition.Create(errors, id, algorithm, rate, per, burst, maxKeys, missingKey, 429, quotaHeaders,
            legacyHeaders, scope, onStoreFailure, storeTimeout);
        Assert.True(d is not null, string.Join("; ", errors));
        return d!;
    }

    public static byte[] Key(int i) => BitConverter.GetBytes(i);
}
