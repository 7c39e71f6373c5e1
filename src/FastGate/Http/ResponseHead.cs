namespace FastGate.Http;

/// <summary>A parsed upstream response head. One per connection, reused.</summary>
public sealed class ResponseHead : MessageHead
{
    public int StatusCode { get; internal set; }
    public ByteRange Reason { get; internal set; }
    public bool HasRequestId { get; internal set; }
    /// <summary>
    /// The head announced a body that the request method or status rules out (HEAD or 204 with a Content-Length or
    /// Transfer-Encoding, 304 with Transfer-Encoding): an upstream that sends it anyway would have it read as the next
    /// response on the connection, so the connection is not reused.
    /// </summary>
    public bool AnnouncedBodyIgnored { get; internal set; }

    public bool IsInformational => StatusCode is >= 100 and < 200;

    public override void Reset()
    {
        base.Reset();
        StatusCode = 0;
        Reason = default;
        HasRequestId = false;
        AnnouncedBodyIgnored = false;
    }
}
