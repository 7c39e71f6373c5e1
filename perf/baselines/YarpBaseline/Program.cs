// YARP baseline for `make compare`: proxies every request to one upstream.
//
// Usage: YarpBaseline [upstream-url] [port]
//   upstream-url  default $UPSTREAM, else http://127.0.0.1:9001
//   port          default $PORT, else 8082 (listens on 127.0.0.1 only)
// GET /__baseline/metrics answers dotnet_gc_allocated_bytes_total (the process's allocated bytes).
using System.Net;
using Yarp.ReverseProxy.Configuration;

var upstream = args.Length > 0 ? args[0] : Environment.GetEnvironmentVariable("UPSTREAM") ?? "http://127.0.0.1:9001";
var portText = args.Length > 1 ? args[1] : Environment.GetEnvironmentVariable("PORT") ?? "8082";
if (!Uri.TryCreate(upstream, UriKind.Absolute, out _) || !int.TryParse(portText, out var port) || port is < 1 or > 65535)
{
    Console.Error.WriteLine("usage: YarpBaseline [upstream-url] [port]");
    return 2;
}

// Command-line arguments are ours, not configuration keys: give the host none.
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.AddServerHeader = false;
    kestrel.Listen(IPAddress.Loopback, port);
});

var routes = new[]
{
    new RouteConfig { RouteId = "all", ClusterId = "backend", Match = new RouteMatch { Path = "{**catch-all}" } },
};
var clusters = new[]
{
    new ClusterConfig
    {
        ClusterId = "backend",
        Destinations = new Dictionary<string, DestinationConfig> { ["upstream"] = new() { Address = upstream } },
        // YARP's SocketsHttpHandler pools keep-alive connections to the upstream; say so explicitly.
        HttpClient = new HttpClientConfig { MaxConnectionsPerServer = int.MaxValue, EnableMultipleHttp2Connections = false },
    },
};
builder.Services.AddReverseProxy().LoadFromMemory(routes, clusters);

var app = builder.Build();
// Lets `make compare` measure YARP's bytes per request the same way as FastGate's (Prometheus text).
// A literal route wins over the proxy's catch-all; the load only requests "/".
app.MapGet("/__baseline/metrics", () => Results.Text(
    "# TYPE dotnet_gc_allocated_bytes_total counter\ndotnet_gc_allocated_bytes_total " +
    GC.GetTotalAllocatedBytes(precise: true).ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n",
    "text/plain; version=0.0.4"));
app.MapReverseProxy();
app.Run();
return 0;
