using System.Diagnostics;
using System.Net;
using System.Net.Http;
using FastGate.Tests.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

/// <summary>The real `fastgate` executable as a separate process: start, proxy, SIGTERM, exit code.</summary>
public class ProcessTests
{
    [LinuxFact] // SIGTERM is sent with kill(1)
    public async Task FastgateProcess_ProxiesThenDrainsOnSigtermAndExits0()
    {
        await using var upstream = await GatedUpstream.StartAsync();
        var dir = Directory.CreateTempSubdirectory("fastgate-proc-");
        await using var gateway = await FastgateProcess.StartAsync(dir.FullName, TestGateway.Config(upstream.Address));
        using var http = gateway.CreateClient();
        using (var hello = await http.GetAsync("/hello")) Assert.Equal(HttpStatusCode.OK, hello.StatusCode);

        // a request in flight when SIGTERM arrives: held by the upstream until the gateway is draining
        var inFlight = http.GetAsync("/held");
        await upstream.WaitForHeldAsync();
        await gateway.TerminateAsync();
        using var admin = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{gateway.AdminPort}"), Timeout = TimeSpan.FromSeconds(5) };
        await Eventually.WaitUntilAsync(async () =>
        {
            try { return (await admin.GetAsync("/readyz")).StatusCode == HttpStatusCode.ServiceUnavailable; }
            catch (HttpRequestException) { return true; } // the admin listener is already closed: stopping too
        }, "fastgate is draining after SIGTERM", describe: () => gateway.Output);
        Assert.False(gateway.HasExited, "fastgate exited with a request in flight");
        upstream.Release();
        using var response = await inFlight;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("released", await response.Content.ReadAsStringAsync());
        int code = await gateway.WaitForExitAsync();
        Assert.True(code == 0, $"exit {code}: {gateway.Output}");
        Assert.Contains("listening on", gateway.Output);
    }

    private static ProcessStartInfo Fastgate(string arguments, string? configEnv)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "fastgate.dll");
        Assert.True(File.Exists(dll), dll);
        var psi = new ProcessStartInfo("dotnet", $"\"{dll}\" {arguments}") { RedirectStandardOutput = true, RedirectStandardError = true };
        if (configEnv is null) psi.Environment.Remove("FASTGATE_CONFIG");
        else psi.Environment["FASTGATE_CONFIG"] = configEnv;
        return psi;
    }

    [LinuxFact] // SIGTERM is sent with kill(1)
    public async Task RunWithoutConfigOption_UsesFastgateConfigEnvironmentVariable()
    {
        await using var upstream = await DemoUpstreamServer.StartAsync();
        var dir = Directory.CreateTempSubdirectory("fastgate-env-");
        await using var gateway = await FastgateProcess.StartAsync(dir.FullName, TestGateway.Config(upstream.Address.ToString().TrimEnd('/')),
            "from-env.json", configFromEnvironment: true);
        using var http = gateway.CreateClient();
        using (var hello = await http.GetAsync("/hello")) Assert.Equal(HttpStatusCode.OK, hello.StatusCode);
        await gateway.TerminateAsync();
        int code = await gateway.WaitForExitAsync();
        Assert.True(code == 0, $"exit {code}: {gateway.Output}");
        Assert.Contains($"listening on http://127.0.0.1:{gateway.Port}", gateway.Output);
    }

    [Fact]
    public async Task ConfigOption_WinsOverTheEnvironmentVariable_AndNeitherIsAUsageError()
    {
        var dir = Directory.CreateTempSubdirectory("fastgate-env-");
        var broken = Path.Combine(dir.FullName, "broken.json");
        File.WriteAllText(broken, "{ \"listeners\": [] }");
        var valid = Path.Combine(dir.FullName, "valid.json");
        File.WriteAllText(valid, TestGateway.Config("http://127.0.0.1:9"));

        async Task<(int Code, string Out, string Err)> Run(string arguments, string? env)
        {
            using var p = Process.Start(Fastgate(arguments, env))!;
            var o = p.StandardOutput.ReadToEndAsync();
            var e = p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await p.WaitForExitAsync(cts.Token);
            return (p.ExitCode, await o, await e);
        }

        var fromEnv = await Run("validate", broken);
        Assert.Equal(1, fromEnv.Code);
        Assert.Contains("broken.json", fromEnv.Err);
        var option = await Run($"validate --config \"{valid}\"", broken);
        Assert.True(option.Code == 0, option.Err);
        Assert.Contains("valid.json: valid", option.Out);
        var neither = await Run("run", null);
        Assert.Equal(2, neither.Code);
        Assert.Contains("FASTGATE_CONFIG", neither.Err);
        var empty = await Run("run", "");
        Assert.Equal(2, empty.Code);
    }
}
