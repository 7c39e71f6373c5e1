using System.Text;
using FastGate.Http;
using FastGate.Observability;
using Prometheus;

namespace FastGate.RateLimiting;

public enum KeyPartKind : byte { ClientIp, Route, Header, Consumer, ApiKey, Claim, Device, Subject }

/// <summary>One part of a limiter's key: what is counted.</summary>
public readonly record struct KeyPart(KeyPartKind Kind, byte[] Name, string? Text = null);

/// <summary>
/// A limiter as a snapshot uses it: the live <see cref="RateLimiter"/> (whose state outlives reloads), how to build
/// its key from a request, and its pre-resolved metric children.
/// </summary>
public sealed class CompiledLimiter
{
    private readonly KeyPart[] _parts;

    public CompiledLimiter(RateLimiter limiter, IReadOnlyList<string> key, GatewayMetrics metrics)
    {
        Limiter = limiter;
        _parts = key.Select(k => k switch
        {
            "clientIp" => new KeyPart(KeyPartKind.ClientIp, []),
            "route" => new KeyPart(KeyPartKind.Route, []),
            "consumer" => new KeyPart(KeyPartKind.Consumer, []),
            "apiKey" => new KeyPart(KeyPartKind.ApiKey, []),
            "device" => new KeyPart(KeyPartKind.Device, []),
            "subject" => new KeyPart(KeyPartKind.Subject, []),
            _ when k.StartsWith("header:", StringComparison.Ordinal) => new KeyPart(KeyPartKind.Header, Encoding.ASCII.GetBytes(k[7..])),
            _ => new KeyPart(KeyPartKind.Claim, Encoding.ASCII.GetBytes(k[6..]), k[6..]),
        }).ToArray();
        Allowed = metrics.RateLimitDecisions.WithLabels(limiter.Definition.Id, "allowed");
        Rejected = metrics.RateLimitDecisions.WithLabels(limiter.Definition.Id, "rejected");
    }

    public RateLimiter Limiter { get; }
    public RateLimiterDefinition Definition => Limiter.Definition;
    public Counter.Child Allowed { get; }
    public Counter.Child Rejected { get; }
    public bool IsConcurrency => Definition.Algorithm == RateLimitAlgorithm.Concurrency;
    /// <summary>A token quota: checked at cost 0 before forwarding, charged the response's tokens after it.</summary>
    public bool CountsTokens { get; init; }

    /// <summary>
    /// Writes the key into <paramref name="dest"/> (parts joined by 0x1F). Returns its length, or -1 when a part is
    /// missing from the request (the limiter's missingKey behaviour then applies), or -2 when it does not fit.
    /// </summary>
    public int BuildKey(Span<byte> dest, RequestHead request, ReadOnlySpan<byte> clientIp, ReadOnlySpan<byte> routeId,
        Security.ConsumerModel? consumer = null, Security.DeviceModel? device = null)
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
                    // a consumer: an API key's, or a token a consumer owns; a bare token subject has none
                    if (consumer is not { IsConsumer: true }) return -1;
                    if (!AppendText(dest, ref n, i, consumer.Id)) return -2;
                    continue;
                case KeyPartKind.ApiKey:
                    if (consumer is not { Scheme: Security.AuthScheme.ApiKey }) return -1;
                    if (!AppendText(dest, ref n, i, consumer.Id)) return -2;
                    continue;
                case KeyPartKind.Subject:
                    // a token's (issuer, subject), mapped to a consumer or not: "<issuer id>:<subject>"
                    if (consumer is not { Scheme: Security.AuthScheme.Jwt, SubjectKey.Length: > 0 }) return -1;
                    value = consumer.SubjectKey;
                    break;
                case KeyPartKind.Device:
                    // the allowlisted device of the connection's client certificate (mTLS)
                    if (device is null) return -1;
                    if (!AppendText(dest, ref n, i, device.Id)) return -2;
                    continue;
                default:
                    // claim:<name> from a validated token (the first value when the claim has several)
                    if (consumer is null || !consumer.Claims.TryGetValue(_parts[i].Text!, out var values) || values.Length == 0 || values[0].Length == 0)
                        return -1;
                    if (!AppendText(dest, ref n, i, values[0])) return -2;
                    continue;
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

    private static bool AppendText(Span<byte> dest, ref int n, int part, string text)
    {
        if (n + Encoding.UTF8.GetByteCount(text) + 1 > dest.Length) return false;
        if (part > 0) dest[n++] = 0x1F;
        n += Encoding.UTF8.GetBytes(text, dest[n..]); // no allocation
        return true;
    }
}
