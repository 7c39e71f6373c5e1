namespace FastGate.Http;

/// <summary>Byte classes from RFC 9110/9112/3986 as lookup tables.</summary>
internal static class HttpChars
{
    private const byte Token = 1, FieldValue = 2, TargetChar = 4, HostChar = 8, Hex = 16;
    private static readonly byte[] Table = Build();

    private static byte[] Build()
    {
        var t = new byte[256];
        for (int c = '0'; c <= '9'; c++) t[c] |= Token | TargetChar | HostChar | Hex;
        for (int c = 'a'; c <= 'z'; c++) t[c] |= Token | TargetChar | HostChar;
        for (int c = 'A'; c <= 'Z'; c++) t[c] |= Token | TargetChar | HostChar;
        for (int c = 'a'; c <= 'f'; c++) t[c] |= Hex;
        for (int c = 'A'; c <= 'F'; c++) t[c] |= Hex;
        foreach (char c in "!#$%&'*+-.^_`|~") t[c] |= Token;
        // unreserved + sub-delims + ":" "@" "/" "?" "%" (pct-encoding checked separately)
        foreach (char c in "-._~!$&'()*+,;=:@/?%") t[c] |= TargetChar;
        // reg-name: unreserved / pct-encoded / sub-delims; IP-literal brackets and ':' for the port
        foreach (char c in "-._~!$&'()*+,;=%:[]") t[c] |= HostChar;
        t['\t'] |= FieldValue;
        for (int c = 0x20; c <= 0x7E; c++) t[c] |= FieldValue;
        for (int c = 0x80; c <= 0xFF; c++) t[c] |= FieldValue;
        return t;
    }

    public static bool IsToken(byte b) => (Table[b] & Token) != 0;
    public static bool IsFieldValue(byte b) => (Table[b] & FieldValue) != 0;
    public static bool IsHex(byte b) => (Table[b] & Hex) != 0;

    public static bool IsTokenSpan(ReadOnlySpan<byte> s)
    {
        if (s.IsEmpty) return false;
        foreach (var b in s) if ((Table[b] & Token) == 0) return false;
        return true;
    }

    /// <summary>origin-form path and query characters, with every '%' followed by two hex digits.</summary>
    public static bool IsValidTarget(ReadOnlySpan<byte> s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            byte b = s[i];
            if ((Table[b] & TargetChar) == 0) return false;
            if (b == (byte)'%' && (i + 2 >= s.Length || !IsHex(s[i + 1]) || !IsHex(s[i + 2]))) return false;
        }
        return true;
    }

    /// <summary>RFC 3986 host [":" port], with reg-name, IPv4 or a bracketed IP literal.</summary>
    public static bool IsValidHost(ReadOnlySpan<byte> s)
    {
        if (s.IsEmpty) return true; // an empty Host is allowed by the grammar (no authority)
        int portSep;
        if (s[0] == (byte)'[')
        {
            int close = s.IndexOf((byte)']');
            if (close < 2) return false;
            foreach (var b in s[1..close])
                if (!(IsHex(b) || b == (byte)':' || b == (byte)'.')) return false;
            if (close == s.Length - 1) return true;
            if (s[close + 1] != (byte)':') return false;
            portSep = close + 1;
        }
        else
        {
            portSep = s.IndexOf((byte)':');
            var name = portSep < 0 ? s : s[..portSep];
            if (name.IsEmpty) return false;
            for (int i = 0; i < name.Length; i++)
            {
                byte b = name[i];
                if ((Table[b] & HostChar) == 0 || b == (byte)'[' || b == (byte)']' || b == (byte)':') return false;
                if (b == (byte)'%' && (i + 2 >= name.Length || !IsHex(name[i + 1]) || !IsHex(name[i + 2]))) return false;
            }
            if (portSep < 0) return true;
        }
        var port = s[(portSep + 1)..];
        if (port.Length > 5) return false;
        foreach (var b in port) if (b < (byte)'0' || b > (byte)'9') return false;
        return true;
    }

    /// <summary>Parses 1*DIGIT into a non-negative long; false on empty, non-digit or overflow.</summary>
    public static bool TryParseDecimal(ReadOnlySpan<byte> s, out long value)
    {
        value = 0;
        if (s.IsEmpty || s.Length > 19) return false;
        foreach (var b in s)
        {
            uint d = (uint)(b - '0');
            if (d > 9) return false;
            value = value * 10 + d;
        }
        return value >= 0; // 19 digits can overflow past long.MaxValue
    }

    public static ReadOnlySpan<byte> TrimOws(ReadOnlySpan<byte> s)
    {
        int start = 0, end = s.Length;
        while (start < end && (s[start] == (byte)' ' || s[start] == (byte)'\t')) start++;
        while (end > start && (s[end - 1] == (byte)' ' || s[end - 1] == (byte)'\t')) end--;
        return s[start..end];
    }
}
