using FastGate.Server;

return await Cli.RunAsync(args, Console.Out, Console.Error);
