using System.Net;
using System.Text;
using FastGate.Proxy;
using FastGate.Security;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace FastGate.Hosting;

/// <summary>
/// Connection middleware of a listener with "http2": an HTTP/2 connection (ALPN "h2" after TLS, or the client
/// preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" on a plain listener: h2c with prior knowledge) goes on to Kestrel's
/// HTTP/2 and from there to <see cref="Http2Gateway"/>; every other connection goes to the HTTP/1.1 loop
/// (<see cref="GatewayRuntime.OnConnectionAsync"/>), untouched: the bytes looked at are left in the pipe. On a plain
/// listener the first bytes are awaited for at most the keep-alive timeout (the loop's own idle bound).
/// </summary>
internal sealed class Http2Dispatch(ConnectionDelegate http2, GatewayRuntime runtime)
{
    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    public async Task OnConnectionAsync(ConnectionContext context)
    {
        bool h2;
        if (context.Features.Get<Microsoft.AspNetCore.Server.Kestrel.Core.Features.ITlsApplicationProtocolFeature>() is { } alpn) h2 = alpn.ApplicationProtocol.Span.SequenceEqual("h2"u8);
        else
        {
            var seen = await PeekPrefaceAsync(context).ConfigureAwait(false);
            if (seen is null) return; // closed or silent: nothing to serve
            h2 = seen.Value;
        }
        if (!h2)
        {
            await runtime.OnConnectionAsync(context).ConfigureAwait(false);
            return;
        }
        var remote = context.RemoteEndPoint as IPEndPoint;
        var tls = context.Features.Get<ITlsConnectionFeature>();
        context.Features.Set(new Http2ConnectionInfo(
            Encoding.ASCII.GetBytes(remote is not null ? remote.Address.ToString() : "unknown"),
            Policy.ClientAddress.From(remote?.Address ?? IPAddress.IPv6None),
            isTls: tls is not null,
            tls?.ClientCertificate is { } certificate ? ClientCertificateFingerprints.From(certificate) : null));
        await http2(context).ConfigureAwait(false);
    }

    private static bool StartsLikePreface(in System.Buffers.ReadOnlySequence<byte> start)
    {
        Span<byte> bytes = stackalloc byte[24];
        System.Buffers.BuffersExtensions.CopyTo(start, bytes);
        return bytes[..(int)start.Length].SequenceEqual(Preface[..(int)start.Length]);
    }

    /// <summary>True: the HTTP/2 preface; false: anything else (HTTP/1.1); null: closed before a byte, or silent.</summary>
    private async Task<bool?> PeekPrefaceAsync(ConnectionContext context)
    {
        var input = context.Transport.Input;
        using var timeout = new CancellationTokenSource(runtime.Current.Config.Limits.KeepAliveTimeout);
        while (true)
        {
            System.IO.Pipelines.ReadResult result;
            try
            {
                result = await input.ReadAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return null;
            }
            var buffer = result.Buffer;
            int n = (int)Math.Min(buffer.Length, Preface.Length);
            bool matches = StartsLikePreface(buffer.Slice(0, n));
            if (!matches || n == Preface.Length)
            {
                input.AdvanceTo(buffer.Start); // nothing consumed or examined: the next reader sees it all
                return matches;
            }
            if (result.IsCompleted || result.IsCanceled)
            {
                input.AdvanceTo(buffer.Start);
                return n == 0 ? null : false;
            }
            input.AdvanceTo(buffer.Start, buffer.End); // a prefix of the preface so far: wait for more
        }
    }
}
