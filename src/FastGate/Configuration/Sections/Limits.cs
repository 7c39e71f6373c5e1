using System.Text.Json;

namespace FastGate.Configuration;

// The limits section: what the user writes and how it is bound (errors with their JSON path). Its timeouts are
// checked with the routes' by ConfigValidator.

public sealed record LimitsConfig
{
    public int MaxRequestLineBytes { get; init; } = 8192;
    public int MaxHeaderBytes { get; init; } = 32768;
    public int MaxHeaderCount { get; init; } = 100;
    public long MaxBodyBytes { get; init; } = 31457280;
    public TimeSpan HeaderTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan KeepAliveTimeout { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan UpstreamConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan UpstreamResponseTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>Longest wait for the next request-body bytes once a body has begun (the client's fault only: time the
    /// gateway spends waiting on the upstream to take bytes is not counted).</summary>
    public TimeSpan BodyIdleTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Lowest request-body rate (bytes/s) after <see cref="MinRateGracePeriod"/>; 0 turns the check off.</summary>
    public long MinRequestBodyRate { get; init; } = 240;
    /// <summary>Lowest rate (bytes/s) at which a client must take a response when its connection is backed up; 0: off.</summary>
    public long MinResponseRate { get; init; } = 240;
    /// <summary>Time a body or a response gets before the minimum rates apply.</summary>
    public TimeSpan MinRateGracePeriod { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Default total time from a request head to its response head, for routes without their own (null: none).</summary>
    public TimeSpan? RequestTimeout { get; init; }
    /// <summary>Request bodies up to this size are read completely before an upstream connection is leased; 0: stream all.</summary>
    public int RequestBufferBytes { get; init; } = 65536;
}

/// <summary>Binds <c>limits</c>.</summary>
internal static class LimitsConfigBinder
{
    /// <summary><c>limits</c>.</summary>
    internal static readonly string[] Properties =
        ConfigReader.Names(nameof(LimitsConfig.MaxRequestLineBytes), nameof(LimitsConfig.MaxHeaderBytes),
        nameof(LimitsConfig.MaxHeaderCount), nameof(LimitsConfig.MaxBodyBytes), nameof(LimitsConfig.HeaderTimeout),
        nameof(LimitsConfig.KeepAliveTimeout), nameof(LimitsConfig.UpstreamConnectTimeout), nameof(LimitsConfig.UpstreamResponseTimeout),
        nameof(LimitsConfig.DrainTimeout), nameof(LimitsConfig.BodyIdleTimeout), nameof(LimitsConfig.MinRequestBodyRate),
        nameof(LimitsConfig.MinResponseRate), nameof(LimitsConfig.MinRateGracePeriod), nameof(LimitsConfig.RequestTimeout),
        nameof(LimitsConfig.RequestBufferBytes));

    /// <summary>The largest limits.requestBufferBytes (a per-connection buffer while a body is read): 16 MiB.</summary>
    internal const long MaxRequestBufferBytes = 16 << 20;

    public static LimitsConfig Bind(JsonElement root, string path, ConfigReader r)
    {
        var limits = new LimitsConfig();
        if (r.TryGet(root, path, nameof(GatewayConfig.Limits), false, out var l) && r.IsObject(l, ConfigReader.Child(path, nameof(GatewayConfig.Limits))))
            limits = BindLimits(l, ConfigReader.Child(path, nameof(GatewayConfig.Limits)), r);
        return limits;
    }

    private static LimitsConfig BindLimits(JsonElement e, string p, ConfigReader r)
    {
        r.CheckUnknown(e, p, Properties);
        var d = new LimitsConfig();
        return new LimitsConfig
        {
            MaxRequestLineBytes = (int)(r.Integer(e, p, nameof(LimitsConfig.MaxRequestLineBytes), 1, 1 << 20) ?? d.MaxRequestLineBytes),
            MaxHeaderBytes = (int)(r.Integer(e, p, nameof(LimitsConfig.MaxHeaderBytes), 1, 1 << 24) ?? d.MaxHeaderBytes),
            MaxHeaderCount = (int)(r.Integer(e, p, nameof(LimitsConfig.MaxHeaderCount), 1, 10_000) ?? d.MaxHeaderCount),
            MaxBodyBytes = r.Integer(e, p, nameof(LimitsConfig.MaxBodyBytes), 1, long.MaxValue) ?? d.MaxBodyBytes,
            HeaderTimeout = r.Duration(e, p, nameof(LimitsConfig.HeaderTimeout)) ?? d.HeaderTimeout,
            KeepAliveTimeout = r.Duration(e, p, nameof(LimitsConfig.KeepAliveTimeout)) ?? d.KeepAliveTimeout,
            UpstreamConnectTimeout = r.Duration(e, p, nameof(LimitsConfig.UpstreamConnectTimeout)) ?? d.UpstreamConnectTimeout,
            UpstreamResponseTimeout = r.Duration(e, p, nameof(LimitsConfig.UpstreamResponseTimeout)) ?? d.UpstreamResponseTimeout,
            DrainTimeout = r.Duration(e, p, nameof(LimitsConfig.DrainTimeout)) ?? d.DrainTimeout,
            BodyIdleTimeout = r.Duration(e, p, nameof(LimitsConfig.BodyIdleTimeout)) ?? d.BodyIdleTimeout,
            MinRequestBodyRate = r.Integer(e, p, nameof(LimitsConfig.MinRequestBodyRate), 0, 1L << 40) ?? d.MinRequestBodyRate,
            MinResponseRate = r.Integer(e, p, nameof(LimitsConfig.MinResponseRate), 0, 1L << 40) ?? d.MinResponseRate,
            MinRateGracePeriod = r.Duration(e, p, nameof(LimitsConfig.MinRateGracePeriod)) ?? d.MinRateGracePeriod,
            RequestTimeout = r.Duration(e, p, nameof(LimitsConfig.RequestTimeout)),
            RequestBufferBytes = (int)(r.Integer(e, p, nameof(LimitsConfig.RequestBufferBytes), 0, MaxRequestBufferBytes) ?? d.RequestBufferBytes),
        };
    }
}
