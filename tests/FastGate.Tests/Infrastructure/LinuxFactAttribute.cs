namespace FastGate.Tests.Infrastructure;

/// <summary>
/// A test that needs Linux (signals sent with kill(2), symlinks swapped with rename(2), /proc): reported as skipped,
/// not passed, elsewhere. xunit v2 has no dynamic skip, so the attribute sets <see cref="FactAttribute.Skip"/>.
/// </summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "needs Linux";
    }
}
