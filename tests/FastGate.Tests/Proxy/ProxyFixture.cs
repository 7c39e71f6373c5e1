using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Proxy;

/// <summary>One demo upstream and one gateway in front of it, shared by a test class.</summary>
public sealed class ProxyFixture : IAsyncLifetime
{
    public DemoUpstreamServer Upstream { get; private set; } = null!;
    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Upstream = await DemoUpstreamServer.StartAsync();
        var routes = """
            { "id": "exact", "match": { "path": "/hello" }, "cluster": "backend" },
            { "id": "stripped", "match": { "pathPrefix": "/api" }, "cluster": "backend", "stripPrefix": true },
            { "id": "posts-only", "match": { "pathPrefix": "/echo", "methods": ["POST"] }, "cluster": "backend" },
            { "id": "vhost", "match": { "hosts": ["*.example.com"], "pathPrefix": "/" }, "cluster": "backend" },
            """;
        Gateway = await TestGateway.StartAsync(TestGateway.Config(Upstream.Address.ToString().TrimEnd('/'), routes,
            limits: "\"maxBodyBytes\": 104857600, \"headerTimeout\": \"1s\""));
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Upstream.DisposeAsync();
    }
}
