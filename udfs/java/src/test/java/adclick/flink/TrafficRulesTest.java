package adclick.flink;

import static adclick.flink.TrafficRules.BOT_USER_AGENT;
import static adclick.flink.TrafficRules.DATACENTER_IP;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

/** The stateless invalid-traffic labels, on the lists `make jars` puts on the class path. */
class TrafficRulesTest {

  private static final String CHROME_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
      + " AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
  private static final String SAFARI_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac"
      + " OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148"
      + " Safari/604.1";
  private static final String[] BROWSERS = {CHROME_WINDOWS, SAFARI_IPHONE,
      "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
          + " Chrome/126.0.6478.122 Mobile Safari/537.36",
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
          + " Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
      "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
          + " CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1"};
  private static final String GOOGLEBOT = "Googlebot/2.1 (+http://www.google.com/bot.html)";
  private static final String BINGBOT =
      "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)";
  private static final String RESIDENTIAL = "81.2.69.142";
  private static final String AWS = "13.112.10.20";  // in 13.112.0.0/14 (the 2026-08-22 snapshot)

  private final TrafficRules rules = new TrafficRules();

  @Test
  void aKnownCrawlersUserAgentIsABot() {
    assertEquals(BOT_USER_AGENT, rules.label(GOOGLEBOT, RESIDENTIAL));
    assertEquals(BOT_USER_AGENT, rules.label(BINGBOT, RESIDENTIAL));
    assertEquals(BOT_USER_AGENT, rules.label(BINGBOT, null));
    assertEquals(BOT_USER_AGENT, rules.label("curl/8.5.0", RESIDENTIAL));
    // Case-sensitive, as the list's own is_crawler: "googlebot/" is no pattern's.
    assertNull(rules.label("googlebot/2.1", RESIDENTIAL));
  }

  @Test
  void browsersAndNoUserAgentAreNotBots() {
    for (String browser : BROWSERS) {
      assertNull(rules.label(browser, RESIDENTIAL), browser);
      assertNull(rules.label(browser, RESIDENTIAL), browser);  // cached
    }
    assertNull(rules.label(null, RESIDENTIAL));
    assertNull(rules.label(null, null));
  }

  @Test
  void anAddressInACloudRangeIsADataCentersV4AndV6() {
    assertEquals(DATACENTER_IP, rules.label(CHROME_WINDOWS, AWS));
    assertEquals(DATACENTER_IP, rules.label(null, "::ffff:" + AWS));
    assertEquals(DATACENTER_IP, rules.label(null, "2600:1f00:1000::1"));  // AWS /40
    assertEquals(DATACENTER_IP, rules.label(null, "2600:1900:4000:1::7"));  // Google Cloud /28
    assertEquals(DATACENTER_IP, rules.label(null, "34.120.1.1"));  // Google Cloud
    assertNull(rules.label(null, "192.168.1.1"));
    assertNull(rules.label(null, "2a02:c7f:1234::1"));
    assertNull(rules.label(null, "1.2.3"));  // no address
    assertNull(rules.label(null, null));
  }

  @Test
  void aRangeHoldsItsFirstAndLastAddressNotItsNeighbours() {
    // 13.112.0.0/14, nothing listed on either side of it.
    assertNull(rules.label(null, "13.111.255.255"));
    assertEquals(DATACENTER_IP, rules.label(null, "13.112.0.0"));
    assertEquals(DATACENTER_IP, rules.label(null, "13.115.255.255"));
    assertNull(rules.label(null, "13.116.0.0"));
    // Google Cloud's 2600:1900::/28, and AWS's 2600:1f00:800::/64.
    assertNull(rules.label(null, "2600:18ff:ffff:ffff:ffff:ffff:ffff:ffff"));
    assertEquals(DATACENTER_IP, rules.label(null, "2600:1900::"));
    assertEquals(DATACENTER_IP, rules.label(null, "2600:190f:ffff:ffff:ffff:ffff:ffff:ffff"));
    assertNull(rules.label(null, "2600:1910::"));
    assertEquals(DATACENTER_IP, rules.label(null, "2600:1f00:800:0:ffff:ffff:ffff:ffff"));
    assertNull(rules.label(null, "2600:1f00:800:1::"));
  }

  @Test
  void aResidentialAddressIsNothing() {
    assertNull(rules.label(SAFARI_IPHONE, RESIDENTIAL));
  }

  @Test
  void aBotUserAgentWinsOverADataCentersAddress() {
    assertEquals(BOT_USER_AGENT, rules.label(GOOGLEBOT, AWS));
  }

  @Test
  void theVersionIsTheListsOwn() {
    assertTrue(Pattern.matches("crawler-user-agents \\d+\\.\\d+\\.\\d+; datacenter-ranges"
        + " \\d{4}-\\d{2}-\\d{2} lord-alfred/ipranges@[0-9a-f]{40}", TrafficRules.version()),
        TrafficRules.version());
  }

  @Test
  void everyExampleInTheListIsABotAndTheIndexNeverChangesTheAnswer() throws Exception {
    TrafficRules.Crawlers crawlers = TrafficRules.lists().crawlers;
    List<String> examples = new ArrayList<>(List.of(BROWSERS));
    try (InputStream in = TrafficRules.class.getResourceAsStream(TrafficRules.CRAWLERS)) {
      for (JsonNode entry : new ObjectMapper().readTree(in)) {
        for (JsonNode instance : entry.path("instances")) {
          examples.add(instance.asText());
          // Java reads the list's patterns as it means them: its examples match.
          assertTrue(crawlers.matches(instance.asText()), entry.toString());
        }
      }
    }
    assertTrue(examples.size() > 2000, "examples " + examples.size());
    for (String example : examples) {
      assertEquals(tryEach(crawlers, example), crawlers.matches(example), example);
      // Cut short, the required text of a pattern may be gone: still the same answer.
      String cut = example.substring(0, example.length() / 2);
      assertEquals(tryEach(crawlers, cut), crawlers.matches(cut), cut);
    }
  }

  private static boolean tryEach(TrafficRules.Crawlers crawlers, String userAgent) {
    for (Pattern pattern : crawlers.patterns) {
      if (pattern.matcher(userAgent).find()) {
        return true;
      }
    }
    return false;
  }

  @Test
  void theRequiredTextIsWhatEveryMatchHolds() {
    assertEquals("Googlebot/", TrafficRules.requiredText("Googlebot\\/"));
    assertEquals("get", TrafficRules.requiredText("[wW]get"));
    assertEquals("AdsBot-Google", TrafficRules.requiredText("AdsBot-Google([^-]|$)"));
    assertEquals(" Feed-Fetcher",
        TrafficRules.requiredText("BlogTraffic\\/\\d\\.\\d+ Feed-Fetcher"));
    assertEquals("curl", TrafficRules.requiredText("^curl"));
    assertEquals("colo", TrafficRules.requiredText("colou?r"));
    assertEquals("ab", TrafficRules.requiredText("ab+c"));
    assertEquals("ab", TrafficRules.requiredText("abc{0,2}d"));
    assertEquals("Bot", TrafficRules.requiredText("(x|y)Bot[\\]a-z]*"));
    // What it does not model: the pattern is always tried.
    assertEquals("", TrafficRules.requiredText("Automaton|Newsify Feed Fetcher"));
    assertEquals("", TrafficRules.requiredText("abc\\x41def"));
    assertEquals("", TrafficRules.requiredText("(?i)googlebot"));
    assertEquals("", TrafficRules.requiredText("\\Qa.b\\E"));
    assertEquals("", TrafficRules.requiredText("bot[a[b]]"));
  }

  @Test
  void theRangesAreMergedAndACidrMustBeOne() throws Exception {
    Map<String, String> header = new HashMap<>();
    TrafficRules.Ranges ranges = new TrafficRules.Ranges(text("# date: 2026-01-01\n"
        + "2001:db8:1::/48\n10.1.0.0/16\ttwo\n10.0.0.0/8\tone\n11.0.0.0/8\n\n"
        + "2001:db8::/32\nff00::/8\n"), header);
    assertEquals("2026-01-01", header.get("date"));
    assertEquals(4, ranges.size());  // 10/8 holds 10.1/16, 2001:db8::/32 its /48
    for (String in : new String[] {"10.1.2.3", "10.200.0.1", "11.0.0.0", "2001:db8:2::1"}) {
      IpAddress address = IpAddress.parse(in);
      assertTrue(ranges.contains(address.hi, address.lo), in);
    }
    for (String out : new String[] {"9.255.255.255", "12.0.0.0", "2001:db9::", "::"}) {
      IpAddress address = IpAddress.parse(out);
      assertFalse(ranges.contains(address.hi, address.lo), out);
    }
    assertTrue(ranges.contains(-1L, -1L));  // ff00::/8: unsigned, above the rest
    TrafficRules.Ranges everything = new TrafficRules.Ranges(text("::/0\n"), header);
    assertTrue(everything.contains(0, 0) && everything.contains(-1L, -1L));
    assertThrows(IllegalStateException.class,
        () -> new TrafficRules.Ranges(text("10.0.0.1/8\n"), header));  // host bits
    assertThrows(IllegalStateException.class,
        () -> new TrafficRules.Ranges(text("10.0.0.0/33\n"), header));
    assertThrows(IllegalStateException.class,
        () -> new TrafficRules.Ranges(text("10.0.0.0\n"), header));
    TrafficRules.Ranges v4 = new TrafficRules.Ranges(text("1.2.3.4/32\n"), header);
    IpAddress next = IpAddress.parse("1.2.3.5");
    assertFalse(v4.contains(next.hi, next.lo));
  }

  private static InputStream text(String s) {
    return new ByteArrayInputStream(s.getBytes(StandardCharsets.UTF_8));
  }

  /** Not an assertion: what a label costs, and what the index saves, on this machine. */
  @Test
  void timing() {
    TrafficRules.Crawlers crawlers = TrafficRules.lists().crawlers;
    StringBuilder all = new StringBuilder();
    for (Pattern pattern : crawlers.patterns) {
      all.append(all.length() == 0 ? "" : "|").append("(?:").append(pattern.pattern())
          .append(')');
    }
    Pattern alternation = Pattern.compile(all.toString());
    int n = 2_000;
    String[] fresh = new String[n];
    for (int i = 0; i < n; i++) {
      fresh[i] = CHROME_WINDOWS.replace("126.0.0.0", "126.0." + i + ".0");
    }
    for (int round = 0; round < 3; round++) {
      TrafficRules uncached = new TrafficRules();
      long t0 = System.nanoTime();
      for (String ua : fresh) {
        uncached.label(ua, RESIDENTIAL);
      }
      long t1 = System.nanoTime();
      for (int i = 0; i < 100 * n; i++) {
        // A new String, as each parsed event's: its hash is not cached.
        rules.label(new String(CHROME_WINDOWS.toCharArray()), RESIDENTIAL);
      }
      long t2 = System.nanoTime();
      for (int i = 0; i < n / 10; i++) {
        tryEach(crawlers, fresh[i]);
      }
      long t3 = System.nanoTime();
      for (int i = 0; i < n / 10; i++) {
        alternation.matcher(fresh[i]).find();
      }
      long t4 = System.nanoTime();
      System.out.printf("TrafficRules.label, a browser's user agent: uncached %.2f us, cached"
          + " %.3f us; without the index: each pattern %.1f us, one alternation %.1f us%n",
          (t1 - t0) / 1e3 / n, (t2 - t1) / 1e3 / (100 * n), (t3 - t2) / 1e3 / (n / 10),
          (t4 - t3) / 1e3 / (n / 10));
    }
  }
}
