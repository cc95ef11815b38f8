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
 * The event contracts (click, impression, conversion): one pass over a payload's bytes that
 * validates it and extracts the event's fields, or names the first rule it breaks. No Flink
 * types here, so the same class backs the Flink format (EventDeserializationSchema) and the
 * parity check against the Python contracts (adclick/contract.py; tests/test_contract_parity.py
 * runs {@link #main}).
 *
 * <p>The rules, checked in this order, the first broken one naming the reason:
 * <ul>
 *   <li>oversized: more than maxPayloadBytes bytes;
 *   <li>not_json_object: not strict UTF-8, or not exactly one JSON object (RFC 8259, whitespace
 *       around it allowed; no NaN or Infinity; no escaped lone surrogate: a string with no
 *       UTF-8 form), or nested deeper than {@link #MAX_DEPTH};
 *   <li>duplicate_field: a key repeated in the top-level object (which one would count?);
 *   <li>then each field of the event's {@link Contract}, in order, by its kind:
 *       text (bad_NAME: not a string of min-max of the allowed characters), optional text
 *       (bad_NAME: present, not null, and not such a string), one of a few values (bad_NAME),
 *       event time (bad_NAME: not an integer of at most 15 digits, no fraction or exponent;
 *       NAME_too_old: before minTsMs; NAME_in_future: after now + maxFutureMs), or an
 *       optional count (bad_NAME: present, not null, and not such an integer at least 0).
 * </ul>
 * Other fields may hold any JSON value. Not thread-safe: one instance per task.
 */
public final class EventParser {

  /** How a field is checked. */
  enum Kind { TEXT, OPTIONAL_TEXT, TIME, ONE_OF, COUNT }

  /** One field's rule: its reason when broken, and what it allows. */
  static final class Rule {
    final String field;
    final Kind kind;
    final String reason;
    final int min;
    final int max;
    final IntPredicate allowed;  // TEXT, OPTIONAL_TEXT
    final String[] values;  // ONE_OF

    private Rule(String field, Kind kind, int min, int max, IntPredicate allowed,
        String[] values) {
      this.field = field;
      this.kind = kind;
      this.reason = "bad_" + field;
      this.min = min;
      this.max = max;
      this.allowed = allowed;
      this.values = values;
    }

    static Rule text(String field, int min, int max, IntPredicate allowed) {
      return new Rule(field, Kind.TEXT, min, max, allowed, null);
    }

    static Rule optionalText(String field, int min, int max, IntPredicate allowed) {
      return new Rule(field, Kind.OPTIONAL_TEXT, min, max, allowed, null);
    }

    static Rule time(String field) {
      return new Rule(field, Kind.TIME, 0, 0, null, null);
    }

    static Rule oneOf(String field, String... values) {
      return new Rule(field, Kind.ONE_OF, 0, 0, null, values);
    }

    static Rule count(String field) {
      return new Rule(field, Kind.COUNT, 0, 0, null, null);
    }
  }

  /** One event type: its fields in rule order, and the one whose value identifies an event. */
  public static final class Contract {
    public final String name;
    final Rule[] rules;
    final String[] fields;
    final int idField;
    public final String[] reasons;

    Contract(String name, String idField, Rule... rules) {
      this.name = name;
      this.rules = rules;
      this.fields = new String[rules.length];
      List<String> reasons = new ArrayList<>(
          List.of("oversized", "not_json_object", "duplicate_field"));
      int id = -1;
      for (int i = 0; i < rules.length; i++) {
        fields[i] = rules[i].field;
        id = rules[i].field.equals(idField) ? i : id;
        reasons.add(rules[i].reason);
        if (rules[i].kind == Kind.TIME) {
          reasons.add(rules[i].field + "_too_old");
          reasons.add(rules[i].field + "_in_future");
        }
      }
      this.idField = id;
      this.reasons = reasons.toArray(new String[0]);
    }

    /** The index of field name, or -1. */
    public int indexOf(String name) {
      for (int i = 0; i < fields.length; i++) {
        if (fields[i].equals(name)) {
          return i;
        }
      }
      return -1;
    }

    public int size() {
      return rules.length;
    }

    public String field(int index) {
      return fields[index];
    }

    /** Whether field index holds a number (an event time or a count), else text. */
    public boolean isNumber(int index) {
      return rules[index].kind == Kind.TIME || rules[index].kind == Kind.COUNT;
    }
  }

  // The contracts (adclick/contract.py declares the same; --contract prints them for
  // tests/test_contract_parity.py). A click and an impression share the rules of the ad and of
  // who saw or clicked it.
  private static final Rule CLICK_ID = Rule.text("click_id", 1, 64, EventParser::isIdChar);
  private static final Rule AD_ID = Rule.text("ad_id", 1, 64, EventParser::isIdChar);
  private static final Rule USER_ID = Rule.text("user_id", 1, 128, EventParser::isUserIdChar);
  private static final Rule IP = Rule.text("ip", 2, 45, EventParser::isIpChar);
  private static final Rule COUNTRY = Rule.text("country", 2, 2, EventParser::isUpper);
  private static final Rule DEVICE = Rule.oneOf("device", "mobile", "desktop", "tablet", "other");
  // Optional (not every client sends one): the bot_user_agent rule reads it (TrafficRules).
  private static final Rule USER_AGENT =
      Rule.optionalText("user_agent", 1, 512, EventParser::isPrintableAscii);

  public static final Contract CLICK = new Contract("click", "click_id",
      CLICK_ID, AD_ID, Rule.time("click_ts"), USER_ID, IP, COUNTRY, DEVICE, USER_AGENT);
  public static final Contract IMPRESSION = new Contract("impression", "impression_id",
      Rule.text("impression_id", 1, 64, EventParser::isIdChar), AD_ID, Rule.time("impression_ts"),
      USER_ID, IP, COUNTRY, DEVICE, USER_AGENT);
  public static final Contract CONVERSION = new Contract("conversion", "conversion_id",
      Rule.text("conversion_id", 1, 64, EventParser::isIdChar),
      CLICK_ID,  // the click it is attributed to
      Rule.time("conversion_ts"),
      Rule.oneOf("type", "purchase", "signup", "inquiry"),
      Rule.count("value_micros"));
  static final Contract[] CONTRACTS = {CLICK, IMPRESSION, CONVERSION};

  /** The contract of an event type by its name. */
  public static Contract contract(String name) {
    for (Contract contract : CONTRACTS) {
      if (contract.name.equals(name)) {
        return contract;
      }
    }
    throw new IllegalArgumentException("no event type '" + name + "'; there are click,"
        + " impression and conversion");
  }

  public static final int MAX_DEPTH = 64;
  static final int MAX_DIGITS = 15;  // of an integer field: an epoch-millisecond time fits

  /** Thrown (without a stack trace) when the payload is not a JSON object. */
  private static final class NotJson extends Exception {
    NotJson() {
      super("not a JSON object", null, false, false);
    }
  }

  private static final NotJson NOT_JSON = new NotJson();

  private final Contract contract;
  private final int maxPayloadBytes;
  private final long minTsMs;
  private final long maxFutureMs;

  // The result of the last parse (the values are valid when reason is null).
  public String reason;
  private final Object[] values;  // per field: String, Long, OTHER, or null (absent or null)

  // Per payload scratch state.
  private byte[] buf;
  private int pos;
  private int end;
  private final Set<String> keys = new HashSet<>();
  private final StringBuilder text = new StringBuilder();
  private static final Object OTHER = new Object();  // a present value of another JSON type

  public EventParser(Contract contract, int maxPayloadBytes, long minTsMs, long maxFutureMs) {
    this.contract = contract;
    this.maxPayloadBytes = maxPayloadBytes;
    this.minTsMs = minTsMs;
    this.maxFutureMs = maxFutureMs;
    this.values = new Object[contract.size()];
  }

  /** Parses payload (null for a Kafka tombstone); returns the reject reason, null when valid. */
  public String parse(byte[] payload, long nowMs) {
    reason = validate(payload, nowMs);
    return reason;
  }

  /** A text field's value after a valid parse; null for an absent optional text. */
  public String text(int field) {
    return (String) values[field];
  }

  /** A number field's value after a valid parse; null for an absent optional count. */
  public Long number(int field) {
    return (Long) values[field];
  }

  /** The value of the event's id field after a valid parse. */
  public String id() {
    return (String) values[contract.idField];
  }

  private String validate(byte[] payload, long nowMs) {
    for (int i = 0; i < values.length; i++) {
      values[i] = null;
    }
    if (payload == null) {
      return "not_json_object";
    }
    if (payload.length > maxPayloadBytes) {
      return "oversized";
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
    Rule[] rules = contract.rules;
    for (int f = 0; f < rules.length; f++) {
      Rule rule = rules[f];
      Object value = values[f];
      switch (rule.kind) {
        case TEXT:
          if (!isStringOf(value, rule)) {
            return rule.reason;
          }
          break;
        case OPTIONAL_TEXT:
          if (value != null && !isStringOf(value, rule)) {
            return rule.reason;
          }
          break;
        case ONE_OF:
          if (!isOneOf(value, rule.values)) {
            return rule.reason;
          }
          break;
        case COUNT:
          if (value != null && !(value instanceof Long && (Long) value >= 0)) {
            return rule.reason;
          }
          break;
        default:  // TIME
          if (!(value instanceof Long)) {
            return rule.reason;
          }
          long ts = (Long) value;
          if (ts < minTsMs) {
            return rule.field + "_too_old";
          }
          if (ts > nowMs + maxFutureMs) {
            return rule.field + "_in_future";
          }
      }
    }
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

  private static boolean isOneOf(Object value, String[] allowed) {
    for (String one : allowed) {
      if (one.equals(value)) {
        return true;
      }
    }
    return false;
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

  /** [\x20-\x7E] */
  private static boolean isPrintableAscii(int c) {
    return c >= 0x20 && c <= 0x7e;
  }

  /** [0-9A-Fa-f.:] */
  private static boolean isIpChar(int c) {
    return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' || c == ':';
  }

  // ---- JSON --------------------------------------------------------------------------------

  /** The top-level object; records the contract's fields; true when a key repeats. */
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
      int field = contract.indexOf(key);
      if (field < 0) {
        value(1);
      } else {
        values[field] = fieldValue(contract.isNumber(field));
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

  /**
   * A contract field's value: its String, its Long (a number field), null for a JSON null (as
   * if absent), or OTHER for anything else.
   */
  private Object fieldValue(boolean integer) throws NotJson {
    int c = peek();
    if (c == '"') {
      return string(true);
    }
    if (c == 'n') {
      literal("null");
      return null;
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
   * MAX_DIGITS digits, else OTHER; otherwise returns null.
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
    if (!integer || digits > MAX_DIGITS) {
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
        int v = hex4();
        if (Character.isLowSurrogate((char) v)) {
          throw NOT_JSON;
        }
        if (Character.isHighSurrogate((char) v)) {
          // Only as the first half of a pair, the second escaped right after it.
          if (end - pos < 2 || buf[pos] != '\\' || buf[pos + 1] != 'u') {
            throw NOT_JSON;
          }
          pos += 2;
          int low = hex4();
          if (!Character.isLowSurrogate((char) low)) {
            throw NOT_JSON;
          }
          text.append((char) v);
          v = low;
        }
        text.append((char) v);
        return;
      default:
        throw NOT_JSON;
    }
  }

  /** The four hex digits of a unicode escape at pos, as a UTF-16 unit. */
  private int hex4() throws NotJson {
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
    return v;
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
   * Parity check: EVENT (click, impression or conversion) then maxPayloadBytes minTsMs
   * maxFutureMs; reads lines "now_ms base64-payload" (a lone "-" for a null payload) and prints,
   * per line, the reason or "ok" followed by the tab-separated fields ("-" for an absent one).
   * Or EVENT --reasons to print its reasons, or EVENT --contract to print its rules
   * (printContract).
   */
  public static void main(String[] args) throws Exception {
    Contract contract = contract(args[0]);
    if (args.length == 2 && args[1].equals("--reasons")) {
      System.out.println(String.join(",", contract.reasons));
      return;
    }
    if (args.length == 2 && args[1].equals("--contract")) {
      printContract(contract);
      return;
    }
    EventParser parser = new EventParser(contract, Integer.parseInt(args[1]),
        Long.parseLong(args[2]), Long.parseLong(args[3]));
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
        out.append("ok");
        for (Object value : parser.values) {
          out.append('\t').append(value == null ? "-" : value);
        }
      }
      out.append('\n');
    }
    System.out.print(out);
  }

  /**
   * The rules as this class applies them, one tab-separated line each, for the field-by-field
   * comparison with adclick/contract.py: "text NAME REASON MIN MAX CHARS" (CHARS: every char
   * the rule allows, tested over all 65,536), "optionaltext NAME REASON MIN MAX CHARS" (the
   * same), "time NAME", "oneof NAME VALUES", "count NAME",
   * then "id NAME" and "limits MAX_DEPTH MAX_DIGITS" (EventFormatFactory's main prints the
   * format's columns and defaults).
   */
  static void printContract(Contract contract) {
    StringBuilder out = new StringBuilder();
    for (Rule rule : contract.rules) {
      out.append(rule.kind.name().toLowerCase().replace("_", "")).append('\t').append(rule.field);
      if (rule.kind == Kind.ONE_OF) {
        out.append('\t').append(String.join(",", rule.values));
      } else if (rule.kind == Kind.TEXT || rule.kind == Kind.OPTIONAL_TEXT) {
        StringBuilder chars = new StringBuilder();
        for (int c = 0; c <= Character.MAX_VALUE; c++) {
          if (rule.allowed.test(c)) {
            chars.append((char) c);
          }
        }
        out.append('\t').append(rule.reason).append('\t').append(rule.min).append('\t')
            .append(rule.max).append('\t').append(chars);
      }
      out.append('\n');
    }
    out.append("id\t").append(contract.fields[contract.idField]).append('\n');
    out.append("limits\t").append(MAX_DEPTH).append('\t').append(MAX_DIGITS).append('\n');
    System.out.print(out);
  }
}
