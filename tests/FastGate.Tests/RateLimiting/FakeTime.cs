using FastGate.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace FastGate.Tests.RateLimiting;

/// <summary>
/// Microsoft.Extensions.Time.Testing's FakeTimeProvider, started where the tests expect: at 2026-01-01 plus
/// <c>startTicks</c> (a whole day by default). Its timestamps are 100 ns ticks of that instant, so windows of a day
/// or less are aligned as the tests' start offsets say.
/// </summary>
internal static class FakeTime
{
    public static readonly DateTimeOffset Origin = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static FakeTimeProvider Create(long startTicks = TimeSpan.TicksPerDay) => new(Origin.AddTicks(startTicks));

    public static void AdvanceTicks(this FakeTimeProvider time, long ticks) => time.Advance(TimeSpan.FromTicks(ticks));
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
