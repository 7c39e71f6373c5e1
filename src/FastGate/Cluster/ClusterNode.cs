using System.Text.Json;
using FastGate.Observability.Anomaly;
using FastGate.RateLimiting;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace FastGate.Cluster;

/// <summary>One member of the cluster as the shared store lists it.</summary>
public sealed record ClusterMember(string Id, string Version, DateTimeOffset StartedAt, DateTimeOffset LastHeartbeat, string Health, bool IsSelf);

/// <summary>
/// This gateway as a member of a cluster of gateways sharing one Redis (docs/cluster.md). Off the request path:
/// <list type="bullet">
/// <item>Membership: every heartbeat writes {version, startedAt, lastHeartbeat, health} into the hash
/// <c>{prefix}members</c> and reads it back; members silent for longer than the member timeout are dropped.
/// <see cref="ConfigMismatchSince"/> is when the members started to disagree on the config version (the
/// clusterConfigMismatch alert fires when that lasts longer than its window).</item>
/// <item>Blocks: the block list stays local (the request path reads it lock-free, never Redis). A change made here is
/// written to the hash <c>{prefix}blocks</c> and published on <c>{prefix}events</c>; the other members apply what they
/// receive. On (re)connect each member replays the changes it made while the store was down, then replaces its list
/// with the hash (the reconciling read), so a message lost during an outage is not lost for good.</item>
/// </list>
/// </summary>
public sealed class ClusterNode : IBlockReplication, IDisposable
{
    private readonly RedisRateLimitBackend _store;
    private readonly BlockList _blocks;
    private readonly Func<string> _version;
    private readonly Func<string> _health;
    private readonly TimeProvider _time;
    private readonly Observability.GatewayMetrics _metrics;
    private readonly string _prefix;
    private readonly RedisKey _membersKey, _blocksKey;
    private readonly RedisChannel _channel;
    private readonly Lock _pendingGate = new();
    private readonly List<(string Identity, BlockEntry? Entry, DateTimeOffset At)> _pending = [];
    private ITimer? _timer;
    private volatile IReadOnlyList<ClusterMember> _members = [];
    private ILogger? _logger;
    private int _heartbeating;

    public ClusterNode(RedisRateLimitBackend store, BlockList blocks, Func<string> version, Func<string> health,
        TimeSpan heartbeat, TimeSpan memberTimeout, Observability.GatewayMetrics metrics, TimeProvider? time = null)
    {
        _store = store;
        _blocks = blocks;
        _version = version;
        _health = health;
        _time = time ?? TimeProvider.System;
        _metrics = metrics;
        Heartbeat = heartbeat;
        MemberTimeout = memberTimeout;
        _prefix = store.Options.KeyPrefix;
        _membersKey = _prefix + "members";
        _blocksKey = _prefix + "blocks";
        _channel = RedisChannel.Literal(_prefix + "events");
        StartedAt = _time.GetUtcNow();
        blocks.Replication = this;
        store.StateChanged += up => { if (up) _ = ReconcileAsync(); };
    }

    public string InstanceId => _store.Options.InstanceId;
    public DateTimeOffset StartedAt { get; }
    public TimeSpan Heartbeat { get; }
    public TimeSpan MemberTimeout { get; }
    public RedisRateLimitBackend Store => _store;

    /// <summary>The members seen at the last heartbeat (this one included once it has written its first).</summary>
    public IReadOnlyList<ClusterMember> Members => _members;
    /// <summary>Since when the live members run more than one config version (null while they agree).</summary>
    public DateTimeOffset? ConfigMismatchSince { get; private set; }
    public DateTimeOffset? LastHeartbeat { get; private set; }

    public void UseLogger(ILogger logger) => _logger = logger;

    /// <summary>Subscribes, reconciles, and starts the heartbeat timer.</summary>
    public void Start()
    {
        try
        {
            _store.Multiplexer.GetSubscriber().Subscribe(_channel, (_, message) => OnMessage(message));
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            _store.ReportFailure(e); // the multiplexer restores subscriptions once it reconnects
        }
        _ = ReconcileAsync();
        _timer = _time.CreateTimer(_ => _ = HeartbeatAsync(), null, TimeSpan.Zero, Heartbeat);
    }

    /// <summary>Writes this member's record and reads everyone's (the timer calls it; tests may too).</summary>
    public async Task HeartbeatAsync()
    {
        if (Interlocked.Exchange(ref _heartbeating, 1) == 1) return;
        try
        {
            if (!_store.IsConnected) return;
            var now = _time.GetUtcNow();
            IDatabase db = _store.Multiplexer.GetDatabase();
            string self = JsonSerializer.Serialize(new MemberRecord(_version(), StartedAt.ToUnixTimeMilliseconds(), now.ToUnixTimeMilliseconds(), _health()),
                ClusterJson.Default.MemberRecord);
            await db.HashSetAsync(_membersKey, InstanceId, self).ConfigureAwait(false);
            HashEntry[] all = await db.HashGetAllAsync(_membersKey).ConfigureAwait(false);
            var members = new List<ClusterMember>(all.Length);
            foreach (var e in all)
            {
                MemberRecord? m = Parse(e.Value, ClusterJson.Default.MemberRecord);
                string id = e.Name.ToString();
                if (m is null) continue;
                var last = DateTimeOffset.FromUnixTimeMilliseconds(m.LastHeartbeat);
                if (id != InstanceId && now - last > MemberTimeout)
                {
                    await db.HashDeleteAsync(_membersKey, id).ConfigureAwait(false); // gone: dropped from the list
                    continue;
                }
                members.Add(new ClusterMember(id, m.Version, DateTimeOffset.FromUnixTimeMilliseconds(m.StartedAt), last, m.Health, id == InstanceId));
            }
            members.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
            int versions = members.Select(m => m.Version).Distinct(StringComparer.Ordinal).Count();
            if (versions > 1) ConfigMismatchSince ??= now;
            else ConfigMismatchSince = null;
            _members = members;
            LastHeartbeat = now;
            _metrics.ClusterMembers.Set(members.Count);
            _metrics.ClusterConfigVersions.Set(versions);
            _store.ReportRecovered();
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            _store.ReportFailure(e);
        }
        finally
        {
            Volatile.Write(ref _heartbeating, 0);
        }
    }

    /// <summary>The body of <c>GET /admin/cluster</c> (inside an object).</summary>
    public void WriteStatus(Utf8JsonWriter w)
    {
        var now = _time.GetUtcNow();
        var members = _members;
        w.WriteString("self", InstanceId);
        w.WriteBoolean("storeAvailable", _store.IsHealthy && _store.IsConnected);
        if (_store.DownSince is { } down) w.WriteString("storeDownSince", down);
        if (LastHeartbeat is { } hb) w.WriteString("lastHeartbeat", hb);
        w.WriteNumber("versions", members.Select(m => m.Version).Distinct(StringComparer.Ordinal).Count());
        if (ConfigMismatchSince is { } since) w.WriteString("configMismatchSince", since);
        w.WriteStartArray("members");
        foreach (var m in members)
        {
            w.WriteStartObject();
            w.WriteString("id", m.Id);
            w.WriteBoolean("self", m.IsSelf);
            w.WriteString("version", m.Version);
            w.WriteString("health", m.Health);
            w.WriteString("startedAt", m.StartedAt);
            w.WriteNumber("uptimeSeconds", Math.Max(0, Math.Round((now - m.StartedAt).TotalSeconds, 1)));
            w.WriteString("lastHeartbeat", m.LastHeartbeat);
            w.WriteNumber("secondsSinceHeartbeat", Math.Max(0, Math.Round((now - m.LastHeartbeat).TotalSeconds, 1)));
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    // ---- blocks ----

    void IBlockReplication.Blocked(BlockEntry entry) => _ = SendAsync(entry.Identity, entry, entry.BlockedAt);

    void IBlockReplication.Removed(string identity) => _ = SendAsync(identity, null, _time.GetUtcNow());

    private async Task SendAsync(string identity, BlockEntry? entry, DateTimeOffset at)
    {
        if (!_store.IsConnected)
        {
            lock (_pendingGate) _pending.Add((identity, entry, at)); // replayed when the store is back
            return;
        }
        try
        {
            await WriteAsync(identity, entry, at).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            lock (_pendingGate) _pending.Add((identity, entry, at));
            _store.ReportFailure(e);
        }
    }

    private async Task WriteAsync(string identity, BlockEntry? entry, DateTimeOffset? at = null)
    {
        IDatabase db = _store.Multiplexer.GetDatabase();
        // a lifted block stays in the hash as a tombstone (op unblock) for a day, so a member that missed the message
        // cannot bring it back on its reconciling read
        var message = new BlockMessage(InstanceId, entry is null ? "unblock" : "block", identity,
            entry?.BlockedAt.ToUnixTimeMilliseconds() ?? 0, entry?.ExpiresAt.ToUnixTimeMilliseconds() ?? 0, entry?.Reason ?? "",
            (at ?? entry?.BlockedAt ?? _time.GetUtcNow()).ToUnixTimeMilliseconds());
        string json = JsonSerializer.Serialize(message, ClusterJson.Default.BlockMessage);
        await db.HashSetAsync(_blocksKey, identity, json).ConfigureAwait(false);
        await db.PublishAsync(_channel, json).ConfigureAwait(false);
        _metrics.ClusterBlockEvents.WithLabels("sent", message.Op).Inc();
    }

    private void OnMessage(RedisValue value)
    {
        BlockMessage? m = Parse(value, ClusterJson.Default.BlockMessage);
        if (m is null || m.Origin == InstanceId) return;
        if (m.Op == "block") _blocks.ApplyBlock(ToEntry(m));
        else if (m.Op == "unblock") _blocks.ApplyRemove(m.Identity);
        else return;
        _metrics.ClusterBlockEvents.WithLabels("received", m.Op).Inc();
        _logger?.LogInformation("cluster: {Op} {Identity} from member {Origin}", m.Op, m.Identity, m.Origin);
    }

    private static BlockEntry ToEntry(BlockMessage m) => new(m.Identity, DateTimeOffset.FromUnixTimeMilliseconds(m.BlockedAt),
        DateTimeOffset.FromUnixTimeMilliseconds(m.ExpiresAt), m.Reason);

    /// <summary>
    /// The reconciling read, on start and whenever the store is back: replays the block changes made here while the
    /// store was down, then merges the cluster's hash with the local list, the later change of an identity winning.
    /// Local blocks the hash knows nothing of (the store restarted empty, or failed over before it had them) are
    /// written back; everything else is taken from the hash. Expired entries and day-old tombstones are deleted.
    /// </summary>
    public async Task ReconcileAsync()
    {
        try
        {
            List<(string Identity, BlockEntry? Entry, DateTimeOffset At)> pending;
            lock (_pendingGate)
            {
                pending = [.. _pending];
                _pending.Clear();
            }
            foreach (var (identity, entry, at) in pending) await WriteAsync(identity, entry, at).ConfigureAwait(false);
            IDatabase db = _store.Multiplexer.GetDatabase();
            HashEntry[] all = await db.HashGetAllAsync(_blocksKey).ConfigureAwait(false);
            var now = _time.GetUtcNow();
            var remote = new Dictionary<string, BlockMessage>(StringComparer.Ordinal);
            foreach (var e in all)
            {
                BlockMessage? m = Parse(e.Value, ClusterJson.Default.BlockMessage);
                bool stale = m is null
                    || (m.Op == "block" && DateTimeOffset.FromUnixTimeMilliseconds(m.ExpiresAt) <= now)
                    || (m.Op == "unblock" && now - DateTimeOffset.FromUnixTimeMilliseconds(m.At) > TimeSpan.FromDays(1));
                if (stale) await db.HashDeleteAsync(_blocksKey, e.Name).ConfigureAwait(false);
                else remote[e.Name.ToString()] = m!;
            }
            var merged = new List<BlockEntry>();
            foreach (var local in _blocks.List())
            {
                if (remote.TryGetValue(local.Identity, out var m) && m.At >= local.BlockedAt.ToUnixTimeMilliseconds()) continue;
                await WriteAsync(local.Identity, local, local.BlockedAt).ConfigureAwait(false); // newer here, or unknown there
                remote.Remove(local.Identity);
                merged.Add(local);
            }
            foreach (var m in remote.Values) if (m.Op == "block") merged.Add(ToEntry(m));
            _blocks.ApplyAll(merged);
            _metrics.ClusterBlockEvents.WithLabels("received", "reconcile").Inc();
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            _store.ReportFailure(e);
        }
    }

    private static T? Parse<T>(RedisValue value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type) where T : class
    {
        if (value.IsNullOrEmpty) return null;
        try { return JsonSerializer.Deserialize((string)value!, type); }
        catch (JsonException) { return null; }
    }

    /// <summary>Stops the heartbeat and leaves the member list at once (a graceful stop; a crash drops out after memberTimeout).</summary>
    public void Dispose()
    {
        _timer?.Dispose();
        _blocks.Replication = null;
        try
        {
            if (_store.IsConnected) _store.Multiplexer.GetDatabase().HashDelete(_membersKey, InstanceId, CommandFlags.FireAndForget);
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException) { }
    }
}

internal sealed record MemberRecord(string Version, long StartedAt, long LastHeartbeat, string Health);

internal sealed record BlockMessage(string Origin, string Op, string Identity, long BlockedAt, long ExpiresAt, string Reason, long At);

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase)]
[System.Text.Json.Serialization.JsonSerializable(typeof(MemberRecord))]
[System.Text.Json.Serialization.JsonSerializable(typeof(BlockMessage))]
internal sealed partial class ClusterJson : System.Text.Json.Serialization.JsonSerializerContext;
