namespace FastGate.Http;

/// <summary>Why a request (or an upstream response) was refused. Each value maps to one pre-encoded response.</summary>
public enum RejectReason : byte
{
    None = 0,
    // 400 Bad Request
    InvalidRequestLine,
    InvalidMethod,
    InvalidRequestTarget,
    BareLineFeed,
    InvalidHeaderName,
    WhitespaceBeforeColon,
    ObsoleteLineFolding,
    InvalidHeaderValue,
    MissingHost,
    MultipleHost,
    InvalidHost,
    ContentLengthWithTransferEncoding,
    InvalidContentLength,
    ConflictingContentLength,
    TransferEncodingNotChunkedLast,
    TransferEncodingInHttp10,
    InvalidChunkSize,
    InvalidChunkExtension,
    MissingChunkTerminator,
    InvalidTrailer,
    UnexpectedEndOfBody,
    /// <summary>The path holds an encoded '/' or '\' (%2F, %5C) and the listener's escapedSlashes is reject.</summary>
    EncodedSlash,
    /// <summary>A header name with '_' that reads as a protected name with '-' (underscoreHeaders: reject).</summary>
    UnderscoreHeader,
    /// <summary>A Host header with an empty value.</summary>
    EmptyHost,
    /// <summary>A chunk line (size and extensions) longer than the chunk-line bound.</summary>
    ChunkExtensionTooLong,
    // 408: the client is too slow after its head
    /// <summary>No request-body bytes for bodyIdleTimeout.</summary>
    RequestBodyTimeout,
    /// <summary>The request body arrived slower than minRequestBodyRate after its grace period.</summary>
    RequestBodyTooSlow,
    /// <summary>The client read the response slower than minResponseRate after its grace period (connection aborted).</summary>
    ResponseTooSlow,
    // 413, 414, 417, 431, 501, 505
    BodyTooLarge,
    RequestLineTooLong,
    ExpectationFailed,
    HeadersTooLarge,
    TooManyHeaders,
    UnknownTransferCoding,
    UnsupportedHttpVersion,
    // Gateway decisions
    NoRoute,
    PolicyDenied,
    AuthenticationRequired,
    RateLimited,
    ClientBlocked,
    CorsRejected,
    /// <summary>A bearer token was presented and refused (401, error="invalid_token").</summary>
    InvalidToken,
    /// <summary>A valid credential without a required scope or claim (403, error="insufficient_scope").</summary>
    InsufficientScope,
    /// <summary>The web application firewall blocked the request (its anomaly score reached the threshold, or a deny rule matched).</summary>
    WafBlocked,
    /// <summary>An AI route could not read or translate the request (400, OpenAI-style error body).</summary>
    AiRequestInvalid,
    // Upstream side (502/503/504)
    UpstreamConnectFailed,
    UpstreamConnectTimeout,
    UpstreamResponseTimeout,
    UpstreamMalformedResponse,
    UpstreamReset,
    UpstreamUnavailable,
    /// <summary>The route's total requestTimeout passed before the response head (504).</summary>
    RequestTimeout,
    /// <summary>The upstream broke the protocol: an unsolicited 101, too many 1xx heads, a body after a HEAD response.</summary>
    UpstreamProtocolViolation,
    UpstreamTlsFailed,
    /// <summary>The cluster's circuit breaker is open: too many requests in flight or waiting for a connection (503).</summary>
    CircuitOpen,
    /// <summary>Every target of an AI route failed (or was cooling down) before a response could start (502).</summary>
    AiProvidersFailed,
    /// <summary>The route's cluster speaks h2 ("protocol": "h2", gRPC) and the request came over HTTP/1.1 (505).</summary>
    Http2Required,
}

public static class RejectReasons
{
    public const int Count = (int)RejectReason.Http2Required + 1;

    public static int StatusCode(RejectReason reason) => reason switch
    {
        RejectReason.None => 200,
        RejectReason.BodyTooLarge => 413,
        RejectReason.RequestLineTooLong => 414,
        RejectReason.ExpectationFailed => 417,
        RejectReason.HeadersTooLarge or RejectReason.TooManyHeaders => 431,
        RejectReason.UnknownTransferCoding => 501,
        RejectReason.UnsupportedHttpVersion or RejectReason.Http2Required => 505,
        RejectReason.NoRoute => 404,
        RejectReason.PolicyDenied => 403,
        RejectReason.AuthenticationRequired => 401,
        RejectReason.RateLimited => 429,
        RejectReason.ClientBlocked => 403,
        RejectReason.CorsRejected => 403,
        RejectReason.InvalidToken => 401,
        RejectReason.InsufficientScope => 403,
        RejectReason.WafBlocked => 403,
        RejectReason.CircuitOpen => 503,
        RejectReason.AiProvidersFailed => 502,
        RejectReason.RequestBodyTimeout or RejectReason.RequestBodyTooSlow or RejectReason.ResponseTooSlow => 408,
        RejectReason.RequestTimeout => 504,
        RejectReason.UpstreamConnectFailed or RejectReason.UpstreamMalformedResponse or RejectReason.UpstreamReset or RejectReason.UpstreamTlsFailed
            or RejectReason.UpstreamProtocolViolation => 502,
        RejectReason.UpstreamUnavailable => 503,
        RejectReason.UpstreamConnectTimeout or RejectReason.UpstreamResponseTimeout => 504,
        _ => 400,
    };

    /// <summary>Stable snake_case name used as a metric label and in logs.</summary>
    public static string Name(RejectReason reason) => reason switch
    {
        RejectReason.None => "none",
        RejectReason.InvalidRequestLine => "invalid_request_line",
        RejectReason.InvalidMethod => "invalid_method",
        RejectReason.InvalidRequestTarget => "invalid_request_target",
        RejectReason.BareLineFeed => "bare_line_feed",
        RejectReason.InvalidHeaderName => "invalid_header_name",
        RejectReason.WhitespaceBeforeColon => "whitespace_before_colon",
        RejectReason.ObsoleteLineFolding => "obsolete_line_folding",
        RejectReason.InvalidHeaderValue => "invalid_header_value",
        RejectReason.MissingHost => "missing_host",
        RejectReason.MultipleHost => "multiple_host",
        RejectReason.InvalidHost => "invalid_host",
        RejectReason.ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
        RejectReason.InvalidContentLength => "invalid_content_length",
        RejectReason.ConflictingContentLength => "conflicting_content_length",
        RejectReason.TransferEncodingNotChunkedLast => "transfer_encoding_not_chunked_last",
        RejectReason.TransferEncodingInHttp10 => "transfer_encoding_in_http10",
        RejectReason.InvalidChunkSize => "invalid_chunk_size",
        RejectReason.InvalidChunkExtension => "invalid_chunk_extension",
        RejectReason.MissingChunkTerminator => "missing_chunk_terminator",
        RejectReason.InvalidTrailer => "invalid_trailer",
        RejectReason.UnexpectedEndOfBody => "unexpected_end_of_body",
        RejectReason.EncodedSlash => "encoded_slash",
        RejectReason.UnderscoreHeader => "underscore_header",
        RejectReason.EmptyHost => "empty_host",
        RejectReason.ChunkExtensionTooLong => "chunk_extension_too_long",
        RejectReason.RequestBodyTimeout => "request_body_timeout",
        RejectReason.RequestBodyTooSlow => "request_body_too_slow",
        RejectReason.ResponseTooSlow => "response_too_slow",
        RejectReason.BodyTooLarge => "body_too_large",
        RejectReason.RequestLineTooLong => "request_line_too_long",
        RejectReason.ExpectationFailed => "expectation_failed",
        RejectReason.HeadersTooLarge => "headers_too_large",
        RejectReason.TooManyHeaders => "too_many_headers",
        RejectReason.UnknownTransferCoding => "unknown_transfer_coding",
        RejectReason.UnsupportedHttpVersion => "unsupported_http_version",
        RejectReason.NoRoute => "no_route",
        RejectReason.PolicyDenied => "policy_deny",
        RejectReason.AuthenticationRequired => "authentication_required",
        RejectReason.RateLimited => "rate_limited",
        RejectReason.ClientBlocked => "client_blocked",
        RejectReason.CorsRejected => "cors_rejected",
        RejectReason.InvalidToken => "invalid_token",
        RejectReason.InsufficientScope => "insufficient_scope",
        RejectReason.WafBlocked => "waf_blocked",
        RejectReason.AiRequestInvalid => "ai_request_invalid",
        RejectReason.UpstreamConnectFailed => "upstream_connect_failed",
        RejectReason.UpstreamConnectTimeout => "upstream_connect_timeout",
        RejectReason.UpstreamResponseTimeout => "upstream_response_timeout",
        RejectReason.UpstreamMalformedResponse => "upstream_malformed_response",
        RejectReason.UpstreamReset => "upstream_reset",
        RejectReason.UpstreamUnavailable => "upstream_unavailable",
        RejectReason.RequestTimeout => "request_timeout",
        RejectReason.UpstreamProtocolViolation => "upstream_protocol_violation",
        RejectReason.UpstreamTlsFailed => "upstream_tls_failed",
        RejectReason.CircuitOpen => "circuit_open",
        RejectReason.AiProvidersFailed => "ai_providers_failed",
        RejectReason.Http2Required => "http2_required",
        _ => "unknown",
    };
}
