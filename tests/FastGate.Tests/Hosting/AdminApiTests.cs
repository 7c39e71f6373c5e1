using System.Net;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using FastGate.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

public class AdminApiTests
{
    private static async Task<(DemoUpstreamServer, TestGateway, string)> StartAsync(string adminExtra = "")
    {
        var upstream = await DemoUpstreamServer.StartAsync();
        var dir = Directory.CreateTempSubdirectory("fastgate-admin-");
        var path = Path.Combine(dir.FullName, "fastgate.json");
        File.WriteAllText(path, TestGateway.Config(upstream.Address.ToString().TrimEnd('/'))
            .Replace("\"admin\": { \"address\": \"127.0.0.1:0\" }", $"\"admin\": {{ \"address\": \"127.0.0.1:0\" {adminExtra} }}"));
        return (upstream, await TestGateway.StartFromFileAsync(path), path);
    }

    [Fact]
    public async Task Config_Routes_Explain_Validate_Reload_AnswerJson()
    {
        var (upstream, gateway, path) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        using var admin = gateway.CreateAdminClient();

        var config = JsonDocument.Parse(await admin.GetStringAsync("/admin/config")).RootElement;
        Assert.Equal(gateway.Host.Runtime.Current.Version, config.GetProperty("version").GetString());
        Assert.Equal(path, config.GetProperty("source").GetString());

        var routes = JsonDocument.Parse(await admin.GetStringAsync("/admin/routes")).RootElement;
        Assert.Equal("all", routes.GetProperty("routes")[0].GetProperty("id").GetString());
        Assert.Equal("backend", routes.GetProperty("clusters")[0].GetProperty("id").GetString());

        var explain = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?method=GET&host=a.test&path=/x&ip=10.1.2.3&header=X-A:%201")).RootElement;
        Assert.Equal("all", explain.GetProperty("route").GetString());
        Assert.Equal("forward", explain.GetProperty("decision").GetString());
        var bad = JsonDocument.Parse(await admin.GetStringAsync("/admin/explain?path=/a/../b")).RootElement;
        Assert.Equal("invalid_request_target", bad.GetProperty("reason").GetString());

        using var invalid = await admin.PostAsync("/admin/validate", new StringContent("{ \"listeners\": [], \"routes\": [], \"clusters\": [], \"bogus\": 1 }"));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, invalid.StatusCode);
        var errors = JsonDocument.Parse(await invalid.Content.ReadAsStringAsync()).RootElement.GetProperty("errors").EnumerateArray()
            .Select(e => e.GetProperty("path").GetString()).ToArray();
        Assert.Contains("$.bogus", errors);
        Assert.Contains("$.listeners", errors);
        Assert.Equal(gateway.Host.Runtime.Current.Version, config.GetProperty("version").GetString()); // validate applies nothing

        File.WriteAllText(path, File.ReadAllText(path).Replace("\"id\": \"all\"", "\"id\": \"everything\""));
        using var reload = await admin.PostAsync("/admin/reload", null);
        Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        Assert.Equal("everything", gateway.Host.Runtime.Current.Routes[0].Id);

        File.WriteAllText(path, "{ not json");
        using var failed = await admin.PostAsync("/admin/reload", null);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, failed.StatusCode);
        Assert.Equal("everything", gateway.Host.Runtime.Current.Routes[0].Id);
    }

    [Fact]
    public async Task Token_IsRequiredForAdminEndpointsWhenConfigured()
    {
        var (upstream, gateway, _) = await StartAsync(", \"token\": \"s3cret-token\"");
        await using var _1 = upstream;
        await using var _2 = gateway;
        using var anonymous = gateway.CreateAdminClient();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/admin/config")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/admin/reload", null)).StatusCode);
        using var wrong = gateway.CreateAdminClient("s3cret-tokeN");
        Assert.Equal(HttpStatusCode.Unauthorized, (await wrong.GetAsync("/admin/config")).StatusCode);
        using var right = gateway.CreateAdminClient("s3cret-token");
        Assert.Equal(HttpStatusCode.OK, (await right.GetAsync("/admin/config")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public void NonLoopbackAdmin_WithoutToken_IsAConfigError()
    {
        var text = TestGateway.Config("http://127.0.0.1:9").Replace("\"admin\": { \"address\": \"127.0.0.1:0\" }", "\"admin\": { \"address\": \"0.0.0.0:9901\" }");
        var loaded = ConfigLoader.Load(text);
        Assert.Contains(loaded.Errors, e => e.Path == "$.admin" && e.Message.Contains("token"));
        var withToken = ConfigLoader.Load(text.Replace("\"0.0.0.0:9901\"", "\"0.0.0.0:9901\", \"tokenEnv\": \"PATH\""));
        Assert.True(withToken.IsValid, string.Join("; ", withToken.Errors));
    }
}
