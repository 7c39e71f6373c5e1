using System.Text;

namespace FastGate.LoadTest.Client;

/// <summary>The statuses a request may answer with and still count as success (e.g. 200 or 429).</summary>
public sealed class ExpectedStatus
{
    private readonly bool[] _ok = new bool[600];

    public ExpectedStatus(params int[] codes)
    {
        if (codes.Length == 0) throw new ArgumentException("at least one expected status");
        Codes = codes;
        foreach (int c in codes)
        {
            if (c is < 100 or > 599) throw new ArgumentOutOfRangeException(nameof(codes), c, "HTTP status 100..599");
            _ok[c] = true;
        }
    }

    public static ExpectedStatus Ok { get; } = new(200);

    public IReadOnlyList<int> Codes { get; }

    /// <summary>A 429 must carry Retry-After or RateLimit-* headers, else it counts as a "missing headers" error.</summary>
    public bool RequireRateLimitHeadersOn429 { get; init; }

    public bool Accepts(int status) => (uint)status < 600 && _ok[status];

    public override string ToString() => string.Join(" or ", Codes);
}

/// <summary>One kind of request a virtual user sends. Encoded once, before the run.</summary>
public sealed record RequestSpec(string Method, string Path)
{
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; } = [];
    public byte[]? Body { get; init; }
    public ExpectedStatus Expect { get; init; } = ExpectedStatus.Ok;

    /// <summary>Relative share among the virtual user's requests.</summary>
    public int Weight { get; init; } = 1;

    /// <summary>A short label for reports (defaults to method and path).</summary>
    public string? Name { get; init; }

    public string Label => Name ?? Method + " " + Path;

    public static RequestSpec Get(string path, params (string Name, string Value)[] headers)
        => new("GET", path) { Headers = ToList(headers) };

    public static RequestSpec Post(string path, string body, string contentType = "application/json", params (string Name, string Value)[] headers)
    {
        var list = ToList(headers);
        list.Add(new("Content-Type", contentType));
        return new("POST", path) { Headers = list, Body = Encoding.UTF8.GetBytes(body) };
    }

    private static List<KeyValuePair<string, string>> ToList((string Name, string Value)[] headers)
    {
        var list = new List<KeyValuePair<string, string>>(headers.Length + 1);
        foreach (var (n, v) in headers) list.Add(new(n, v));
        return list;
    }
}

/// <summary>A request ready for the wire.</summary>
public sealed class EncodedRequest
{
    public EncodedRequest(RequestSpec spec, byte[] bytes)
    {
        Spec = spec;
        Bytes = bytes;
        IsHead = spec.Method.Equals("HEAD", StringComparison.OrdinalIgnoreCase);
    }

    public RequestSpec Spec { get; }
    public byte[] Bytes { get; }
    public bool IsHead { get; }
    public ExpectedStatus Expect => Spec.Expect;
}

public static class RequestEncoder
{
    /// <summary>Encodes the request line, Host, the spec's headers, Content-Length when there is a body.</summary>
    public static EncodedRequest Encode(RequestSpec spec, string hostHeader)
    {
        if (spec.Method.Length == 0 || spec.Method.Any(c => c is ' ' or '\r' or '\n')) throw new ArgumentException("bad method: " + spec.Method);
        if (!spec.Path.StartsWith('/') && spec.Path != "*") throw new ArgumentException("path must start with '/': " + spec.Path);
        var sb = new StringBuilder(256);
        sb.Append(spec.Method).Append(' ').Append(spec.Path).Append(" HTTP/1.1\r\n");
        bool hasHost = spec.Headers.Any(h => h.Key.Equals("Host", StringComparison.OrdinalIgnoreCase));
        if (!hasHost) sb.Append("Host: ").Append(hostHeader).Append("\r\n");
        foreach (var (name, value) in spec.Headers)
        {
            if (name.AsSpan().IndexOfAny("\r\n:") >= 0 || value.AsSpan().IndexOfAny('\r', '\n') >= 0)
                throw new ArgumentException("header contains CR, LF or ':' in its name: " + name);
            sb.Append(name).Append(": ").Append(value).Append("\r\n");
        }
        if (spec.Body is { } body) sb.Append("Content-Length: ").Append(body.Length).Append("\r\n");
        sb.Append("\r\n");
        byte[] head = Encoding.Latin1.GetBytes(sb.ToString());
        if (spec.Body is null || spec.Body.Length == 0) return new EncodedRequest(spec, head);
        var all = new byte[head.Length + spec.Body.Length];
        head.CopyTo(all, 0);
        spec.Body.CopyTo(all, head.Length);
        return new EncodedRequest(spec, all);
    }
}
