namespace FastGate.LoadTest.Load;

/// <summary>One step of a load simulation. Phases run one after another.</summary>
public abstract record LoadPhase(TimeSpan Duration)
{
    /// <summary>Requests in this phase are sent but not measured (warm-up).</summary>
    public bool Warmup { get; init; }

    public abstract string Describe();
}

/// <summary>Open model: requests start on a fixed schedule whether or not earlier ones finished.</summary>
public sealed record ConstantRate(double Rate, TimeSpan Duration) : LoadPhase(Duration)
{
    public override string Describe() => $"constant {Rate:0.##} rps for {Format.Duration(Duration)}";
}

/// <summary>Open model: the arrival rate moves linearly from <see cref="From"/> to <see cref="To"/>.</summary>
public sealed record RampingRate(double From, double To, TimeSpan Duration) : LoadPhase(Duration)
{
    public override string Describe() => $"ramp {From:0.##} -> {To:0.##} rps over {Format.Duration(Duration)}";
}

/// <summary>Closed model: <see cref="Concurrency"/> virtual users each send the next request when the previous answered.</summary>
public sealed record FixedConcurrency(int Concurrency, TimeSpan Duration) : LoadPhase(Duration)
{
    public override string Describe() => $"closed {Concurrency} users for {Format.Duration(Duration)}";
}

/// <summary>No traffic for a while (connections stay open).</summary>
public sealed record Pause(TimeSpan Duration) : LoadPhase(Duration)
{
    public override string Describe() => $"pause {Format.Duration(Duration)}";
}

/// <summary>Factory methods in the spirit of NBomber's <c>Simulation.*</c>.</summary>
public static class Simulation
{
    public static ConstantRate Inject(double rate, TimeSpan duration) => new(rate, duration);
    public static RampingRate Ramp(double from, double to, TimeSpan duration) => new(from, to, duration);
    public static FixedConcurrency KeepConstant(int users, TimeSpan duration) => new(users, duration);
    public static Pause Pause(TimeSpan duration) => new(duration);
}
