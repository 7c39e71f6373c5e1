namespace FastGate.Http;

/// <summary>A parsed upstream response head. One per connection, reused.</summary>
public sealed class ResponseHead : MessageHead
{
    public int StatusCode { get; internal set; }
    public ByteRange Reason { get; internal set; }
    public bool HasRequestId { get; internal set; }

    public bool IsInformational => StatusCode is >= 100 and < 200;

    public override void Reset()
    {
        base.Reset();
        StatusCode = 0;
        Reason = default;
        HasRequestId = false;
    }
}
