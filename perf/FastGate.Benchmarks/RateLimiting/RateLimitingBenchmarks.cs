using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using FastGate.RateLimiting;
using SlidingWindowRateLimiter = FastGate.RateLimiting.SlidingWindowRateLimiter;

namespace FastGate.Benchmarks.RateLimiting;

/// <summary>
/// One acquire per request: FastGate's GCRA against System.Threading.RateLimiting's TokenBucketRateLimiter (one
/// bucket) and PartitionedRateLimiter (a token bucket per key), all configured never to reject. The built-in
/// partitioned limiter is handed a pre-made string key (it cannot key on bytes), which favours it.
/// </summary>
[MemoryDiagnoser]
public class RateLimitingBenchmarks
{
    private const int PerThread = 200_000;
    private static readonly byte[] KeyA = [203, 0, 113, 7];
    private static readonly byte[] KeyB = [198, 51, 100, 9];
    private const string StrKeyA = "203.0.113.7";
    private const string StrKeyB = "198.51.100.9";

    private GcraRateLimiter _gcra = null!;
    private SlidingWindowRateLimiter _sliding = null!;
    private ConcurrencyRateLimiter _concurrency = null!;
    private TokenBucketRateLimiter _tokenBucket = null!;
    private PartitionedRateLimiter<string> _partitioned = null!;
    private RateLimiterDefinition _headerDef = null!;
    private RateLimitDecision _rejection;
    private readonly byte[] _headerBuffer = new byte[512];
    private long _ts;

    [GlobalSetup]
    public void Setup()
    {
        var errors = new List<string>();
        // 10M/s with a burst of 1e9: never rejects for the length of a run.
        _gcra = new GcraRateLimiter(RateLimiterDefinition.Create(errors, "bench", RateLimitAlgorithm.Gcra, 10_000_000,
            TimeSpan.FromSeconds(1), burst: 1_000_000_000)!, TimeProvider.System);
        _sliding = new SlidingWindowRateLimiter(RateLimiterDefinition.Create(errors, "bench-sw", RateLimitAlgorithm.SlidingWindow,
            RateLimiterDefinition.MaxSlidingWindowLimit, TimeSpan.FromMilliseconds(1))!, TimeProvider.System);
        _concurrency = new ConcurrencyRateLimiter(RateLimiterDefinition.Create(errors, "bench-c", RateLimitAlgorithm.Concurrency,
            1000, TimeSpan.FromSeconds(1))!, TimeProvider.System);
        _headerDef = RateLimiterDefinition.Create(errors, "per-ip", RateLimitAlgorithm.Gcra, 100, TimeSpan.FromSeconds(1),
            legacyHeaders: true)!;
        if (errors.Count > 0) throw new InvalidOperationException(string.Join("; ", errors));
        var small = new GcraRateLimiter(_headerDef, TimeProvider.System);
        small.Acquire(KeyA, 100);
        _rejection = small.Acquire(KeyA);

        var options = new TokenBucketRateLimiterOptions
        {
            TokenLimit = 1_000_000_000,
            TokensPerPeriod = 1_000_000_000,
            ReplenishmentPeriod = TimeSpan.FromSeconds(1),
            QueueLimit = 0,
            AutoReplenishment = true,
        };
        _tokenBucket = new TokenBucketRateLimiter(options);
        _partitioned = PartitionedRateLimiter.Create<string, string>(key => RateLimitPartition.GetTokenBucketLimiter(key, _ => options));
        _gcra.Acquire(KeyA); _gcra.Acquire(KeyB);
        _ts = TimeProvider.System.GetTimestamp();
        _partitioned.AttemptAcquire(StrKeyA).Dispose(); _partitioned.AttemptAcquire(StrKeyB).Dispose();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_gcra.Counters.Rejected.Value != 0) Console.WriteLine($"// WARNING: gcra rejected {_gcra.Counters.Rejected.Value}");
        _tokenBucket.Dispose();
        _partitioned.Dispose();
    }

    // ---- single thread -------------------------------------------------------------------------------------------

    [Benchmark(Baseline = true)]
    public bool Gcra_Acquire() => _gcra.Acquire(KeyA).IsAllowed;

    /// <summary>The request path reads the clock once per request and hands the timestamp to every limiter.</summary>
    [Benchmark]
    public bool Gcra_Acquire_GivenTimestamp() => _gcra.Acquire(KeyA, 1, ++_ts).IsAllowed;

    [Benchmark]
    public bool SlidingWindow_Acquire() => _sliding.Acquire(KeyA).IsAllowed;

    [Benchmark]
    public bool Concurrency_AcquireRelease()
    {
        var d = _concurrency.Acquire(KeyA);
        _concurrency.Release(in d);
        return d.IsAllowed;
    }

    [Benchmark]
    public bool BuiltIn_TokenBucket_AttemptAcquire()
    {
        using var lease = _tokenBucket.AttemptAcquire(1);
        return lease.IsAcquired;
    }

    [Benchmark]
    public bool BuiltIn_Partitioned_AttemptAcquire()
    {
        using var lease = _partitioned.AttemptAcquire(StrKeyA);
        return lease.IsAcquired;
    }

    [Benchmark]
    public int WriteRejectionHeaders() => RateLimitHeaders.Write(_headerBuffer, in _rejection, _headerDef);

    // ---- two threads (OperationsPerInvoke counts every acquire of both threads) -----------------------------------

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void Gcra_2Threads_SameKey() => TwoThreads(static (self, _) => self.GcraLoop(KeyA));

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void Gcra_2Threads_DistinctKeys() => TwoThreads(static (self, i) => self.GcraLoop(i == 0 ? KeyA : KeyB));

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void BuiltIn_TokenBucket_2Threads() => TwoThreads(static (self, _) => self.TokenBucketLoop());

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void BuiltIn_Partitioned_2Threads_SameKey() => TwoThreads(static (self, _) => self.PartitionedLoop(StrKeyA));

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void BuiltIn_Partitioned_2Threads_DistinctKeys() => TwoThreads(static (self, i) => self.PartitionedLoop(i == 0 ? StrKeyA : StrKeyB));

    private void TwoThreads(Action<RateLimitingBenchmarks, int> body)
    {
        var other = new Thread(() => body(this, 1));
        other.Start();
        body(this, 0);
        other.Join();
    }

    private void GcraLoop(byte[] key)
    {
        for (int i = 0; i < PerThread; i++) _gcra.Acquire(key);
    }

    private void TokenBucketLoop()
    {
        for (int i = 0; i < PerThread; i++) _tokenBucket.AttemptAcquire(1).Dispose();
    }

    private void PartitionedLoop(string key)
    {
        for (int i = 0; i < PerThread; i++) _partitioned.AttemptAcquire(key).Dispose();
    }
}

/// <summary>Cost of a key the table has not seen (the key-rotation attack's price per request).</summary>
[MemoryDiagnoser]
public class RateLimitKeyTableBenchmarks
{
    private const int Keys = 100_000;
    private GcraRateLimiter _limiter = null!;
    private int _next;

    [IterationSetup]
    public void Setup()
    {
        var errors = new List<string>();
        _limiter = new GcraRateLimiter(RateLimiterDefinition.Create(errors, "bench-new", RateLimitAlgorithm.Gcra, 100,
            TimeSpan.FromSeconds(1), maxKeys: 10_000_000)!, TimeProvider.System);
    }

    [Benchmark(OperationsPerInvoke = Keys)]
    public void Gcra_NewKeys()
    {
        Span<byte> key = stackalloc byte[16];
        for (int i = 0; i < Keys; i++)
        {
            BitConverter.TryWriteBytes(key, ++_next);
            _limiter.Acquire(key);
        }
    }
}
