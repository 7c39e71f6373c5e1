using System.Globalization;
using System.Text;
using FastGate.Http;

namespace FastGate.Tests.Http;

/// <summary>The cached Date line: an RFC 9110 IMF-fixdate of now, refreshed every second in place.</summary>
public class DateHeaderTests
{
    [Fact]
    public async Task Line_IsAnImfFixdateOfNow_AndMovesWithTheClock()
    {
        static DateTimeOffset Parse(string line)
        {
            Assert.StartsWith("Date: ", line, StringComparison.Ordinal);
            Assert.EndsWith(" GMT\r\n", line, StringComparison.Ordinal);
            return DateTimeOffset.ParseExact(line[6..^2], "r", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
        }
        var first = Encoding.ASCII.GetString(DateHeader.Line);
        Assert.Equal(37, first.Length);
        Assert.InRange((DateTimeOffset.UtcNow - Parse(first)).TotalSeconds, -1, 3);
        var until = DateTime.UtcNow.AddSeconds(10);
        string next = first;
        while (next == first && DateTime.UtcNow < until)
        {
            await Task.Delay(100);
            next = Encoding.ASCII.GetString(DateHeader.Line);
        }
        Assert.NotEqual(first, next);
        Assert.InRange((Parse(next) - Parse(first)).TotalSeconds, 1, 5);
    }
}
