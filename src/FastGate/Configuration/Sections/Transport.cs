namespace FastGate.Configuration;

/// <summary>Which transport serves the plain (non-TLS) listeners.</summary>
public enum TransportKind
{
    /// <summary>The native transport where it runs (Linux x64), else Kestrel: the default.</summary>
    Auto,
    /// <summary>Kestrel's socket transport (every platform).</summary>
    Kestrel,
    /// <summary>FastGate's epoll event loops (Linux x64; elsewhere, or when it cannot start, Kestrel serves instead).</summary>
    Native,
}

/// <summary>How the native transport's event loops wait and do their I/O.</summary>
public enum NativeIoKind
{
    /// <summary>io_uring where the kernel has it (and it is not disabled), else epoll: the default.</summary>
    Auto,
    /// <summary>Edge-triggered epoll and one recv/send syscall per I/O (every Linux).</summary>
    Epoll,
    /// <summary>io_uring: a turn's recvs and sends submitted together by one io_uring_enter (Linux 6.1+; else epoll).</summary>
    IoUring,
}

/// <summary>Binds the top-level <c>transport</c>, <c>nativeLoops</c> and <c>nativeIo</c> settings (docs/performance.md, "Native transport").</summary>
internal static class TransportConfigBinder
{
    internal static readonly string[] Properties = ConfigReader.Names(nameof(GatewayConfig.Transport), nameof(GatewayConfig.NativeLoops), nameof(GatewayConfig.NativeIo));

    /// <summary>Upper bound of nativeLoops.</summary>
    internal const int MaxLoops = 256;

    public static TransportKind BindTransport(System.Text.Json.JsonElement root, ConfigReader r)
    {
        switch (r.String(root, "$", Properties[0]))
        {
            case null:
            case "auto":
                return TransportKind.Auto;
            case "kestrel":
                return TransportKind.Kestrel;
            case "native":
                return TransportKind.Native;
            case var other:
                r.Error("$." + Properties[0], $"expected auto, kestrel or native (found '{other}')");
                return TransportKind.Auto;
        }
    }

    public static NativeIoKind BindNativeIo(System.Text.Json.JsonElement root, ConfigReader r)
    {
        switch (r.String(root, "$", Properties[2]))
        {
            case null:
            case "auto":
                return NativeIoKind.Auto;
            case "epoll":
                return NativeIoKind.Epoll;
            case "io_uring":
                return NativeIoKind.IoUring;
            case var other:
                r.Error("$." + Properties[2], $"expected auto, epoll or io_uring (found '{other}')");
                return NativeIoKind.Auto;
        }
    }

    public static int BindNativeLoops(System.Text.Json.JsonElement root, ConfigReader r) => (int)(r.Integer(root, "$", Properties[1], 0, MaxLoops) ?? 0);
}
