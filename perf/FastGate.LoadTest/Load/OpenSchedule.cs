namespace FastGate.LoadTest.Load;

/// <summary>
/// The arrival schedule of one open-model phase, in nanoseconds from the phase start. Request n (from 0) is due
/// at the time t where the cumulative arrivals N(t) = n; for a linear rate r(t) = a + (b - a) t / D,
/// N(t) = a t + (b - a) t² / 2D. Both directions are closed forms, so any connection can ask for any n.
/// </summary>
public readonly struct OpenSchedule
{
    private readonly double _from;      // requests per second at t = 0
    private readonly double _slope;     // (to - from) / D, requests per second²
    private readonly double _seconds;

    public OpenSchedule(double fromRate, double toRate, TimeSpan duration)
    {
        if (fromRate < 0 || toRate < 0 || double.IsNaN(fromRate) || double.IsNaN(toRate))
            throw new ArgumentOutOfRangeException(nameof(fromRate), "rates must be >= 0");
        _seconds = duration.TotalSeconds;
        _from = fromRate;
        _slope = _seconds > 0 ? (toRate - fromRate) / _seconds : 0;
        TotalRequests = _seconds > 0 ? (long)Math.Floor(Cumulative(_seconds) + 1e-9) : 0;
        DurationNs = (long)(duration.Ticks * 100);
    }

    public static OpenSchedule For(LoadPhase phase) => phase switch
    {
        ConstantRate c => new OpenSchedule(c.Rate, c.Rate, c.Duration),
        RampingRate r => new OpenSchedule(r.From, r.To, r.Duration),
        _ => throw new ArgumentException("not an open-model phase: " + phase.Describe()),
    };

    /// <summary>How many requests this phase sends.</summary>
    public long TotalRequests { get; }

    public long DurationNs { get; }

    private double Cumulative(double t) => (_from * t) + (_slope * t * t / 2);

    /// <summary>When request <paramref name="n"/> is due, in ns after the phase start.</summary>
    public long DueNs(long n)
    {
        if (n <= 0) return 0;
        double seconds;
        double a = _slope / 2;
        if (Math.Abs(a) < 1e-12)
        {
            seconds = n / _from;
        }
        else
        {
            // a t² + from t - n = 0, in the form that stays stable as a -> 0 or from -> 0.
            double disc = (_from * _from) + (4 * a * n);
            seconds = disc <= 0 ? _seconds : 2.0 * n / (_from + Math.Sqrt(disc));
        }
        return (long)Math.Round(seconds * 1e9);
    }

    /// <summary>How many requests are due at or before <paramref name="elapsedNs"/> after the start.</summary>
    public long CountDue(long elapsedNs)
    {
        if (elapsedNs < 0) return 0;
        double t = Math.Min(elapsedNs / 1e9, _seconds);
        long estimate = (long)Math.Floor(Cumulative(t)) + 1;
        // Floating point can be off by one at the boundary; settle it with DueNs.
        while (estimate > 0 && DueNs(estimate - 1) > elapsedNs) estimate--;
        while (estimate < TotalRequests && DueNs(estimate) <= elapsedNs) estimate++;
        return Math.Min(estimate, TotalRequests);
    }
}
