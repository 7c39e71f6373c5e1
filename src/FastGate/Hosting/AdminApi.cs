using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Http;
using FastGate.Proxy;
using Microsoft.AspNetCore.Http;

namespace FastGate.Hosting;

/// <summary>
/// The admin listener: /healthz, /readyz, /metrics, and the /admin/* API (config, reload, routes, explain,
/// validate). /admin/* requires the configured bearer token when one is set (always when not on loopback). Without a
/// token, every request must name the admin API by a loopback Host (localhost, 127.0.0.1, [::1], any port): a web
/// page whose DNS name was rebound to 127.0.0.1 sends its own name, and gets 403.
/// </summary>
internal sealed class AdminApi
{
    private readonly GatewayRuntime _runtime;
    private readonly ConfigReloader? _reloader;
    private readonly byte[]? _tokenHash;

    public AdminApi(GatewayRuntime runtime, ConfigReloader? reloader, string? token)
    {
        _runtime = runtime;
        _reloader = reloader;
        _tokenHash = string.IsNullOrEmpty(token) ? null : SHA256.HashData(Encoding.UTF8.GetBytes(token));
    }

    public async Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value ?? "/";
        var method = context.Request.Method;
        var response = context.Response;
        if (_tokenHash is null && !IsLoopbackHost(context.Request.Headers.Host.ToString()))
        {
            await Json(response, 403, w => w.WriteString("error", "without an admin token the admin API answers only requests to a loopback host name (localhost, 127.0.0.1 or [::1])"));
            return;
        }
        switch (path)
        {
            case "/healthz":
                await Text(response, 200, "ok\n");
                return;
            case "/readyz":
                await Text(response, _runtime.IsDraining ? 503 : 200, _runtime.IsDraining ? "draining\n" : "ready\n");
                return;
            case "/metrics":
                response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
                // this gateway's own metrics, then the process-wide ones (process, .NET runtime, prometheus-net)
                await _runtime.Metrics.Registry.CollectAndExportAsTextAsync(response.Body, context.RequestAborted);
                await Observability.GatewayMetrics.ProcessRegistry.CollectAndExportAsTextAsync(response.Body, context.RequestAborted);
                return;
        }
        if (!path.StartsWith("/admin/", StringComparison.Ordinal))
        {
            await Text(response, 404, "not found\n");
            return;
        }
        if (!Authorized(context.Request))
        {
            response.Headers.WWWAuthenticate = "Bearer realm=\"fastgate-admin\"";
            await Json(response, 401, w => w.WriteString("error", "a valid admin bearer token is required"));
            return;
        }
        switch (path, method)
        {
            case ("/admin/config", "GET"):
                await Json(response, 200, WriteConfig);
                return;
            case ("/admin/reload", "POST"):
                if (_reloader is null)
                {
                    await Json(response, 409, w => w.WriteString("error", "the gateway was not started from a file; nothing to reload"));
                    return;
                }
                var result = await _reloader.ReloadAsync("admin");
                await Json(response, result.Success ? 200 : 422, w => WriteReload(w, result));
                return;
            case ("/admin/cluster", "GET"):
                if (_runtime.Observability.ClusterNode is not { } node)
                {
                    await Json(response, 404, w => w.WriteString("error", "cluster mode is off (no \"redis\" in the config)"));
                    return;
                }
                await node.HeartbeatAsync(); // a fresh read of the member list (skipped when one is under way)
                await Json(response, 200, node.WriteStatus);
                return;
            case ("/admin/routes", "GET"):
                await Json(response, 200, WriteRoutes);
                return;
            case ("/admin/clusters", "GET"):
                await Json(response, 200, w => Traffic.TrafficAdmin.WriteClusters(w, _runtime));
                return;
            case ("/admin/usage", "GET"):
                // AI routes' usage per consumer, model and provider (ids only: no key is ever held in a series)
                await Json(response, 200, Ai.AiMetrics.For(_runtime.Metrics).Usage.Write);
                return;
            case ("/admin/waf", "GET"):
                await Json(response, 200, w => Waf.WafAdmin.Write(w, _runtime.Current));
                return;
            case ("/admin/explain", "GET"):
                await ExplainAsync(context);
                return;
            case ("/admin/validate", "POST"):
                using (var reader = new StreamReader(context.Request.Body, Encoding.UTF8))
                {
                    var text = await reader.ReadToEndAsync(context.RequestAborted);
                    // relative paths resolve against the running config's directory, and only files under it are
                    // opened (none when the gateway was started from text): see ConfigFileAccess
                    var dir = _reloader is null ? null : Path.GetDirectoryName(_reloader.SourcePath);
                    var loaded = ConfigLoader.Load(text, dir, dir is null ? ConfigFileAccess.None : ConfigFileAccess.Under(dir));
                    await Json(response, loaded.IsValid ? 200 : 422, w =>
                    {
                        w.WriteBoolean("valid", loaded.IsValid);
                        WriteErrors(w, loaded.Errors);
                    });
                }
                return;
            default:
                if (await Observability.ObservabilityAdmin.TryHandleAsync(context, _runtime.Observability)) return; // alerts, blocks
                await Json(response, path is "/admin/config" or "/admin/reload" or "/admin/routes" or "/admin/clusters" or "/admin/explain" or "/admin/validate" or "/admin/usage" ? 405 : 404,
                    w => w.WriteString("error", $"{method} {path} is not an admin endpoint"));
                return;
        }
    }

    /// <summary>localhost, 127.0.0.1 or [::1], each with an optional port (ASCII case-insensitive).</summary>
    internal static bool IsLoopbackHost(string host)
    {
        var name = host.AsSpan();
        int colon = name.LastIndexOf(':');
        if (colon >= 0 && (name[0] != '[' || name[colon - 1] == ']'))
        {
            var port = name[(colon + 1)..];
            if (port.Length == 0 || port.Length > 5) return false;
            foreach (char c in port) if (!char.IsAsciiDigit(c)) return false;
            name = name[..colon];
        }
        return name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || name.SequenceEqual("127.0.0.1") || name.SequenceEqual("[::1]");
    }

    private bool Authorized(HttpRequest request)
    {
        if (_tokenHash is null) return true;
        var header = request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.Ordinal)) return false;
        var presented = SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim()));
        return CryptographicOperations.FixedTimeEquals(presented, _tokenHash);
    }

    private void WriteConfig(Utf8JsonWriter w)
    {
        var s = _runtime.Current;
        w.WriteString("version", s.Version);
        w.WriteString("loadedAt", s.LoadedAt);
        w.WriteString("source", _reloader?.SourcePath);
        w.WriteNumber("routes", s.Routes.Count);
        w.WriteNumber("clusters", s.Clusters.Count);
        if (_reloader?.LastReload is { } last)
        {
            w.WritePropertyName("lastReload");
            w.WriteStartObject();
            WriteReload(w, last);
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("lastReload");
        }
    }

    private static void WriteReload(Utf8JsonWriter w, ReloadResult r)
    {
        w.WriteString("result", r.Success ? "success" : "failure");
        w.WriteString("trigger", r.Trigger);
        w.WriteString("at", r.At);
        w.WriteString("version", r.Version);
        WriteErrors(w, r.Errors);
    }

    private static void WriteErrors(Utf8JsonWriter w, IReadOnlyList<ConfigError> errors)
    {
        w.WritePropertyName("errors");
        w.WriteStartArray();
        foreach (var e in errors)
        {
            w.WriteStartObject();
            w.WriteString("path", e.Path);
            w.WriteString("message", e.Message);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private void WriteRoutes(Utf8JsonWriter w)
    {
        var s = _runtime.Current;
        w.WriteString("version", s.Version);
        w.WritePropertyName("routes");
        w.WriteStartArray();
        foreach (var r in s.Config.Routes)
        {
            w.WriteStartObject();
            w.WriteString("id", r.Id);
            w.WriteString("cluster", r.Cluster);
            w.WriteString("hosts", string.Join(",", r.Match.Hosts.DefaultIfEmpty("*")));
            if (r.Match.Path is not null) w.WriteString("path", r.Match.Path);
            else w.WriteString("pathPrefix", r.Match.PathPrefix ?? "/");
            w.WriteString("methods", string.Join(",", r.Match.Methods.DefaultIfEmpty("*")));
            if (r.StripPrefix is not null) w.WriteString("stripPrefix", r.StripPrefix);
            if (r.Auth.Count > 0) w.WriteString("auth", string.Join(",", r.Auth));
            if (r.UpstreamCredential is { } credential)
            {
                // where the injected key comes from, never the key
                w.WriteString("upstreamCredentialHeader", credential.Resolve().Header);
                w.WriteString("upstreamCredentialEnv", credential.Env);
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WritePropertyName("clusters");
        w.WriteStartArray();
        foreach (var c in s.Clusters)
        {
            w.WriteStartObject();
            w.WriteString("id", c.Id);
            w.WritePropertyName("destinations");
            w.WriteStartArray();
            foreach (var d in c.Destinations)
            {
                w.WriteStartObject();
                w.WriteString("address", d.Address);
                w.WriteNumber("openConnections", d.Pool.OpenConnections);
                w.WriteNumber("idleConnections", d.Pool.IdleConnections);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>
    /// Builds the request the query describes, parses it with the gateway's own parser and reports what the
    /// snapshot in force would do with it.
    /// </summary>
    private async Task ExplainAsync(HttpContext context)
    {
        var q = context.Request.Query;
        string method = q["method"].FirstOrDefault() ?? "GET";
        string host = q["host"].FirstOrDefault() ?? "localhost";
        string path = q["path"].FirstOrDefault() ?? "/";
        string ip = q["ip"].FirstOrDefault() ?? "127.0.0.1";
        if (!IPAddress.TryParse(ip, out var address))
        {
            await Json(context.Response, 400, w => w.WriteString("error", $"'{ip}' is not an IP address"));
            return;
        }
        var sb = new StringBuilder().Append(method).Append(' ').Append(path).Append(" HTTP/1.1\r\nHost: ").Append(host).Append("\r\n");
        foreach (var h in q["header"]) sb.Append(h).Append("\r\n");
        sb.Append("\r\n");
        var snapshot = _runtime.Current;
        using var head = new RequestHead();
        var status = HttpRequestParser.TryParse(new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(sb.ToString())), snapshot.Limits, head, out _, out var reason);
        // a device is named by the query (device=<id>), as if its certificate had been presented
        var device = q["device"].FirstOrDefault() is { } deviceId ? snapshot.Config.Devices.FirstOrDefault(d => d.Id == deviceId) : null;
        var deviceModel = device is null ? null : new Security.DeviceModel { Id = device.Id, ForwardedHeaderLine = [] };
        // the request path's own admission decision (Pipeline/Admission), with the same credentials checks: an API
        // key, else a bearer token (validated, keys fetched if needed)
        var exchange = new Pipeline.Exchange(head, new Policy.PolicyResult()) { DryRun = true }; // limits named, not consumed
        var verdict = Pipeline.AdmissionVerdict.Reject;
        if (status == ParseStatus.Complete)
        {
            exchange.Begin(Encoding.ASCII.GetBytes(address.ToString()), Policy.ClientAddress.From(address), deviceModel);
            verdict = Pipeline.Admission.Decide(snapshot, exchange, _runtime.Observability);
            if (verdict == Pipeline.AdmissionVerdict.NeedsToken)
            {
                exchange.CompleteToken(await exchange.PendingToken);
                verdict = Pipeline.Admission.Decide(snapshot, exchange, _runtime.Observability);
            }
        }
        await Json(context.Response, 200, w =>
        {
            w.WriteString("version", snapshot.Version);
            w.WriteString("request", $"{method} {path} host={host} ip={address}");
            if (status != ParseStatus.Complete)
            {
                w.WriteString("decision", "reject");
                w.WriteNumber("status", RejectReasons.StatusCode(reason));
                w.WriteString("reason", status == ParseStatus.Error ? RejectReasons.Name(reason) : "incomplete request");
                return;
            }
            WriteDecision(w, snapshot, exchange, verdict);
        });
    }

    /// <summary>What <see cref="Pipeline.Admission.Decide"/> said, with the identities and every rule's match.</summary>
    private static void WriteDecision(Utf8JsonWriter w, GatewaySnapshot snapshot, Pipeline.Exchange x, Pipeline.AdmissionVerdict verdict)
    {
        var route = x.Route;
        w.WriteString("route", route?.Id);
        w.WriteString("cluster", route?.Cluster.Id);
        w.WriteString("client", Encoding.ASCII.GetString(x.ClientIp));
        // as the request path sees it: a consumer only when an API key or a consumer-owned token says so; a token's
        // identity is its subject (issuer id and subject claim)
        var consumer = x.Consumer;
        w.WriteString("consumer", consumer is { IsConsumer: true } ? consumer.Id : null);
        if (consumer is { Scheme: Security.AuthScheme.Jwt, Subject: { } subject })
        {
            w.WriteStartObject("subject");
            w.WriteString("issuer", snapshot.Config.JwtIssuers[consumer.IssuerIndex].Id);
            w.WriteString("subject", subject);
            w.WriteEndObject();
        }
        else w.WriteNull("subject");
        w.WriteString("device", x.Device?.Id);
        // every rule with whether its match held (a direct check of each rule, beside the index the decision used)
        var rules = snapshot.Policy.Explain(new Policy.RequestFacts(x.Request, x.ClientAddress, route?.Order ?? -1, consumer, x.Device), new Policy.PolicyResult());
        w.WritePropertyName("rules");
        w.WriteStartArray();
        foreach (var r in rules)
        {
            w.WriteStartObject();
            w.WriteString("id", r.RuleId);
            w.WriteBoolean("matched", r.Matched);
            w.WriteString("mode", r.Mode == PolicyMode.Report ? "report" : "enforce");
            w.WriteBoolean("deciding", r.Deciding);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        switch (verdict)
        {
            case Pipeline.AdmissionVerdict.PolicyReply:
                var rule = x.Policy.DecidingRule >= 0 ? snapshot.Policy.Rules[x.Policy.DecidingRule] : null;
                w.WriteString("decision", x.Policy.Verdict == Policy.PolicyVerdict.Deny ? "deny" : "respond");
                w.WriteNumber("status", rule?.Status ?? 403);
                w.WriteString("rule", rule?.Id ?? "defaultAction");
                return;
            case Pipeline.AdmissionVerdict.Preflight:
                w.WriteString("decision", "preflight");
                w.WriteNumber("status", x.CorsAllowed ? 204 : route!.Cors!.PreflightRejectStatus);
                if (!x.CorsAllowed) w.WriteString("reason", RejectReasons.Name(RejectReason.CorsRejected));
                return;
            case Pipeline.AdmissionVerdict.Reject:
                w.WriteString("decision", "reject");
                w.WriteNumber("status", RejectReasons.StatusCode(x.Reason));
                w.WriteString("reason", RejectReasons.Name(x.Reason));
                return;
            default:
                w.WriteString("decision", "forward");
                w.WriteString("forwardCluster", x.Cluster?.Id);
                var limiters = new List<string>();
                foreach (var l in route!.Limiters) limiters.Add(l.Definition.Id);
                foreach (int i in x.Policy.Matched) foreach (var l in snapshot.RuleLimiters[i]) limiters.Add(l.Definition.Id);
                w.WritePropertyName("rateLimits"); // checked next on the request path (not consumed by explain)
                w.WriteStartArray();
                foreach (var id in limiters) w.WriteStringValue(id);
                w.WriteEndArray();
                return;
        }
    }

    private static async Task Text(HttpResponse response, int status, string text)
    {
        response.StatusCode = status;
        response.ContentType = "text/plain";
        await response.WriteAsync(text);
    }

    private static async Task Json(HttpResponse response, int status, Action<Utf8JsonWriter> body)
    {
        response.StatusCode = status;
        response.ContentType = "application/json";
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        await response.Body.WriteAsync(buffer.WrittenMemory);
    }
}
