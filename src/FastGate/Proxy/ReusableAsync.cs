using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace FastGate.Proxy;

/// <summary>
/// The async state-machine boxes of one owner (a client connection): an async method built with
/// <see cref="ReusableBoxBuilder{TResult}"/> that suspends takes its box from here and gives it back when its result
/// is read, so a connection's per-request async methods allocate their boxes once, on the connection's first request.
/// The runtime's <see cref="PoolingAsyncValueTaskMethodBuilder{TResult}"/> pools per core and per thread, which misses
/// when more calls are suspended at once than there are cores (240 B/request at 50 connections, docs/ARCHITECTURE.md).
/// </summary>
/// <remarks>
/// The owner must run one logical flow at a time (a connection does: request after request, each await before the
/// next call): two calls of the same method suspended at once on one cache get separate boxes, and the second is
/// kept only if there is room. <see cref="Prime"/> goes right before the call: the builder takes the cache from the
/// calling thread as the method starts, before anything else can run on that thread.
/// </remarks>
internal sealed class AsyncBoxCache
{
    [ThreadStatic] private static AsyncBoxCache? t_next;
    private readonly object?[] _boxes = new object?[8];

    /// <summary>The next async method with a <see cref="ReusableBoxBuilder{TResult}"/> started on this thread uses this cache.</summary>
    public void Prime() => t_next = this;

    internal static AsyncBoxCache? TakePrimed()
    {
        var cache = t_next;
        t_next = null;
        return cache;
    }

    /// <summary>Boxes held (for tests).</summary>
    internal int Count
    {
        get
        {
            int n = 0;
            foreach (var box in _boxes) if (box is not null) n++;
            return n;
        }
    }

    internal TBox? Rent<TBox>() where TBox : class
    {
        var boxes = _boxes;
        for (int i = 0; i < boxes.Length; i++)
        {
            if (boxes[i] is TBox box)
            {
                boxes[i] = null;
                return box;
            }
        }
        return null;
    }

    internal void Return(object box)
    {
        var boxes = _boxes;
        for (int i = 0; i < boxes.Length; i++)
        {
            if (boxes[i] is null)
            {
                boxes[i] = box;
                return;
            }
        }
        // full: dropped (an owner with more distinct methods than slots)
    }
}

/// <summary>
/// An async method builder for <see cref="ValueTask{TResult}"/> methods whose box, when they suspend, comes from the
/// <see cref="AsyncBoxCache"/> primed before the call (or is new when none was). A call that completes synchronously
/// uses no box, like the runtime's builders; the execution context flows as it does with them.
/// </summary>
[StructLayout(LayoutKind.Auto)]
internal struct ReusableBoxBuilder<TResult>
{
    private AsyncBoxCache? _cache;
    private ReusableBox<TResult>? _box;
    private TResult _result;
    private Exception? _error;

    public static ReusableBoxBuilder<TResult> Create() => new() { _cache = AsyncBoxCache.TakePrimed(), _result = default! };

    public void Start<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine =>
        // the runtime's Start: runs the first step, restoring the caller's execution and synchronization contexts
        default(AsyncValueTaskMethodBuilder<TResult>).Start(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine)
    {
        // only the runtime's own builders box state machines through this; this one boxes in GetBox
    }

    public void SetResult(TResult result)
    {
        if (_box is null) _result = result;
        else _box.SetResult(result);
    }

    public void SetException(Exception exception)
    {
        if (_box is null) _error = exception;
        else _box.SetException(exception);
    }

    public ValueTask<TResult> Task =>
        _box is { } box ? new ValueTask<TResult>(box, box.Version)
        : _error is { } error ? ValueTask.FromException<TResult>(error)
        : new ValueTask<TResult>(_result);

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion where TStateMachine : IAsyncStateMachine =>
        awaiter.OnCompleted(GetBox(ref stateMachine).MoveNextAction);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion where TStateMachine : IAsyncStateMachine =>
        awaiter.UnsafeOnCompleted(GetBox(ref stateMachine).MoveNextAction);

    private ReusableBox<TResult> GetBox<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine
    {
        var context = ExecutionContext.Capture();
        if (_box is ReusableBox<TResult, TStateMachine> current)
        {
            current.Context = context; // a later await of a call already in its box
            return current;
        }
        var box = _cache?.Rent<ReusableBox<TResult, TStateMachine>>() ?? new ReusableBox<TResult, TStateMachine>();
        box.Cache = _cache;
        box.Context = context;
        _box = box; // before the copy: the boxed state machine's builder must know its box
        box.StateMachine = stateMachine;
        return box;
    }
}

/// <summary>The result side of a suspended call: the awaiter reads it, and reading it recycles the box.</summary>
internal abstract class ReusableBox<TResult> : IValueTaskSource<TResult>
{
    private ManualResetValueTaskSourceCore<TResult> _core;
    internal AsyncBoxCache? Cache;
    internal ExecutionContext? Context;

    protected ReusableBox() => MoveNextAction = MoveNext;

    /// <summary>The continuation handed to awaiters: one delegate per box, made once.</summary>
    internal Action MoveNextAction { get; }

    internal short Version => _core.Version;

    internal void SetResult(TResult result) => _core.SetResult(result);

    internal void SetException(Exception exception) => _core.SetException(exception);

    protected abstract void MoveNext();

    protected abstract void ClearStateMachine();

    public TResult GetResult(short token)
    {
        var result = _core.GetResult(token); // a faulted call throws here: that box is dropped, not recycled
        ClearStateMachine();
        Context = null;
        _core.Reset();
        var cache = Cache;
        Cache = null;
        cache?.Return(this);
        return result;
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

internal sealed class ReusableBox<TResult, TStateMachine> : ReusableBox<TResult> where TStateMachine : IAsyncStateMachine
{
    private static readonly ContextCallback s_moveNext = static state => ((ReusableBox<TResult, TStateMachine>)state!).StateMachine.MoveNext();

    internal TStateMachine StateMachine = default!;

    protected override void MoveNext()
    {
        if (Context is { } context) ExecutionContext.Run(context, s_moveNext, this);
        else StateMachine.MoveNext();
    }

    protected override void ClearStateMachine() => StateMachine = default!;
}
