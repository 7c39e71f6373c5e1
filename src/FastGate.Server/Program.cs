using FastGate.Server;

// Socket completions run inline on the epoll threads instead of being queued to the thread pool. Nothing on
// FastGate's request path blocks, so the queue hop is pure overhead (measured: about +30% req/s on 2 cores, see
// docs/performance.md). Set DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0 to turn it off. It must be set before
// the first socket is created, which is why it is here and not in the engine.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");

return await Cli.RunAsync(args, Console.Out, Console.Error);
