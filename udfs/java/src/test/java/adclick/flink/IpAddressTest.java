package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Text to a 128-bit address, strictly; and the ip key clicks are counted under. */
class IpAddressTest {

  private static void assertAddress(long hi, long lo, String text) {
    IpAddress address = IpAddress.parse(text);
    assertEquals(String.format("%016x%016x", hi, lo), String.valueOf(address), text);
  }

  @Test
  void anIpv4AddressIsHeldAsItsIpv4MappedForm() {
    assertAddress(0, 0x0000ffff01020304L, "1.2.3.4");
    assertAddress(0, 0x0000ffffffffffffL, "255.255.255.255");
    assertAddress(0, 0x0000ffff00000000L, "0.0.0.0");
    assertTrue(IpAddress.parse("1.2.3.4").isV4());
    assertAddress(0, 0x0000ffff01020304L, "::ffff:1.2.3.4");
    assertAddress(0, 0x0000ffff01020304L, "::FFFF:0102:0304");
    assertTrue(IpAddress.parse("::ffff:1.2.3.4").isV4());
  }

  @Test
  void ipv6FullCompressedAndWithAnIpv4Tail() {
    assertAddress(0x20010db800000000L, 1, "2001:0db8:0000:0000:0000:0000:0000:0001");
    assertAddress(0x20010db800000000L, 1, "2001:db8::1");
    assertAddress(0x20010db800000000L, 1, "2001:DB8:0:0:0:0:0:1");
    assertAddress(0x0001000200030004L, 0x0005000600070008L, "1:2:3:4:5:6:7:8");
    assertAddress(0x0001000200030004L, 0x0005000600070000L, "1:2:3:4:5:6:7::");
    assertAddress(0x0000000200030004L, 0x0005000600070008L, "::2:3:4:5:6:7:8");
    assertAddress(0, 0, "::");
    assertAddress(0, 1, "::1");
    assertAddress(0x20010db800000000L, 0, "2001:db8::");
    assertAddress(0x0064ff9b00000000L, 0x01020304L, "64:ff9b::1.2.3.4");
    assertAddress(0x0001000200030004L, 0x0005000601020304L, "1:2:3:4:5:6:1.2.3.4");
    assertFalse(IpAddress.parse("2001:db8::1").isV4());
    assertFalse(IpAddress.parse("::1.2.3.4").isV4());  // IPv4-compatible, deprecated: not mapped
  }

  @Test
  void textThatIsNoAddressIsNull() {
    for (String text : new String[] {
        null, "", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "1.2.3.256", "1.2.3.", ".1.2.3",
        "1..2.3", "1.2.3.4:", "1234", ":", ":::", "1:::2", "1::2::3", "::1::", ":1::", "1:",
        "1:2:3:4:5:6:7:", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "::1:2:3:4:5:6:7:8",
        "12345::", "g::", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3", "::1.2.3.256", "1.2.3.4::",
        "::ffff:01.2.3.4", "--", "1.2.3.4 "}) {
      assertNull(IpAddress.parse(text), text);
    }
  }

  @Test
  void theKeyIsTheIpv4AddressOrTheIpv6Slash64() {
    assertEquals("1.2.3.4", IpAddress.key("1.2.3.4"));
    assertEquals("1.2.3.4", IpAddress.key("::ffff:1.2.3.4"));
    assertEquals("255.0.10.200", IpAddress.key("::ffff:ff00:ac8"));
    assertEquals("2001:db8:1:2::/64", IpAddress.key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
    // Differing only in the last 64 bits, the highest of them included: one subscriber.
    assertEquals(IpAddress.key("2001:db8:1:2::"), IpAddress.key("2001:db8:1:2:8000::"));
    assertEquals(IpAddress.key("2001:db8:1:2::"),
        IpAddress.key("2001:0DB8:0001:0002:ffff:ffff:ffff:ffff"));
    // Differing in the last bit of the /64 (bit 63 from the left): two networks.
    assertNotEquals(IpAddress.key("2001:db8:1:2::"), IpAddress.key("2001:db8:1:3::"));
    assertEquals("0:0:0:0::/64", IpAddress.key("::1"));
  }

  @Test
  void textThatIsNoAddressKeysAsItselfLowerCasedApartFromEveryAddress() {
    assertEquals("?1.2.3", IpAddress.key("1.2.3"));
    assertEquals("?abc:def", IpAddress.key("ABC:DEF"));
    assertEquals("?01.2.3.4", IpAddress.key("01.2.3.4"));
    assertEquals("?", IpAddress.key(null));
    assertNotEquals(IpAddress.key("1.2.3.4"), IpAddress.key("01.2.3.4"));
  }
}
