using System.Text;

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
    }

    public string PathString => Encoding.ASCII.GetString(this[Path]);
}
