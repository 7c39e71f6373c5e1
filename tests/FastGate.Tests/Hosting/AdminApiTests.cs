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
        var (upstream, gateway, _) = await StartAsync(", \"token\": \"s3cret-token-0123456789\"");
        await using var _1 = upstream;
        await using var _2 = gateway;
        using var anonymous = gateway.CreateAdminClient();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/admin/config")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/admin/reload", null)).StatusCode);
        using var wrong = gateway.CreateAdminClient("s3cret-token-012345678X");
        Assert.Equal(HttpStatusCode.Unauthorized, (await wrong.GetAsync("/admin/config")).StatusCode);
        using var right = gateway.CreateAdminClient("s3cret-token-0123456789");
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

    private static string WithIpList(string config, string file) =>
        config.Replace("\"routes\": [", "\"ipLists\": [ { \"id\": \"blocked\", \"file\": " + System.Text.Json.JsonSerializer.Serialize(file) + " } ], \"routes\": [");

    [Fact]
    public async Task Validate_NeverEchoesFileContents_AndOpensOnlyFilesUnderTheConfigDirectory()
    {
        var (upstream, gateway, path) = await StartAsync();
        await using var _ = upstream;
        await using var __ = gateway;
        using var admin = gateway.CreateAdminClient();
        var configDir = Path.GetDirectoryName(path)!;
        var text = File.ReadAllText(path);
        const string marker = "SECRET-7c1e-not-a-cidr";
        var outside = Directory.CreateTempSubdirectory("fastgate-admin-secret-");
        var secret = Path.Combine(outside.FullName, "id_rsa");
        File.WriteAllText(secret, $"-----BEGIN PRIVATE KEY-----\n{marker}\n-----END PRIVATE KEY-----\n");
        Directory.CreateDirectory(Path.Combine(configDir, "lists"));
        File.WriteAllText(Path.Combine(configDir, "lists", "blocked.txt"), $"10.0.0.0/8\n{marker}\n");
        File.WriteAllText(Path.Combine(configDir, "lists", "good.txt"), "10.0.0.0/8\n192.0.2.1\n");

        async Task<(System.Net.HttpStatusCode Status, string Body)> Validate(string body)
        {
            using var r = await admin.PostAsync("/admin/validate", new StringContent(body));
            return (r.StatusCode, await r.Content.ReadAsStringAsync());
        }

        // a file outside the running config's directory is not opened: absolute, "../" or /etc/passwd
        foreach (var file in new[] { secret, Path.GetRelativePath(configDir, secret), "/etc/passwd" })
        {
            var (status, body) = await Validate(WithIpList(text, file));
            Assert.DoesNotContain(marker, body);
            Assert.DoesNotContain("root:", body);
            Assert.DoesNotContain("BEGIN PRIVATE KEY", body);
            Assert.Contains("outside", body);
            Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
        }
        // every kind of file a config names: listener certificates, a cluster's CA bundle, JWT key files
        var others = new[]
        {
            text.Replace("\"address\": \"127.0.0.1:0\" } ]", $"\"address\": \"127.0.0.1:0\", \"tls\": {{ \"certificate\": \"{secret}\", \"key\": \"/etc/passwd\" }} }} ]"),
            text.Replace("\"routes\": [", "\"jwtIssuers\": [ { \"id\": \"i\", \"issuer\": \"https://issuer.example\", \"audiences\": [\"api\"], \"keys\": [\"/etc/passwd\"] } ], \"routes\": ["),
            text.Replace("\"destinations\": [ { \"address\": \"http://", "\"tls\": { \"ca\": \"/etc/passwd\" }, \"destinations\": [ { \"address\": \"https://"),
        };
        foreach (var other in others)
        {
            Assert.NotEqual(text, other);
            var (status, body) = await Validate(other);
            Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
            Assert.Contains("outside", body);
            Assert.DoesNotContain(marker, body);
            Assert.DoesNotContain("root:", body);
        }
        // inside it, relative to the running config's directory: a bad line is named by its number, never its text
        var (badStatus, badBody) = await Validate(WithIpList(text, "lists/blocked.txt"));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, badStatus);
        Assert.DoesNotContain(marker, badBody);
        Assert.Contains("line 2", badBody);
        var (goodStatus, goodBody) = await Validate(WithIpList(text, "lists/good.txt"));
        Assert.True(goodStatus == HttpStatusCode.OK, goodBody);
    }

    [Fact]
    public void IpListFile_BadLine_ErrorNamesTheLineNotItsText()
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-iplist-");
        File.WriteAllText(Path.Combine(dir.FullName, "list.txt"), "root:x:0:0:root:/root:/bin/bash\n");
        var loaded = ConfigLoader.Load(WithIpList(TestGateway.Config("http://127.0.0.1:9"), "list.txt"), dir.FullName);
        var e = Assert.Single(loaded.Errors);
        Assert.Equal("$.ipLists[0].file", e.Path);
        Assert.Contains("line 1", e.Message);
        Assert.DoesNotContain("root", e.Message);
    }

    [Theory]
    [InlineData("localhost", true)]
    [InlineData("localhost:{port}", true)]
    [InlineData("127.0.0.1:{port}", true)]
    [InlineData("[::1]:{port}", true)]
    [InlineData("LOCALHOST:{port}", true)]
    [InlineData("evil.example", false)]
    [InlineData("evil.example:{port}", false)]
    [InlineData("localhost.evil.example", false)]
    [InlineData("127.0.0.1.nip.io:{port}", false)]
    public async Task NoToken_HostHeaderMustBeALoopbackName(string host, bool allowed)
    {
        var (upstream, gateway, _) = await StartAsync();
        await using var _1 = upstream;
        await using var _2 = gateway;
        using var admin = gateway.CreateAdminClient();
        foreach (var (method, target) in new[] { (HttpMethod.Get, "/admin/config"), (HttpMethod.Post, "/admin/validate"), (HttpMethod.Get, "/metrics") })
        {
            using var request = new HttpRequestMessage(method, target) { Content = method == HttpMethod.Post ? new StringContent("{}") : null };
            request.Headers.Host = host.Replace("{port}", gateway.Admin!.Port.ToString());
            using var response = await admin.SendAsync(request);
            if (allowed) Assert.NotEqual(HttpStatusCode.Forbidden, response.StatusCode);
            else Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{method} {target} with Host {host}: {response.StatusCode}");
        }
    }

    [Fact]
    public async Task WithToken_AnyHostHeaderIsAnsweredWhenTheTokenIsRight()
    {
        var (upstream, gateway, _) = await StartAsync(", \"token\": \"s3cret-token-0123456789\"");
        await using var _1 = upstream;
        await using var _2 = gateway;
        using var admin = gateway.CreateAdminClient("s3cret-token-0123456789");
        using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/config");
        request.Headers.Host = "gateway.internal.example";
        Assert.Equal(HttpStatusCode.OK, (await admin.SendAsync(request)).StatusCode);
    }
}
