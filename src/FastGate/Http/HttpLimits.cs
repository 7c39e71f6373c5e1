namespace FastGate.Http;

/// <summary>What the parser enforces: size limits and the canonical-request settings. Immutable; compiled from the config's <c>limits</c> and <c>http</c>.</summary>
public sealed record HttpLimits
{
    public int MaxRequestLineBytes { get; init; } = 8192;
    public int MaxHeaderBytes { get; init; } = 32768;
    public int MaxHeaderCount { get; init; } = 100;
    public long MaxBodyBytes { get; init; } = 30 * 1024 * 1024;
    public EscapedSlashAction EscapedSlashes { get; init; } = EscapedSlashAction.Reject;
    public UnderscoreHeaderAction UnderscoreHeaders { get; init; } = UnderscoreHeaderAction.Drop;
    /// <summary>Lower-case names a '_' spelling may not stand for (the gateway's identity and forwarding headers, ...).</summary>
    public byte[][] ProtectedHeaderNames { get; init; } = DefaultProtectedHeaderNames;

    /// <summary>Names protected in every configuration; the compiler adds the configured identity and rule headers.</summary>
    public static readonly byte[][] DefaultProtectedHeaderNames =
    [
        .. new[]
        {
            "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip",
            "x-request-id", "x-consumer-id", "x-device-id", "x-api-key", "content-length", "transfer-encoding", "proxy-authorization",
            "proxy-connection", "keep-alive", "x-original-url", "x-rewrite-url", "x-http-method-override",
        }.Select(System.Text.Encoding.ASCII.GetBytes),
    ];

    /// <summary>Longest head (request line + header section + terminators) that can be accepted.</summary>
    public int MaxHeadBytes => MaxRequestLineBytes + MaxHeaderBytes + 4;

    public static readonly HttpLimits Default = new();
}
