using System.Text;
using FastGate.Http;
using FastGate.Observability;
using Prometheus;

namespace FastGate.RateLimiting;

public enum KeyPartKind : byte { ClientIp, Route, Header, Consumer, ApiKey, Claim }

/// <summary>One part of a limiter's key: what is counted.</summary>
public readonly record struct KeyPart(KeyPartKind Kind, byte[] Name);

/// <summary>
/// A limiter as a snapshot uses it: the live <see cref="RateLimiter"/> (whose state outlives reloads), how to build
/// its key from a request, and its pre-resolved metric children.
/// </summary>
public sealed class CompiledLimiter
{
    private readonly KeyPart[] _parts;

    public CompiledLimiter(RateLimiter limiter, IReadOnlyList<string> key)
    {
        Limiter = limiter;
        _parts = key.Select(k => k switch
        {
            "clientIp" => new KeyPart(KeyPartKind.ClientIp, []),
            "route" => new KeyPart(KeyPartKind.Route, []),
            "consumer" => new KeyPart(KeyPartKind.Consumer, []),
            "apiKey" => new KeyPart(KeyPartKind.ApiKey, []),
            _ when k.StartsWith("header:", StringComparison.Ordinal) => new KeyPart(KeyPartKind.Header, Encoding.ASCII.GetBytes(k[7..])),
            _ => new KeyPart(KeyPartKind.Claim, Encoding.ASCII.GetBytes(k[6..])),
        }).ToArray();
        Allowed = GatewayMetrics.RateLimitDecisions.WithLabels(limiter.Definition.Id, "allowed");
        Rejected = GatewayMetrics.RateLimitDecisions.WithLabels(limiter.Definition.Id, "rejected");
    }

    public RateLimiter Limiter { get; }
    public RateLimiterDefinition Definition => Limiter.Definition;
    public Counter.Child Allowed { get; }
    public Counter.Child Rejected { get; }
    public bool IsConcurrency => Definition.Algorithm == RateLimitAlgorithm.Concurrency;

    /// <summary>
    /// Writes the key into <paramref name="dest"/> (parts joined by 0x1F). Returns its length, or -1 when a part is
    /// missing from the request (the limiter's missingKey behaviour then applies), or -2 when it does not fit.
    /// </summary>
    public int BuildKey(Span<byte> dest, RequestHead request, ReadOnlySpan<byte> clientIp, ReadOnlySpan<byte> routeId, string? consumer = null)
    {
        int n = 0;
        for (int i = 0; i < _parts.Length; i++)
        {
            ReadOnlySpan<byte> value;
            switch (_parts[i].Kind)
            {
                case KeyPartKind.ClientIp: value = clientIp; break;
                case KeyPartKind.Route: value = routeId; break;
                case KeyPartKind.Header:
                    if (!request.TryGetHeader(_parts[i].Name, out value) || value.IsEmpty) return -1;
                    break;
                case KeyPartKind.Consumer:
                case KeyPartKind.ApiKey:
                    if (consumer is null) return -1;
                    if (n + consumer.Length + 1 > dest.Length) return -2;
                    if (i > 0) dest[n++] = 0x1F;
                    n += Encoding.UTF8.GetBytes(consumer, dest[n..]); // ASCII ids in practice; no allocation
                    continue;
                default:
                    return -1; // claims come from JWT authentication (not built yet)
            }
            if (i > 0)
            {
                if (n >= dest.Length) return -2;
                dest[n++] = 0x1F;
            }
            if (n + value.Length > dest.Length) return -2;
            value.CopyTo(dest[n..]);
            n += value.Length;
        }
        return n;
    }
}
