using System.Globalization;
using System.Text;

namespace FastGate.Waf;

// The response phases (3: the upstream's status line and headers; 4: its body), run on the same transaction after
// the request's phases, so TX (the anomaly scores, the paranoia level) carries over as it does in ModSecurity.
public sealed partial class WafTransaction
{
    private static readonly int IdResponseStatus = WafCollections.Id("RESPONSE_STATUS"), IdResponseProtocol = WafCollections.Id("RESPONSE_PROTOCOL"),
        IdResponseHeaders = WafCollections.Id("RESPONSE_HEADERS"), IdResponseHeadersNames = WafCollections.Id("RESPONSE_HEADERS_NAMES"),
        IdResponseContentType = WafCollections.Id("RESPONSE_CONTENT_TYPE"), IdResponseContentLength = WafCollections.Id("RESPONSE_CONTENT_LENGTH"),
        IdResponseBody = WafCollections.Id("RESPONSE_BODY");

    /// <summary>True once phase 3 ran on this request (a transaction runs each phase once).</summary>
    public bool ResponseInspected { get; private set; }

    /// <summary>
    /// Phase 3 on the response head: RESPONSE_STATUS, RESPONSE_PROTOCOL, RESPONSE_HEADERS(_NAMES), RESPONSE_CONTENT_TYPE
    /// and RESPONSE_CONTENT_LENGTH. True when the response is to be refused (a rule denied; the caller applies the mode).
    /// Header values are the bytes as Latin-1 chars, as for the request.
    /// </summary>
    public bool EvaluateResponseHeaders(int status, string protocol, IReadOnlyList<(string Name, string Value)> headers)
    {
        ResponseInspected = true;
        if (Interruption is not null || Allowed) return Interruption is not null;
        AddKeyed(IdResponseStatus, "", "RESPONSE_STATUS", status.ToString(CultureInfo.InvariantCulture));
        AddKeyed(IdResponseProtocol, "", "RESPONSE_PROTOCOL", protocol);
        for (int i = 0; i < headers.Count; i++)
        {
            var (name, value) = headers[i];
            var key = name.ToLowerInvariant();
            AddKeyed(IdResponseHeaders, key, "RESPONSE_HEADERS:" + name, value);
            AddKeyed(IdResponseHeadersNames, key, "RESPONSE_HEADERS_NAMES:" + name, name);
            if (key == "content-type") AddKeyed(IdResponseContentType, "", "RESPONSE_CONTENT_TYPE", value);
            else if (key == "content-length") AddKeyed(IdResponseContentLength, "", "RESPONSE_CONTENT_LENGTH", value);
        }
        RunPhase(3);
        return Interruption is not null;
    }

    /// <summary>
    /// Phase 4, with RESPONSE_BODY when the body was read (<paramref name="body"/> null: not inspected — a type not
    /// listed, or no body — and phase 4 runs without it, as ModSecurity's does). True when the response is to be refused.
    /// </summary>
    public bool EvaluateResponseBody(ReadOnlySpan<byte> body, bool hasBody)
    {
        if (Interruption is not null || Allowed) return Interruption is not null;
        if (hasBody) AddKeyed(IdResponseBody, "", "RESPONSE_BODY", Encoding.Latin1.GetString(body));
        RunPhase(4);
        return Interruption is not null;
    }
}
