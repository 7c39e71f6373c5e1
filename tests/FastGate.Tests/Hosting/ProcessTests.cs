using System.Diagnostics;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using FastGate.Tests.Configuration;
using FastGate.Tests.Infrastructure;

namespace FastGate.Tests.Hosting;

/// <summary>The real `fastgate` executable as a separate process: start, proxy, SIGTERM, exit code.</summary>
public class ProcessTests
{
    [Fact]
    public async Task FastgateProcess_ProxiesThenDrainsOnSigtermAndExits0()
    {
        if (!OperatingSystem.IsLinux()) return; // SIGTERM is sent with kill(1)
        await using var upstream = await DemoUpstreamServer.StartAsync();
        int port = FreePort(), adminPort = FreePort();
        var dir = Directory.CreateTempSubdirectory("fastgate-proc-");
        var config = Path.Combine(dir.FullName, "fastgate.json");
        File.WriteAllText(config, TestGateway.Config(upstream.Address.ToString().TrimEnd('/'))
            .Replace("\"address\": \"127.0.0.1:0\" } ]", $"\"address\": \"127.0.0.1:{port}\" }} ]")
            .Replace("\"admin\": { \"address\": \"127.0.0.1:0\" }", $"\"admin\": {{ \"address\": \"127.0.0.1:{adminPort}\" }}"));
        var dll = Path.Combine(AppContext.BaseDirectory, "fastgate.dll");
        Assert.True(File.Exists(dll), dll);
        var psi = new ProcessStartInfo("dotnet", $"\"{dll}\" run --config \"{config}\"")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            await ReloadTests.WaitUntil(async () =>
            {
                try { return (await http.GetAsync("/hello")).StatusCode == HttpStatusCode.OK; }
                catch (HttpRequestException) { return false; }
            }, timeoutMs: 30000);
            var slow = http.GetAsync("/delay/1500");
            await Task.Delay(300);
            using (var kill = Process.Start("kill", $"-TERM {process.Id}")!) await kill.WaitForExitAsync();
            using var response = await slow;
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await process.WaitForExitAsync(cts.Token);
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {await stderr}");
            Assert.Contains("listening on", await stdout);
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
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

    [Fact]
    public async Task RunWithoutConfigOption_UsesFastgateConfigEnvironmentVariable()
    {
        if (!OperatingSystem.IsLinux()) return; // SIGTERM is sent with kill(1)
        await using var upstream = await DemoUpstreamServer.StartAsync();
        int port = FreePort(), adminPort = FreePort();
        var dir = Directory.CreateTempSubdirectory("fastgate-env-");
        var config = Path.Combine(dir.FullName, "from-env.json");
        File.WriteAllText(config, TestGateway.Config(upstream.Address.ToString().TrimEnd('/'))
            .Replace("\"address\": \"127.0.0.1:0\" } ]", $"\"address\": \"127.0.0.1:{port}\" }} ]")
            .Replace("\"admin\": { \"address\": \"127.0.0.1:0\" }", $"\"admin\": {{ \"address\": \"127.0.0.1:{adminPort}\" }}"));
        using var process = Process.Start(Fastgate("run", config))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            await ReloadTests.WaitUntil(async () =>
            {
                if (process.HasExited) return true;
                try { return (await http.GetAsync("/hello")).StatusCode == HttpStatusCode.OK; }
                catch (HttpRequestException) { return false; }
            }, timeoutMs: 30000);
            Assert.False(process.HasExited, $"fastgate exited {(process.HasExited ? process.ExitCode : 0)}: {(process.HasExited ? await stderr : "")}");
            using (var kill = Process.Start("kill", $"-TERM {process.Id}")!) await kill.WaitForExitAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await process.WaitForExitAsync(cts.Token);
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {await stderr}");
            Assert.Contains($"listening on http://127.0.0.1:{port}", await stdout);
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
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

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
