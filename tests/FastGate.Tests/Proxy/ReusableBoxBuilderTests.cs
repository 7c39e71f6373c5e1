using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using FastGate.Proxy;

namespace FastGate.Tests.Proxy;

/// <summary>
/// The connection's async stages take their state-machine box from the connection's AsyncBoxCache: a suspended call
/// allocates its box once, later calls reuse it (0 B), results, exceptions and AsyncLocal values flow as with the
/// runtime's builders.
/// </summary>
public class ReusableBoxBuilderTests
{
    /// <summary>An operation the test completes by hand, on its own thread (continuations run inline).</summary>
    private sealed class Gate : IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core;
        public ValueTask<int> WaitAsync() => new(this, _core.Version);
        public void Open(int value) => _core.SetResult(value);
        public void Fail(Exception e) => _core.SetException(e);
        public int GetResult(short token)
        {
            int r = _core.GetResult(token);
            _core.Reset();
            return r;
        }
        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);
        public void OnCompleted(Action<object?> c, object? s, short t, ValueTaskSourceOnCompletedFlags f) => _core.OnCompleted(c, s, t, f);
    }

    private static readonly AsyncLocal<string?> s_flow = new();

    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private static async ValueTask<int> TwiceAsync(Gate gate, bool readFlow = false)
    {
        int a = await gate.WaitAsync().ConfigureAwait(false);
        int b = await gate.WaitAsync().ConfigureAwait(false);
        if (readFlow && s_flow.Value != "set") throw new InvalidOperationException("the execution context did not flow");
        return a + b;
    }

    [AsyncMethodBuilder(typeof(ReusableBoxBuilder<>))]
    private static async ValueTask<int> SynchronousAsync(int value)
    {
        await Task.CompletedTask.ConfigureAwait(false);
        return value;
    }

    /// <summary>One suspended call, completed by hand on this thread; its result read without a continuation.</summary>
    private static int RunOnce(AsyncBoxCache cache, Gate gate)
    {
        cache.Prime();
        var pending = TwiceAsync(gate);
        gate.Open(1);
        gate.Open(2);
        return pending.Result;
    }

    [Fact]
    public void ASuspendedCall_TakesItsBoxOnce_ThenReusesIt_WithoutAllocating()
    {
        var cache = new AsyncBoxCache();
        var gate = new Gate();
        Assert.Equal(0, cache.Count);
        Assert.Equal(3, RunOnce(cache, gate));
        Assert.Equal(1, cache.Count); // the box came back when its result was read
        for (int i = 0; i < 10; i++) RunOnce(cache, gate);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++) RunOnce(cache, gate);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(1, cache.Count);
        Assert.True(allocated < 100, $"{allocated} B for 100 suspended calls (a box is over 100 B)");
    }

    /// <summary>The result of a call that has completed (it ran to the end on this thread).</summary>
    private static int Completed(ValueTask<int> task)
    {
        Assert.True(task.IsCompletedSuccessfully);
        return task.Result;
    }

    [Fact]
    public void WithoutAPrimedCache_EachSuspendedCallHasANewBox_AndNothingIsCached()
    {
        var cache = new AsyncBoxCache();
        var gate = new Gate();
        var pending = TwiceAsync(gate);
        gate.Open(20);
        gate.Open(22);
        Assert.Equal(42, Completed(pending));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void ASynchronousCall_UsesNoBox()
    {
        var cache = new AsyncBoxCache();
        cache.Prime();
        var done = SynchronousAsync(7);
        Assert.True(done.IsCompletedSuccessfully);
        Assert.Equal(7, Completed(done));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public async Task AFault_ReachesTheAwaiter_AndTheExecutionContextFlows()
    {
        var cache = new AsyncBoxCache();
        var gate = new Gate();
        cache.Prime();
        var failing = TwiceAsync(gate);
        gate.Open(1);
        gate.Fail(new TimeoutException("boom"));
        await Assert.ThrowsAsync<TimeoutException>(async () => await failing);
        Assert.Equal(0, cache.Count); // a faulted box is dropped, not recycled

        s_flow.Value = "set";
        gate = new Gate(); // the faulted one stays faulted
        cache.Prime();
        var flowing = TwiceAsync(gate, readFlow: true);
        s_flow.Value = null; // the call captured the context it started in
        var other = Task.Run(() => { gate.Open(1); gate.Open(1); }); // completed from another thread
        await other;
        Assert.Equal(2, await flowing);
        Assert.Equal(1, cache.Count);
    }
}
