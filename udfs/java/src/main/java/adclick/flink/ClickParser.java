package adclick.flink;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.IntPredicate;

/**
 * The click event contract: one pass over a payload's bytes that validates it and extracts the
 * seven click fields, or names the first rule it breaks. No Flink types here, so the same class
 * backs the Flink format (ClickDeserializationSchema) and the parity check against the Python
 * contract (adclick/contract.py, tests/test_contract_parity.py runs {@link #main}).
 *
 * <p>The rules, checked in the order of {@link #REASONS} (the fields in the order of RULES):
 * <ul>
 *   <li>oversized: more than maxPayloadBytes bytes;
 *   <li>not_json_object: not strict UTF-8, or not exactly one JSON object (RFC 8259, whitespace
 *       around it allowed; no NaN or Infinity), or nested deeper than {@link #MAX_DEPTH};
 *   <li>duplicate_field: a key repeated in the top-level object (which one would count?);
 *   <li>bad_click_id / bad_ad_id: not a string of 1-64 of [A-Za-z0-9_.:-];
 *   <li>bad_click_ts: not an integer of at most 15 digits (no fraction, no exponent);
 *   <li>click_ts_too_old: before minClickTsMs; click_ts_in_future: after now + maxFutureMs;
 *   <li>bad_user_id: not 1-128 of [A-Za-z0-9_.:@-]; bad_ip: not 2-45 of [0-9A-Fa-f.:];
 *   <li>bad_country: not two of [A-Z]; bad_device: not one of {@link #DEVICES}.
 * </ul>
 * Other fields may hold any JSON value. Not thread-safe: one instance per task.
 */
public final class ClickParser {

  /** One field's rule: its reason when broken, and for a text field its length and chars. */
  private static final class Rule {
    final String field;
    final String reason;
    final int min;
    final int max;
    final IntPredicate allowed;

    Rule(String field, int min, int max, IntPredicate allowed) {
      this.field = field;
      this.reason = "bad_" + field;
      this.min = min;
      this.max = max;
      this.allowed = allowed;
    }
  }

  public static final String[] DEVICES = {"mobile", "desktop", "tablet", "other"};
  public static final int MAX_DEPTH = 64;
  static final int MAX_TS_DIGITS = 15;

  // The contract's fields in rule order (adclick/contract.py CLICK; --contract prints them for
  // tests/test_contract_parity.py). click_ts and device have rules of their own (null here).
  private static final Rule[] RULES = {
    new Rule("click_id", 1, 64, ClickParser::isIdChar),
    new Rule("ad_id", 1, 64, ClickParser::isIdChar),
    new Rule("click_ts", 0, 0, null),
    new Rule("user_id", 1, 128, ClickParser::isUserIdChar),
    new Rule("ip", 2, 45, ClickParser::isIpChar),
    new Rule("country", 2, 2, ClickParser::isUpper),
    new Rule("device", 0, 0, null),
  };
  private static final int CLICK_ID = 0, AD_ID = 1, CLICK_TS = 2, USER_ID = 3, IP = 4,
      COUNTRY = 5, DEVICE = 6;
  private static final String[] FIELDS = new String[RULES.length];

  public static final String[] REASONS;

  static {
    List<String> reasons = new ArrayList<>(
        List.of("oversized", "not_json_object", "duplicate_field"));
    for (int i = 0; i < RULES.length; i++) {
      FIELDS[i] = RULES[i].field;
      reasons.add(RULES[i].reason);
      if (i == CLICK_TS) {
        reasons.add("click_ts_too_old");
        reasons.add("click_ts_in_future");
      }
    }
    REASONS = reasons.toArray(new String[0]);
  }

  /** Thrown (without a stack trace) when the payload is not a JSON object. */
  private static final class NotJson extends Exception {
    NotJson() {
      super("not a JSON object", null, false, false);
    }
  }

  private static final NotJson NOT_JSON = new NotJson();

  private final int maxPayloadBytes;
  private final long minClickTsMs;
  private final long maxFutureMs;

  // The result of the last parse (valid when reason is null).
  public String reason;
  public String clickId, adId, userId, ip, country, device;
  public long clickTs;

  // Per payload scratch state.
  private byte[] buf;
  private int pos;
  private int end;
  private final Object[] values = new Object[FIELDS.length];  // String, Long, or NOT_A_VALUE
  private final Set<String> keys = new HashSet<>();
  private final StringBuilder text = new StringBuilder();
  private static final Object OTHER = new Object();  // a present value of another JSON type

  public ClickParser(int maxPayloadBytes, long minClickTsMs, long maxFutureMs) {
    this.maxPayloadBytes = maxPayloadBytes;
    this.minClickTsMs = minClickTsMs;
    this.maxFutureMs = maxFutureMs;
  }

  /** Parses payload (null for a Kafka tombstone); returns the reject reason, null when valid. */
  public String parse(byte[] payload, long nowMs) {
    reason = validate(payload, nowMs);
    return reason;
  }

  private String validate(byte[] payload, long nowMs) {
    clickId = adId = userId = ip = country = device = null;
    clickTs = 0;
    if (payload == null) {
      return "not_json_object";
    }
    if (payload.length > maxPayloadBytes) {
      return "oversized";
    }
    for (int i = 0; i < values.length; i++) {
      values[i] = null;
    }
    keys.clear();
    buf = payload;
    pos = 0;
    end = payload.length;
    boolean duplicate;
    try {
      skipWhitespace();
      if (pos >= end || buf[pos] != '{') {
        throw NOT_JSON;
      }
      duplicate = topObject();
      skipWhitespace();
      if (pos != end) {
        throw NOT_JSON;
      }
    } catch (NotJson e) {
      return "not_json_object";
    } finally {
      buf = null;
    }
    if (duplicate) {
      return "duplicate_field";
    }
    for (int f = 0; f < RULES.length; f++) {
      if (f == CLICK_TS) {
        if (!(values[CLICK_TS] instanceof Long)) {
          return RULES[f].reason;
        }
        long ts = (Long) values[CLICK_TS];
        if (ts < minClickTsMs) {
          return "click_ts_too_old";
        }
        if (ts > nowMs + maxFutureMs) {
          return "click_ts_in_future";
        }
      } else if (f == DEVICE ? !isDevice(values[f]) : !isStringOf(values[f], RULES[f])) {
        return RULES[f].reason;
      }
    }
    clickId = (String) values[CLICK_ID];
    adId = (String) values[AD_ID];
    clickTs = (Long) values[CLICK_TS];
    userId = (String) values[USER_ID];
    ip = (String) values[IP];
    country = (String) values[COUNTRY];
    device = (String) values[DEVICE];
    return null;
  }

  // ---- field rules -------------------------------------------------------------------------

  /** A String of rule.min to rule.max chars, each one rule.allowed. */
  private static boolean isStringOf(Object value, Rule rule) {
    if (!(value instanceof String)) {
      return false;
    }
    String s = (String) value;
    if (s.length() < rule.min || s.length() > rule.max) {
      return false;
    }
    for (int i = 0; i < s.length(); i++) {
      if (!rule.allowed.test(s.charAt(i))) {
        return false;
      }
    }
    return true;
  }

  private static boolean isUpper(int c) {
    return c >= 'A' && c <= 'Z';
  }

  private static boolean isDigit(int c) {
    return c >= '0' && c <= '9';
  }

  /** [A-Za-z0-9_.:-] */
  private static boolean isIdChar(int c) {
    return isUpper(c) || (c >= 'a' && c <= 'z') || isDigit(c)
        || c == '_' || c == '.' || c == ':' || c == '-';
  }

  /** [A-Za-z0-9_.:@-] */
  private static boolean isUserIdChar(int c) {
    return isIdChar(c) || c == '@';
  }

  /** [0-9A-Fa-f.:] */
  private static boolean isIpChar(int c) {
    return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' || c == ':';
  }

  private static boolean isDevice(Object value) {
    for (String device : DEVICES) {
      if (device.equals(value)) {
        return true;
      }
    }
    return false;
  }

  // ---- JSON --------------------------------------------------------------------------------

  /** The top-level object; records the seven fields; true when a key repeats. */
  private boolean topObject() throws NotJson {
    pos++;  // '{'
    boolean duplicate = false;
    skipWhitespace();
    if (peek() == '}') {
      pos++;
      return false;
    }
    while (true) {
      skipWhitespace();
      if (peek() != '"') {
        throw NOT_JSON;
      }
      String key = string(true);
      if (!keys.add(key)) {
        duplicate = true;
      }
      skipWhitespace();
      if (peek() != ':') {
        throw NOT_JSON;
      }
      pos++;
      skipWhitespace();
      int field = fieldIndex(key);
      if (field < 0) {
        value(1);
      } else {
        values[field] = fieldValue(field == CLICK_TS);
      }
      skipWhitespace();
      int c = peek();
      pos++;
      if (c == '}') {
        return duplicate;
      }
      if (c != ',') {
        throw NOT_JSON;
      }
    }
  }

  private static int fieldIndex(String key) {
    for (int i = 0; i < FIELDS.length; i++) {
      if (FIELDS[i].equals(key)) {
        return i;
      }
    }
    return -1;
  }

  /** A contract field's value: its String, its Long (click_ts), or OTHER for anything else. */
  private Object fieldValue(boolean integer) throws NotJson {
    int c = peek();
    if (c == '"') {
      return string(true);
    }
    if (integer && (c == '-' || (c >= '0' && c <= '9'))) {
      return number(true);
    }
    value(1);
    return OTHER;
  }

  /** Skips any JSON value at depth (the top-level object is depth 1), checking its syntax. */
  private void value(int depth) throws NotJson {
    int c = peek();
    switch (c) {
      case '"':
        string(false);
        return;
      case '{':
      case '[':
        container(depth + 1);
        return;
      case 't':
        literal("true");
        return;
      case 'f':
        literal("false");
        return;
      case 'n':
        literal("null");
        return;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          number(false);
          return;
        }
        throw NOT_JSON;
    }
  }

  private void container(int depth) throws NotJson {
    if (depth > MAX_DEPTH) {
      throw NOT_JSON;
    }
    boolean object = buf[pos] == '{';
    char close = object ? '}' : ']';
    pos++;
    skipWhitespace();
    if (peek() == close) {
      pos++;
      return;
    }
    while (true) {
      skipWhitespace();
      if (object) {
        if (peek() != '"') {
          throw NOT_JSON;
        }
        string(false);
        skipWhitespace();
        if (peek() != ':') {
          throw NOT_JSON;
        }
        pos++;
        skipWhitespace();
      }
      value(depth);
      skipWhitespace();
      int c = peek();
      pos++;
      if (c == close) {
        return;
      }
      if (c != ',') {
        throw NOT_JSON;
      }
    }
  }

  private void literal(String word) throws NotJson {
    if (end - pos < word.length()) {
      throw NOT_JSON;
    }
    for (int i = 0; i < word.length(); i++) {
      if (buf[pos + i] != word.charAt(i)) {
        throw NOT_JSON;
      }
    }
    pos += word.length();
  }

  /**
   * A JSON number. When asInteger, returns its Long value if it is an integer of at most
   * MAX_TS_DIGITS digits, else OTHER; otherwise returns null.
   */
  private Object number(boolean asInteger) throws NotJson {
    int start = pos;
    boolean negative = false;
    if (peek() == '-') {
      negative = true;
      pos++;
    }
    int digitsStart = pos;
    int c = peek();
    if (c == '0') {
      pos++;
    } else if (c >= '1' && c <= '9') {
      while (pos < end && buf[pos] >= '0' && buf[pos] <= '9') {
        pos++;
      }
    } else {
      throw NOT_JSON;
    }
    int digits = pos - digitsStart;
    boolean integer = true;
    if (pos < end && buf[pos] == '.') {
      integer = false;
      pos++;
      requireDigits();
    }
    if (pos < end && (buf[pos] == 'e' || buf[pos] == 'E')) {
      integer = false;
      pos++;
      if (pos < end && (buf[pos] == '+' || buf[pos] == '-')) {
        pos++;
      }
      requireDigits();
    }
    if (!asInteger) {
      return null;
    }
    if (!integer || digits > MAX_TS_DIGITS) {
      return OTHER;
    }
    long v = 0;
    for (int i = digitsStart; i < digitsStart + digits; i++) {
      v = v * 10 + (buf[i] - '0');
    }
    return negative ? -v : v;
  }

  private void requireDigits() throws NotJson {
    int start = pos;
    while (pos < end && buf[pos] >= '0' && buf[pos] <= '9') {
      pos++;
    }
    if (pos == start) {
      throw NOT_JSON;
    }
  }

  /**
   * A JSON string at pos (the opening quote). Validates escapes and UTF-8; returns the decoded
   * text when wanted, else null.
   */
  private String string(boolean wanted) throws NotJson {
    pos++;  // opening quote
    int start = pos;
    // Fast path: printable ASCII without escapes.
    while (pos < end) {
      int b = buf[pos] & 0xff;
      if (b == '"') {
        String s = wanted ? new String(buf, start, pos - start, StandardCharsets.ISO_8859_1)
            : null;
        pos++;
        return s;
      }
      if (b == '\\' || b < 0x20 || b >= 0x80) {
        break;
      }
      pos++;
    }
    text.setLength(0);
    if (wanted) {
      for (int i = start; i < pos; i++) {
        text.append((char) buf[i]);
      }
    }
    while (true) {
      if (pos >= end) {
        throw NOT_JSON;
      }
      int b = buf[pos] & 0xff;
      if (b == '"') {
        pos++;
        return wanted ? text.toString() : null;
      }
      if (b < 0x20) {
        throw NOT_JSON;
      }
      if (b == '\\') {
        escape();
      } else if (b < 0x80) {
        text.append((char) b);
        pos++;
      } else {
        utf8(b);
      }
    }
  }

  private void escape() throws NotJson {
    if (pos + 1 >= end) {
      throw NOT_JSON;
    }
    int c = buf[pos + 1];
    pos += 2;
    switch (c) {
      case '"': text.append('"'); return;
      case '\\': text.append('\\'); return;
      case '/': text.append('/'); return;
      case 'b': text.append('\b'); return;
      case 'f': text.append('\f'); return;
      case 'n': text.append('\n'); return;
      case 'r': text.append('\r'); return;
      case 't': text.append('\t'); return;
      case 'u':
        if (end - pos < 4) {
          throw NOT_JSON;
        }
        int v = 0;
        for (int i = 0; i < 4; i++) {
          int h = Character.digit(buf[pos + i], 16);
          if (h < 0 || buf[pos + i] > 'z') {
            throw NOT_JSON;
          }
          v = v * 16 + h;
        }
        pos += 4;
        text.append((char) v);
        return;
      default:
        throw NOT_JSON;
    }
  }

  /** One strict UTF-8 sequence starting with lead byte b (>= 0x80) at pos. */
  private void utf8(int b) throws NotJson {
    int need;
    int cp;
    int min;
    if (b >= 0xc2 && b <= 0xdf) {
      need = 1; cp = b & 0x1f; min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2; cp = b & 0x0f; min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3; cp = b & 0x07; min = 0x10000;
    } else {
      throw NOT_JSON;
    }
    if (end - pos <= need) {
      throw NOT_JSON;
    }
    for (int i = 1; i <= need; i++) {
      int cont = buf[pos + i] & 0xff;
      if ((cont & 0xc0) != 0x80) {
        throw NOT_JSON;
      }
      cp = (cp << 6) | (cont & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      throw NOT_JSON;
    }
    pos += need + 1;
    text.appendCodePoint(cp);
  }

  private void skipWhitespace() {
    while (pos < end) {
      byte b = buf[pos];
      if (b != ' ' && b != '\t' && b != '\n' && b != '\r') {
        return;
      }
      pos++;
    }
  }

  private int peek() throws NotJson {
    if (pos >= end) {
      throw NOT_JSON;
    }
    return buf[pos];
  }

  /**
   * Parity check: reads lines "now_ms base64-payload" (a lone "-" for a null payload) and
   * prints, per line, the reason or "ok" followed by the tab-separated fields.
   * Arguments: maxPayloadBytes minClickTsMs maxFutureMs, or --reasons to print REASONS, or
   * --contract to print the rules (printContract).
   */
  public static void main(String[] args) throws Exception {
    if (args.length == 1 && args[0].equals("--reasons")) {
      System.out.println(String.join(",", REASONS));
      return;
    }
    if (args.length == 1 && args[0].equals("--contract")) {
      printContract();
      return;
    }
    ClickParser parser = new ClickParser(Integer.parseInt(args[0]), Long.parseLong(args[1]),
        Long.parseLong(args[2]));
    BufferedReader in = new BufferedReader(
        new InputStreamReader(System.in, StandardCharsets.US_ASCII));
    StringBuilder out = new StringBuilder();
    String line;
    while ((line = in.readLine()) != null) {
      int space = line.indexOf(' ');
      long now = Long.parseLong(line.substring(0, space));
      String data = line.substring(space + 1);
      byte[] payload = data.equals("-") ? null : Base64.getDecoder().decode(data);
      String why = parser.parse(payload, now);
      if (why != null) {
        out.append(why);
      } else {
        out.append("ok\t").append(parser.clickId).append('\t').append(parser.adId).append('\t')
            .append(parser.clickTs).append('\t').append(parser.userId).append('\t')
            .append(parser.ip).append('\t').append(parser.country).append('\t')
            .append(parser.device);
      }
      out.append('\n');
    }
    System.out.print(out);
  }

  /**
   * The rules as this class applies them, one tab-separated line each, for the field-by-field
   * comparison with adclick/contract.py: "field NAME REASON MIN MAX CHARS" (CHARS: every char
   * the rule allows, tested over all 65,536), "time NAME", "oneof NAME VALUES", then "limits MAX_DEPTH
   * MAX_TS_DIGITS" (ClickFormatFactory's main prints the format's columns and defaults).
   */
  static void printContract() {
    StringBuilder out = new StringBuilder();
    for (int f = 0; f < RULES.length; f++) {
      Rule rule = RULES[f];
      if (f == CLICK_TS) {
        out.append("time\t").append(rule.field);
      } else if (f == DEVICE) {
        out.append("oneof\t").append(rule.field).append('\t').append(String.join(",", DEVICES));
      } else {
        StringBuilder chars = new StringBuilder();
        for (int c = 0; c <= Character.MAX_VALUE; c++) {
          if (rule.allowed.test(c)) {
            chars.append((char) c);
          }
        }
        out.append("field\t").append(rule.field).append('\t').append(rule.reason).append('\t')
            .append(rule.min).append('\t').append(rule.max).append('\t').append(chars);
      }
      out.append('\n');
    }
    out.append("limits\t").append(MAX_DEPTH).append('\t').append(MAX_TS_DIGITS).append('\n');
    System.out.print(out);
  }
}
