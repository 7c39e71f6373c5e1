using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace FastGate.Tests.Infrastructure;

/// <summary>A log sink for a test gateway: keeps every formatted message (level and text) it is given.</summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<(LogLevel Level, string Message)> _entries = new();

    public IReadOnlyList<(LogLevel Level, string Message)> Entries => _entries.ToArray();

    /// <summary>How many entries at <paramref name="level"/> contain <paramref name="text"/>.</summary>
    public int Count(LogLevel level, string text) => _entries.Count(e => e.Level == level && e.Message.Contains(text, StringComparison.Ordinal));

    public string Dump() => string.Join("\n", _entries.Select(e => $"{e.Level}: {e.Message}"));

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose() { }

    private sealed class Logger(CapturedLogs sink) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            sink._entries.Enqueue((logLevel, formatter(state, exception)));
    }
}
