return await FastGate.LoadTest.Cli.RunAsync(args, Console.Out, Console.Error, CancellationToken.None).ConfigureAwait(false);
