namespace FastGate; public static class GatewayInfo { public const string Name = "FastGate"; }
