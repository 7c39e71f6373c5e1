using System.Net;
using System.Net.Http;
using System.Net.Security;
using FastGate.Configuration;

namespace FastGate.Proxy;

/// <summary>
/// The upstream leg of the HTTP/2 path (Proxy/Http2Gateway.cs): one SocketsHttpHandler per cluster and settings, kept
/// across reloads by <see cref="UpstreamPoolStore"/>. It speaks HTTP/1.1 to an "http1" cluster and HTTP/2 (h2c on
/// http://, h2 by ALPN on https://, exactly: no downgrade) to an "h2" cluster; https:// destinations are verified
/// with the cluster's <see cref="UpstreamTlsModel"/> (CA bundle, SNI, insecureSkipVerify) as on the HTTP/1.1 path.
/// Connections per destination are bounded by maxConnectionsPerDestination (for h2: connections, each with the
/// server's stream limit), idle ones close after idleConnectionTimeout, and connects time out after
/// upstreamConnectTimeout. It never follows redirects, never decompresses, keeps no cookies and uses no proxy.
/// </summary>
internal sealed class Http2Upstream : IDisposable
{
    private readonly SocketsHttpHandler _handler;

    public Http2Upstream(ClusterConfig cluster, TimeSpan connectTimeout, UpstreamTlsModel? tls)
    {
        Version = cluster.Protocol == UpstreamProtocol.H2 ? HttpVersion.Version20 : HttpVersion.Version11;
        _handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = connectTimeout,
            PooledConnectionIdleTimeout = cluster.IdleConnectionTimeout,
            MaxConnectionsPerServer = cluster.MaxConnectionsPerDestination,
            // a busy h2 connection (the server's stream limit reached) opens another, up to the bound above
            EnableMultipleHttp2Connections = true,
            MaxResponseHeadersLength = 64, // KB, as the HTTP/1.1 path's response head bound
            ActivityHeadersPropagator = null, // the gateway writes traceparent itself
        };
        if (tls is not null)
        {
            var options = tls.CreateOptions(new TlsCheck());
            options.ApplicationProtocols = null; // SocketsHttpHandler offers what the version needs
            options.TargetHost = null; // the destination host (a configured sni goes on the request's Host below)
            _handler.SslOptions = options;
        }
        Invoker = new HttpMessageInvoker(_handler, disposeHandler: false);
    }

    public Version Version { get; }
    /// <summary>The policy that keeps the version exact: an h2 cluster never falls back to HTTP/1.1.</summary>
    public HttpVersionPolicy VersionPolicy => HttpVersionPolicy.RequestVersionExact;
    public HttpMessageInvoker Invoker { get; }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Uri> _bases = new(StringComparer.Ordinal);

    /// <summary>The destination's address as a Uri, parsed once.</summary>
    public Uri BaseUri(DestinationModel destination) => _bases.GetOrAdd(destination.Address, static a => new Uri(a));

    public void Dispose()
    {
        Invoker.Dispose();
        _handler.Dispose();
    }
}
