package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** The optional user_agent of clicks and impressions (the rest: tests/test_contract_parity.py). */
class EventParserTest {

  private static final long NOW = 1_780_000_000_000L;
  private static final String CLICK = "{\"click_id\": \"c1\", \"ad_id\": \"a1\", \"click_ts\": "
      + NOW + ", \"user_id\": \"u1\", \"ip\": \"1.2.3.4\", \"country\": \"US\","
      + " \"device\": \"mobile\"";

  private final EventParser parser =
      new EventParser(EventParser.CLICK, 4096, 946_684_800_000L, 3_600_000L);
  private final int userAgent = EventParser.CLICK.indexOf("user_agent");

  private String parse(String json) {
    return parser.parse(json.getBytes(StandardCharsets.UTF_8), NOW);
  }

  private String withUserAgent(String jsonValue) {
    return parse(CLICK + ", \"user_agent\": " + jsonValue + "}");
  }

  @Test
  void anAbsentOrNullUserAgentIsValidAndNull() {
    assertNull(parse(CLICK + "}"));
    assertNull(parser.text(userAgent));
    assertNull(withUserAgent("null"));
    assertNull(parser.text(userAgent));
  }

  @Test
  void aUserAgentIsOneTo512PrintableAsciiCharacters() {
    String chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
    assertNull(withUserAgent("\"" + chrome + "\""));
    assertEquals(chrome, parser.text(userAgent));
    assertNull(withUserAgent("\" ~\\\"\\\\\""));  // escaped, still printable
    assertEquals(" ~\"\\", parser.text(userAgent));
    assertNull(withUserAgent("\"" + "x".repeat(512) + "\""));
    assertEquals("bad_user_agent", withUserAgent("\"\""));
    assertEquals("bad_user_agent", withUserAgent("\"" + "x".repeat(513) + "\""));
    assertEquals("bad_user_agent", withUserAgent("\"bot\\u0001\""));
    assertEquals("bad_user_agent", withUserAgent("\"bot\\t1\""));
    assertEquals("bad_user_agent", withUserAgent("\"caf\u00e9\""));
    assertEquals("bad_user_agent", withUserAgent("\"bot\u007f\""));
    assertEquals("bad_user_agent", withUserAgent("5"));
    assertEquals("bad_user_agent", withUserAgent("[\"ua\"]"));
  }

  @Test
  void clicksAndImpressionsHaveItLastConversionsNot() {
    assertEquals(EventParser.CLICK.size() - 1, EventParser.CLICK.indexOf("user_agent"));
    assertEquals(EventParser.IMPRESSION.size() - 1,
        EventParser.IMPRESSION.indexOf("user_agent"));
    assertEquals(-1, EventParser.CONVERSION.indexOf("user_agent"));
    assertTrue(String.join(",", EventParser.CLICK.reasons).endsWith(",bad_user_agent"));
  }

  @Test
  void theContractPrintsItsRuleLikeATextOne() {
    PrintStream stdout = System.out;
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
    try {
      EventParser.printContract(EventParser.IMPRESSION);
    } finally {
      System.setOut(stdout);
    }
    StringBuilder printable = new StringBuilder();
    for (char c = 0x20; c <= 0x7e; c++) {
      printable.append(c);
    }
    assertTrue(out.toString(StandardCharsets.UTF_8).contains(
        "\noptionaltext\tuser_agent\tbad_user_agent\t1\t512\t" + printable + "\nid\t"));
  }
}
