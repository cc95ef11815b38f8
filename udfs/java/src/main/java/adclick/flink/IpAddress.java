package adclick.flink;

/**
 * An event's ip as a 128-bit number, for the invalid-traffic rules: a data-center range holds it
 * or not, and clicks from one "ip key" (an IPv4 address, or an IPv6 /64: one subscriber's
 * network, whose last 64 bits a device picks at will) are counted together.
 *
 * <p>The contract only bounds the ip's characters (hex digits, '.' and ':'), so the text may be
 * no address at all; {@link #parse} says so with null, and {@link #key} then keys on the text.
 * An IPv4 address is held as its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so "1.2.3.4" and
 * "::ffff:1.2.3.4" are one address.
 */
public final class IpAddress {

  /** The high 64 bits of ::ffff:0:0/96 is 0; its low 64 bits start with 0000:ffff. */
  private static final long V4_MAPPED_LO = 0xffffL << 32;

  public final long hi;
  public final long lo;

  private IpAddress(long hi, long lo) {
    this.hi = hi;
    this.lo = lo;
  }

  public boolean isV4() {
    return hi == 0 && (lo & 0xffffffff00000000L) == V4_MAPPED_LO;
  }

  /** The address text holds (IPv4 dotted quad, or IPv6 with :: and an IPv4 tail), or null. */
  public static IpAddress parse(String text) {
    if (text == null || text.isEmpty()) {
      return null;
    }
    if (text.indexOf(':') < 0) {
      long v4 = parseV4(text, 0, text.length());
      return v4 < 0 ? null : new IpAddress(0, V4_MAPPED_LO | v4);
    }
    return parseV6(text);
  }

  /**
   * The ip key clicks are counted under: the IPv4 address, or the /64 of an IPv6 one (its last
   * 64 bits zeroed). Text that is no address keys as itself, lower-cased, so such clicks are
   * still counted together, never with an address's.
   */
  public static String key(String text) {
    IpAddress address = parse(text);
    if (address == null) {
      return "?" + (text == null ? "" : text.toLowerCase(java.util.Locale.ROOT));
    }
    if (address.isV4()) {
      long v4 = address.lo & 0xffffffffL;
      return (v4 >>> 24) + "." + ((v4 >>> 16) & 0xff) + "." + ((v4 >>> 8) & 0xff) + "."
          + (v4 & 0xff);
    }
    return String.format("%x:%x:%x:%x::/64", (address.hi >>> 48) & 0xffff,
        (address.hi >>> 32) & 0xffff, (address.hi >>> 16) & 0xffff, address.hi & 0xffff);
  }

  /** The 32 bits of a dotted quad in text[from, to), or -1. */
  private static long parseV4(String text, int from, int to) {
    long value = 0;
    int parts = 0;
    int i = from;
    while (parts < 4) {
      int start = i;
      int part = 0;
      while (i < to && i - start < 3 && Character.isDigit(text.charAt(i))
          && text.charAt(i) <= '9') {
        part = part * 10 + (text.charAt(i) - '0');
        i++;
      }
      // No empty part, no leading zero (01 is octal to some parsers: refuse the ambiguity).
      if (i == start || part > 255 || (i - start > 1 && text.charAt(start) == '0')) {
        return -1;
      }
      value = (value << 8) | part;
      parts++;
      if (parts < 4) {
        if (i >= to || text.charAt(i) != '.') {
          return -1;
        }
        i++;
      }
    }
    return i == to ? value : -1;
  }

  private static IpAddress parseV6(String text) {
    int[] groups = new int[8];
    int count = 0;
    int gap = -1;  // where "::" stands, in groups
    int length = text.length();
    int i = 0;
    if (text.startsWith("::")) {
      gap = 0;
      i = 2;
      if (i == length) {
        return new IpAddress(0, 0);
      }
    } else if (text.charAt(0) == ':') {
      return null;
    }
    while (i < length) {
      int end = i;
      while (end < length && text.charAt(end) != ':') {
        end++;
      }
      if (end == i) {
        return null;  // an empty group: ":::" or a trailing ':'
      }
      if (end == length && text.indexOf('.', i) >= 0) {
        long v4 = parseV4(text, i, end);  // an IPv4 tail: the last 32 bits
        if (v4 < 0 || count > 6) {
          return null;
        }
        groups[count++] = (int) (v4 >>> 16);
        groups[count++] = (int) (v4 & 0xffff);
        i = end;
        break;
      }
      if (end - i > 4 || count == 8) {
        return null;
      }
      int group = 0;
      for (int j = i; j < end; j++) {
        int digit = Character.digit(text.charAt(j), 16);
        if (digit < 0) {
          return null;
        }
        group = (group << 4) | digit;
      }
      groups[count++] = group;
      i = end;
      if (i < length) {
        i++;  // the ':'
        if (i < length && text.charAt(i) == ':') {
          if (gap >= 0) {
            return null;  // a second "::"
          }
          gap = count;
          i++;
        } else if (i == length) {
          return null;  // a trailing single ':'
        }
      }
    }
    if (gap < 0 ? count != 8 : count > 7) {
      return null;
    }
    int[] full = new int[8];
    if (gap < 0) {
      full = groups;
    } else {
      int tail = count - gap;
      System.arraycopy(groups, 0, full, 0, gap);
      System.arraycopy(groups, gap, full, 8 - tail, tail);
    }
    long hi = 0;
    long lo = 0;
    for (int g = 0; g < 4; g++) {
      hi = (hi << 16) | full[g];
      lo = (lo << 16) | full[g + 4];
    }
    return new IpAddress(hi, lo);
  }

  @Override
  public String toString() {
    return String.format("%016x%016x", hi, lo);
  }
}
