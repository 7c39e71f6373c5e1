
namespace FastGate.Http;

public enum HttpMethod : byte { Other, Get, Head, Post, Put, Delete, Options, Patch, Trace, Connect }

/// <summary>A parsed request head. One per connection, reused for every request on it.</summary>
public sealed class RequestHead : MessageHead
{
    public HttpMethod Method { get; internal set; }
    public ByteRange MethodRange { get; internal set; }
    /// <summary>The request target as sent.</summary>
    public ByteRange Target { get; internal set; }
    /// <summary>The path of the target (origin-form, or the path part of an absolute-form target).</summary>
    public ByteRange Path { get; internal set; }
    /// <summary>The query including its leading '?', or empty.</summary>
    public ByteRange Query { get; internal set; }
    public bool IsAsteriskForm { get; internal set; }
    public bool IsAbsoluteForm { get; internal set; }
    /// <summary>The authority the request is for: the Host header, or the authority of an absolute-form target.</summary>
    public ByteRange Host { get; internal set; }
    public bool HasHost { get; internal set; }
    public bool ExpectContinue { get; internal set; }
    public ByteRange RequestId { get; internal set; }
    public ByteRange Upgrade { get; internal set; }
    internal int HostCount { get; set; }

    // ---- the canonical view (RequestCanonicalizer): what routing, policy, auth and the forwarded head all use ----
    private byte[] _canonical = [];
    private ByteRange _canonicalPath, _canonicalAuthority;
    private bool _pathCopied, _authorityCopied;
    private int _canonicalHostLength;

    /// <summary>
    /// The path decided on and forwarded: unreserved escapes decoded, other escapes in upper case, repeated '/'
    /// merged ("/" for an absolute-form target without a path). The bytes as sent when they are canonical already.
    /// </summary>
    public ReadOnlySpan<byte> CanonicalPath =>
        _pathCopied ? _canonical.AsSpan(_canonicalPath.Start, _canonicalPath.Length)
        : _canonicalPath.IsEmpty ? "/"u8 : this[_canonicalPath];

    /// <summary>The host without port, in lower case, without a trailing dot: what routes and rules match.</summary>
    public ReadOnlySpan<byte> CanonicalHost => CanonicalAuthority[.._canonicalHostLength];

    /// <summary><see cref="CanonicalHost"/> with the port as sent: forwarded with preserveHost and as X-Forwarded-Host.</summary>
    public ReadOnlySpan<byte> CanonicalAuthority =>
        _authorityCopied ? _canonical.AsSpan(_canonicalAuthority.Start, _canonicalAuthority.Length) : this[_canonicalAuthority];

    /// <summary>True when the path was rewritten to its canonical form (it then differs from the bytes sent).</summary>
    public bool PathWasNormalized => _pathCopied;

    /// <summary>A scratch area after the head for the canonical bytes (never longer than what they replace).</summary>
    internal Span<byte> CanonicalScratch(int size)
    {
        if (_canonical.Length < size) _canonical = new byte[Math.Max(size, 256)];
        return _canonical;
    }

    internal void SetCanonicalPath(ByteRange range, bool copied)
    {
        _canonicalPath = range;
        _pathCopied = copied;
    }

    internal void SetCanonicalAuthority(ByteRange range, bool copied, int hostLength)
    {
        _canonicalAuthority = range;
        _authorityCopied = copied;
        _canonicalHostLength = hostLength;
    }

    /// <summary>True when the connection must close after this request's response (RFC 9112 9.3).</summary>
    public bool WantsClose => ConnectionClose || (!IsHttp11 && !ConnectionKeepAlive);

    public bool HasBody => Framing == BodyFraming.Chunked || (Framing == BodyFraming.ContentLength && ContentLength > 0);

    public bool IsUpgrade => ConnectionUpgrade && !Upgrade.IsEmpty;

    public override void Reset()
    {
        base.Reset();
        Method = HttpMethod.Other;
        MethodRange = Target = Path = Query = Host = RequestId = Upgrade = default;
        IsAsteriskForm = IsAbsoluteForm = HasHost = ExpectContinue = false;
        HostCount = 0;
        _canonicalPath = _canonicalAuthority = default;
        _pathCopied = _authorityCopied = false;
        _canonicalHostLength = 0;
    }
}
