namespace FastGate.Http;

/// <summary>Size limits the parser enforces. Immutable; compiled from the config's <c>limits</c>.</summary>
public sealed record HttpLimits
{
    public int MaxRequestLineBytes { get; init; } = 8192;
    public int MaxHeaderBytes { get; init; } = 32768;
    public int MaxHeaderCount { get; init; } = 100;
    public long MaxBodyBytes { get; init; } = 30 * 1024 * 1024;

    /// <summary>Longest head (request line + header section + terminators) that can be accepted.</summary>
    public int MaxHeadBytes => MaxRequestLineBytes + MaxHeaderBytes + 4;

    public static readonly HttpLimits Default = new();
}
