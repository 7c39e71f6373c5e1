using System.Net;
using FastGate.LoadTest.Client;
using FastGate.LoadTest.Metrics;
using FastGate.LoadTest.Scenarios;
using FastGate.LoadTest.Thresholds;
using HdrHistogram;

namespace FastGate.LoadTest.Load;

public sealed record RunSettings
{
    public required IPEndPoint Endpoint { get; init; }
    /// <summary>Host header value (host:port).</summary>
    public required string Host { get; init; }
    public required string Target { get; init; }
    /// <summary>Connections (virtual users) for open-model phases.</summary>
    public int Connections { get; init; } = 32;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(5);
    public bool Precise { get; init; }
    public NanoClock Clock { get; init; } = NanoClock.System;
    public TextWriter? Progress { get; init; }
    public ScenarioOptions Options { get; init; } = new();
    /// <summary>An earlier run's summary for relative thresholds (p99&lt;=1.2x).</summary>
    public Baseline? Baseline { get; init; }
}

/// <summary>
/// Runs a scenario: connects the virtual users, runs the phases in order (open model through the shared
/// schedule and the ticker, closed model back to back), samples every second, and returns the measured result.
/// </summary>
public sealed class LoadRunner(RunSettings settings)
{
    private readonly NanoClock _clock = settings.Clock;

    /// <summary>State shared by the virtual users of one open-model phase.</summary>
    private sealed class OpenPhase
    {
        public required OpenSchedule Schedule;
        public required long StartNs;
        public required long DeadlineNs;
        public required RunStats Stats;
        public required Ticker Ticker;
        public long Next;
    }

    private volatile bool _stopped;

    public async Task<RunResult> RunAsync(Scenario scenario, IReadOnlyList<Threshold> extraThresholds, CancellationToken ct)
    {
        if (scenario.Load.Count == 0) throw new ArgumentException($"scenario '{scenario.Name}' has no load phases");
        int users = Math.Max(1, settings.Connections);
        foreach (var p in scenario.Load)
        {
            if (p is FixedConcurrency f) users = Math.Max(users, f.Concurrency);
        }

        var vus = new VirtualUser[users];
        for (int i = 0; i < users; i++)
        {
            var specs = scenario.Requests(new VirtualUserContext(i, settings.Options));
            var encoded = specs.Select(s => RequestEncoder.Encode(s, settings.Host)).ToArray();
            vus[i] = new VirtualUser(i, settings.Endpoint, encoded);
        }

        using var ticker = new Ticker(_clock, users, settings.Precise);
        foreach (var vu in vus) ticker.AddSlot(vu.Waiter);
        var warmup = new RunStats();
        var measured = new RunStats();
        var started = DateTimeOffset.UtcNow;
        using var reg = ct.Register(() => _stopped = true);

        // Connect everyone first (a few at a time) so the first requests do not pay for the handshake.
        using (var connectCts = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            connectCts.CancelAfter(settings.Timeout);
            await Parallel.ForEachAsync(vus, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = CancellationToken.None },
                async (vu, _) => await vu.ConnectAsync(connectCts.Token).ConfigureAwait(false)).ConfigureAwait(false);
        }
        int connected = vus.Count(v => v.Connected);
        settings.Progress?.WriteLine($"{scenario.Name}: {connected}/{users} connections open to {settings.Target}");

        ticker.Start();
        var side = new SideContext(settings.Endpoint, settings.Host, settings.Options);
        using var sideCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var sideTasks = scenario.SideActivities.Select(a => Task.Run(() => a.RunAsync(side, sideCts.Token), CancellationToken.None)).ToArray();

        var sampler = new Sampler(_clock, vus, measured, warmup, settings);
        using var samplerCts = new CancellationTokenSource();
        var samplerTask = Task.Run(() => sampler.RunAsync(samplerCts.Token), CancellationToken.None);

        var phases = new List<string>();
        double measuredSeconds = 0;
        long allocated = 0;
        try
        {
            foreach (var phase in scenario.Load)
            {
                if (_stopped) break;
                var stats = phase.Warmup ? warmup : measured;
                long start = _clock.NowNs;
                sampler.BeginPhase(phase, start);
                long allocatedBefore = GC.GetTotalAllocatedBytes(precise: false);
                phases.Add((phase.Warmup ? "warm-up: " : "") + phase.Describe());
                switch (phase)
                {
                    case Pause p:
                        try { await Task.Delay(p.Duration, ct).ConfigureAwait(false); } catch (OperationCanceledException) { }
                        break;
                    case FixedConcurrency f:
                        long end = start + (long)(f.Duration.Ticks * 100);
                        var closed = new ClosedDriver(end, stats, _clock, () => _stopped);
                        await Task.WhenAll(vus.Take(f.Concurrency).Select(vu => vu.RunAsync(closed, _clock))).ConfigureAwait(false);
                        break;
                    default:
                        var schedule = OpenSchedule.For(phase);
                        var state = new OpenPhase
                        {
                            Schedule = schedule,
                            StartNs = start,
                            DeadlineNs = start + schedule.DurationNs + (long)(settings.Timeout.Ticks * 100),
                            Stats = stats,
                            Ticker = ticker,
                        };
                        var open = new OpenDriver(state, _clock, () => _stopped);
                        await Task.WhenAll(vus.Take(settings.Connections).Select(vu => vu.RunAsync(open, _clock))).ConfigureAwait(false);
                        break;
                }
                if (!phase.Warmup)
                {
                    measuredSeconds += (_clock.NowNs - start) / 1e9;
                    allocated += GC.GetTotalAllocatedBytes(precise: false) - allocatedBefore;
                }
            }
        }
        finally
        {
            sideCts.Cancel();
            try { await Task.WhenAll(sideTasks).WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or TimeoutException) { }
            samplerCts.Cancel();
            await samplerTask.ConfigureAwait(false);
            sampler.Flush();
            foreach (var vu in vus) vu.Dispose();
        }

        var result = new RunResult
        {
            Scenario = scenario.Name,
            Target = settings.Target,
            Started = started,
            Phases = phases,
            Connections = settings.Connections,
            MeasuredSeconds = measuredSeconds,
            Latency = sampler.TotalLatency,
            SendLag = sampler.TotalSendLag,
            Counts = measured.Snapshot(),
            Series = sampler.Series,
            SideCounters = side.Counters,
            ClientAllocatedBytes = allocated,
        };
        result.Thresholds = [.. scenario.Thresholds.Concat(extraThresholds).Select(t => t.Evaluate(result, settings.Baseline))];
        return result;
    }

    /// <summary>Open model: users claim the next request of the shared schedule and wait until it is due.</summary>
    private sealed class OpenDriver(OpenPhase p, NanoClock clock, Func<bool> stopped) : LoopDriver
    {
        public override bool TryBegin(VirtualUser vu, out ValueTask wait)
        {
            wait = default;
            var schedule = p.Schedule;
            while (true)
            {
                long n = Interlocked.Increment(ref p.Next) - 1;
                if (n >= schedule.TotalRequests || stopped()) return false;
                long due = p.StartNs + schedule.DueNs(n);
                long claimed = clock.NowNs;
                if (claimed > p.DeadlineNs)
                {
                    // Hopelessly behind (the target stalls): the rest of the schedule times out without being sent.
                    p.Stats.RecordError(ErrorKind.Timeout, -1);
                    continue;
                }
                vu.CurrentN = n;
                vu.DueNs = due;
                vu.ClaimedNs = claimed;
                wait = p.Ticker.WaitUntil(vu.Waiter, due);
                return true;
            }
        }

        public override void End(VirtualUser vu, EncodedRequest request, int outcome, bool headersOk, long sendNs, long endNs)
        {
            long lag = sendNs - Math.Max(vu.DueNs, vu.ClaimedNs);
            Record(p.Stats, request, outcome, headersOk, LatencyFromSchedule(vu.DueNs, vu.ClaimedNs, sendNs, endNs), lag);
        }
    }

    /// <summary>
    /// Latency of an open-model request: from its scheduled time to the end of its response, except the
    /// generator's own lateness (time between "due and a connection was free" and the actual send), which is
    /// reported as send lag. Waiting for a free connection counts: that is the queue a slow server builds.
    /// </summary>
    public static long LatencyFromSchedule(long dueNs, long claimedNs, long sendNs, long endNs)
    {
        long ready = Math.Max(dueNs, claimedNs);
        return (endNs - sendNs) + (ready - dueNs);
    }

    /// <summary>Closed model: each user sends its next request as soon as the previous one answered, until the end.</summary>
    private sealed class ClosedDriver(long endNs, RunStats stats, NanoClock clock, Func<bool> stopped) : LoopDriver
    {
        public override bool TryBegin(VirtualUser vu, out ValueTask wait)
        {
            wait = default;
            if (stopped() || clock.NowNs >= endNs) return false;
            if (vu.ClaimedNs == -1) wait = new ValueTask(Task.Delay(10)); // back off after a failed connect
            vu.CurrentN++;
            return true;
        }

        public override void End(VirtualUser vu, EncodedRequest request, int outcome, bool headersOk, long sendNs, long endNs)
        {
            Record(stats, request, outcome, headersOk, endNs - sendNs, -1);
            vu.ClaimedNs = outcome == VirtualUser.ErrorCode(ErrorKind.Connect) ? -1 : 0;
        }
    }

    private static void Record(RunStats stats, EncodedRequest request, int outcome, bool headersOk, long latencyNs, long lagNs)
    {
        if (outcome >= 100) stats.RecordResponse(outcome, latencyNs, lagNs, request.Expect.Accepts(outcome), headersOk);
        else stats.RecordError(VirtualUser.KindOf(outcome), lagNs);
    }

    /// <summary>Every 100 ms: time-outs; every second: interval histograms, a time point and a progress line.</summary>
    private sealed class Sampler(NanoClock clock, VirtualUser[] vus, RunStats measured, RunStats warmup, RunSettings settings)
    {
        private readonly HistogramBase _interval = RunStats.NewHistogram();
        private readonly HistogramBase _intervalLag = RunStats.NewHistogram();
        private readonly List<TimePoint> _series = [];
        private Counts _last = measured.Snapshot();
        private Counts _lastWarm = warmup.Snapshot();
        private long _lastNs = clock.NowNs;
        private long _measureStartNs = -1;
        private volatile LoadPhase? _phase;
        private readonly Lock _gate = new();

        public HistogramBase TotalLatency { get; } = RunStats.NewHistogram();
        public HistogramBase TotalSendLag { get; } = RunStats.NewHistogram();
        public IReadOnlyList<TimePoint> Series => _series;

        public void BeginPhase(LoadPhase phase, long startNs)
        {
            lock (_gate)
            {
                if (!phase.Warmup && _measureStartNs < 0)
                {
                    Sample(); // close the warm-up's last interval
                    _measureStartNs = startNs;
                }
                _phase = phase;
            }
        }

        public async Task RunAsync(CancellationToken ct)
        {
            long timeoutNs = (long)(settings.Timeout.Ticks * 100);
            int tick = 0;
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    await Task.Delay(100, ct).ConfigureAwait(false);
                    long now = clock.NowNs;
                    foreach (var vu in vus) vu.CheckTimeout(now, timeoutNs);
                    if (++tick % 10 == 0)
                    {
                        lock (_gate) Sample();
                    }
                }
            }
            catch (OperationCanceledException) { }
        }

        public void Flush()
        {
            lock (_gate) Sample();
        }

        private void Sample()
        {
            long now = clock.NowNs;
            double seconds = Math.Max(1e-9, (now - _lastNs) / 1e9);
            _lastNs = now;

            measured.TakeInterval(_interval, _intervalLag);
            TotalLatency.Add(_interval);
            TotalSendLag.Add(_intervalLag);
            var counts = measured.Snapshot();
            var warm = warmup.Snapshot();
            long responses = counts.Responses - _last.Responses;
            long errors = counts.ErrorTotal - _last.ErrorTotal;
            bool inWarmup = _measureStartNs < 0;
            if (inWarmup)
            {
                // Warm-up intervals are shown, then dropped.
                warmup.TakeInterval(_interval, _intervalLag);
                responses = warm.Responses - _lastWarm.Responses;
                errors = warm.ErrorTotal - _lastWarm.ErrorTotal;
            }
            _lastWarm = warm;
            _last = counts;

            var point = new TimePoint(
                Second: inWarmup ? 0 : Math.Round((now - _measureStartNs) / 1e9, 3),
                Responses: responses,
                Errors: errors,
                Rps: responses / seconds,
                P50Ns: Pct(_interval, 50), P90Ns: Pct(_interval, 90), P99Ns: Pct(_interval, 99),
                MaxNs: _interval.TotalCount == 0 ? 0 : HistogramExtensions.GetMaxValue(_interval),
                SendLagP99Ns: Pct(_intervalLag, 99));
            if (!inWarmup && (responses > 0 || errors > 0 || _interval.TotalCount > 0 || _series.Count > 0)) _series.Add(point);
            var phase = _phase;
            settings.Progress?.WriteLine(
                $"[{(inWarmup ? "warm-up" : Format.Num(point.Second, "0") + "s"),7}] {Format.Num(point.Rps, "0"),7} rps  p50 {Format.Latency(point.P50Ns),8}  p99 {Format.Latency(point.P99Ns),8}  max {Format.Latency(point.MaxNs),8}  errors {errors,5}  send lag p99 {Format.Latency(point.SendLagP99Ns),8}  {phase?.Describe()}");
        }

        private static long Pct(HistogramBase h, double p) => h.TotalCount == 0 ? 0 : h.GetValueAtPercentile(p);
    }
}
