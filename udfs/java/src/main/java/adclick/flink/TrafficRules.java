package adclick.flink;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The general invalid-traffic rules that need no other event (issue 26), applied once per click
 * or impression in the source format: its traffic column. {@link #label} names the first that
 * holds:
 * <ul>
 *   <li>bot_user_agent: the user agent matches a pattern of the crawler-user-agents list
 *       (case-sensitive, found anywhere in it, as the list's own is_crawler does);
 *   <li>datacenter_ip: the ip lies in a cloud or hosting provider's published range
 *       (datacenter-ranges.txt, a dated snapshot);
 * </ul>
 * else null: the stateful rules decide later.
 *
 * <p>The lists are read from the class path once per JVM. Trying the list's ~1,500 patterns
 * one by one costs ~250 us a user agent, so a user agent tries only the patterns whose required
 * text shares a trigram with it (~6 us), and the answer is cached: real traffic has few
 * distinct user agents. Not thread-safe (that cache): one instance per task.
 */
public final class TrafficRules {

  public static final String BOT_USER_AGENT = "bot_user_agent";
  public static final String DATACENTER_IP = "datacenter_ip";

  static final String CRAWLERS = "/adclick/traffic/crawler-user-agents.json";
  static final String CRAWLERS_VERSION = "/adclick/traffic/crawler-user-agents.version";
  static final String RANGES = "/adclick/traffic/datacenter-ranges.txt";
  static final int CACHE_SIZE = 10_000;  // user agents; cleared when full

  private static Lists lists;

  private final Crawlers crawlers;
  private final Ranges ranges;
  private final Map<String, Boolean> bots = new HashMap<>();

  public TrafficRules() {
    Lists loaded = lists();
    this.crawlers = loaded.crawlers;
    this.ranges = loaded.ranges;
  }

  /** The event's label (BOT_USER_AGENT or DATACENTER_IP), or null; either may be null. */
  public String label(String userAgent, String ip) {
    if (userAgent != null && isBot(userAgent)) {
      return BOT_USER_AGENT;
    }
    IpAddress address = IpAddress.parse(ip);
    return address != null && ranges.contains(address.hi, address.lo) ? DATACENTER_IP : null;
  }

  private boolean isBot(String userAgent) {
    Boolean bot = bots.get(userAgent);
    if (bot == null) {
      if (bots.size() >= CACHE_SIZE) {
        bots.clear();
      }
      bot = crawlers.matches(userAgent);
      bots.put(userAgent, bot);
    }
    return bot;
  }

  /** The lists' versions: "crawler-user-agents VERSION; datacenter-ranges DATE REPO@COMMIT". */
  public static String version() {
    Lists loaded = lists();
    return "crawler-user-agents " + loaded.crawlersVersion + "; datacenter-ranges "
        + loaded.rangesVersion;
  }

  /** Loaded on first use; a failure is thrown again to every caller, not only the first. */
  static synchronized Lists lists() {
    if (lists == null) {
      lists = new Lists();
    }
    return lists;
  }

  static final class Lists {
    final Crawlers crawlers;
    final String crawlersVersion;
    final Ranges ranges;
    final String rangesVersion;

    private Lists() {
      try {
        try (InputStream in = read(CRAWLERS_VERSION)) {
          crawlersVersion = new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
        }
        crawlers = new Crawlers(patterns(read(CRAWLERS)));
        Map<String, String> header = new HashMap<>();
        ranges = new Ranges(read(RANGES), header);
        for (String key : List.of("date", "repository", "commit")) {
          if (!header.containsKey(key)) {
            throw new IllegalStateException(RANGES + ": no '# " + key + ":' header line");
          }
        }
        rangesVersion = header.get("date") + " " + header.get("repository") + "@"
            + header.get("commit");
      } catch (IOException e) {
        throw new IllegalStateException("cannot read the traffic lists: " + e, e);
      }
    }

    private static InputStream read(String resource) {
      InputStream in = TrafficRules.class.getResourceAsStream(resource);
      if (in == null) {
        throw new IllegalStateException(resource + " is not on the class path; `make jars`"
            + " copies the crawler list from the PyPI package pinned in setup.cfg");
      }
      return in;
    }

    /** The "pattern" of each entry of the crawler list (a JSON array of objects). */
    private static List<String> patterns(InputStream in) throws IOException {
      // Flink's own shaded Jackson, as its JSON format uses: the runtime always has it.
      JsonNode list;
      try (in) {
        list = new ObjectMapper().readTree(in);
      }
      if (!list.isArray() || list.isEmpty()) {
        throw new IllegalStateException(CRAWLERS + ": not a JSON array of patterns");
      }
      List<String> patterns = new ArrayList<>();
      for (JsonNode entry : list) {
        JsonNode pattern = entry.get("pattern");
        if (pattern == null || !pattern.isTextual()) {
          throw new IllegalStateException(CRAWLERS + ": an entry without a pattern: " + entry);
        }
        patterns.add(pattern.asText());
      }
      return patterns;
    }
  }

  // ---- bot_user_agent ----------------------------------------------------------------------

  /**
   * The crawler patterns, indexed by one trigram of the text each requires (see requiredText):
   * a user agent without that trigram cannot match, so only the patterns of its own trigrams
   * are tried, plus the few that require no text of three characters.
   */
  static final class Crawlers {
    final Pattern[] patterns;
    private final long[] trigrams;  // sorted
    private final int[][] byTrigram;  // per trigram, the patterns indexed by it
    private final int[] unindexed;

    Crawlers(List<String> regexes) {
      patterns = new Pattern[regexes.size()];
      String[] required = new String[patterns.length];
      Map<Long, Integer> frequency = new HashMap<>();
      for (int i = 0; i < patterns.length; i++) {
        String regex = regexes.get(i);
        try {
          patterns[i] = Pattern.compile(regex);
        } catch (PatternSyntaxException e) {
          // A pattern the list means but Java reads otherwise: the list must be looked at.
          throw new IllegalStateException(CRAWLERS + ": pattern '" + regex
              + "' is not a Java regex: " + e.getDescription(), e);
        }
        required[i] = requiredText(regex);
        Set<Long> distinct = new HashSet<>();
        for (int at = 0; at + 3 <= required[i].length(); at++) {
          distinct.add(trigram(required[i], at));
        }
        for (long t : distinct) {
          frequency.merge(t, 1, Integer::sum);
        }
      }
      // Each pattern under the trigram of its text that the fewest patterns share.
      TreeMap<Long, List<Integer>> index = new TreeMap<>();
      List<Integer> unindexed = new ArrayList<>();
      for (int i = 0; i < patterns.length; i++) {
        long best = -1;
        for (int at = 0; at + 3 <= required[i].length(); at++) {
          long t = trigram(required[i], at);
          if (best < 0 || frequency.get(t) < frequency.get(best)) {
            best = t;
          }
        }
        if (best < 0) {
          unindexed.add(i);
        } else {
          index.computeIfAbsent(best, t -> new ArrayList<>()).add(i);
        }
      }
      trigrams = new long[index.size()];
      byTrigram = new int[index.size()][];
      int k = 0;
      for (Map.Entry<Long, List<Integer>> entry : index.entrySet()) {
        trigrams[k] = entry.getKey();
        byTrigram[k++] = entry.getValue().stream().mapToInt(Integer::intValue).toArray();
      }
      this.unindexed = unindexed.stream().mapToInt(Integer::intValue).toArray();
    }

    boolean matches(String userAgent) {
      for (int at = 0; at + 3 <= userAgent.length(); at++) {
        int found = Arrays.binarySearch(trigrams, trigram(userAgent, at));
        if (found >= 0 && anyFinds(byTrigram[found], userAgent)) {
          return true;
        }
      }
      return anyFinds(unindexed, userAgent);
    }

    private boolean anyFinds(int[] which, String userAgent) {
      for (int p : which) {
        if (patterns[p].matcher(userAgent).find()) {
          return true;
        }
      }
      return false;
    }

    private static long trigram(String s, int at) {
      return ((long) s.charAt(at) << 32) | ((long) s.charAt(at + 1) << 16) | s.charAt(at + 2);
    }
  }

  private static final Pattern INLINE_FLAGS = Pattern.compile("\\(\\?[^:=!<]");
  private static final String ONE_CHAR_ESCAPES = "dDsSwWhHvVbBRXtnrfaeAGZz";

  /**
   * Text that every match of regex contains: its longest run of ASCII characters matched
   * literally, outside groups and classes, none made optional by a quantifier. "" when there is
   * none, or when regex uses what this does not model (a top-level '|', \Q quoting, inline
   * flags, a class within a class, a longer escape): such a pattern is always tried.
   */
  static String requiredText(String regex) {
    if (regex.contains("\\Q") || INLINE_FLAGS.matcher(regex).find()) {
      return "";
    }
    String best = "";
    StringBuilder run = new StringBuilder();
    int n = regex.length();
    int i = 0;
    while (i < n) {
      char c = regex.charAt(i);
      int literal = -1;
      if (c == '\\') {
        char escaped = regex.charAt(i + 1);  // compiled: a backslash is never last
        if (escaped < 0x80 && !Character.isLetterOrDigit(escaped)) {
          literal = escaped;
        } else if (ONE_CHAR_ESCAPES.indexOf(escaped) < 0) {
          return "";  // \x41, \1, \p{L}, \k<name>...: longer than one char
        }
        i += 2;
      } else if (c == '[') {
        i = afterClass(regex, i);
      } else if (c == '(') {
        i = afterGroup(regex, i);
      } else if (c == '|' || c == '?' || c == '*' || c == '+' || c == '{') {
        return "";  // an alternative, or a quantifier where an atom should be
      } else {
        literal = c < 0x80 && c != '.' && c != '^' && c != '$' ? c : -1;
        i++;
      }
      if (i < 0) {
        return "";
      }
      char quantifier = i < n ? regex.charAt(i) : 0;
      boolean optional = quantifier == '?' || quantifier == '*' || quantifier == '{';
      if (literal >= 0 && !optional) {
        run.append((char) literal);
      }
      // "ab+c" requires "ab" and "c", not "abc".
      if (literal < 0 || optional || quantifier == '+') {
        best = run.length() > best.length() ? run.toString() : best;
        run.setLength(0);
      }
      if (quantifier == '{') {
        i = regex.indexOf('}', i);
      }
      if (optional || quantifier == '+') {
        i++;
        if (i < n && (regex.charAt(i) == '?' || regex.charAt(i) == '+')) {
          i++;  // lazy or possessive
        }
      }
    }
    return run.length() > best.length() ? run.toString() : best;
  }

  /** The index after the class opening at regex[open], or -1 for a class within a class. */
  private static int afterClass(String regex, int open) {
    int i = open + 1;
    if (regex.charAt(i) == '^') {
      i++;
    }
    int first = i;
    while (true) {
      char c = regex.charAt(i);
      if (c == '\\') {
        i += 2;
      } else if (c == '[' || (c == ']' && i == first) || regex.startsWith("&&", i)) {
        return -1;
      } else if (c == ']') {
        return i + 1;
      } else {
        i++;
      }
    }
  }

  /** The index after the group opening at regex[open], or -1 (afterClass). */
  private static int afterGroup(String regex, int open) {
    int depth = 0;
    int i = open;
    do {
      char c = regex.charAt(i);
      if (c == '\\') {
        i += 2;
        continue;
      }
      if (c == '[') {
        i = afterClass(regex, i);
        if (i < 0) {
          return -1;
        }
        continue;
      }
      depth += c == '(' ? 1 : c == ')' ? -1 : 0;
      i++;
    } while (depth > 0);
    return i;
  }

  // ---- datacenter_ip -----------------------------------------------------------------------

  /** The ranges as disjoint 128-bit [start, end] intervals, sorted, for a binary search. */
  static final class Ranges {
    private final long[] startHi;
    private final long[] startLo;
    private final long[] endHi;
    private final long[] endLo;

    /** Reads "CIDR[\tPROVIDER]" lines; "# KEY: VALUE" lines go into header. */
    Ranges(InputStream in, Map<String, String> header) throws IOException {
      Pattern headerLine = Pattern.compile("# (\\w+): (.*)");
      List<long[]> ranges = new ArrayList<>();
      try (BufferedReader lines = new BufferedReader(
          new InputStreamReader(in, StandardCharsets.UTF_8))) {
        String line;
        while ((line = lines.readLine()) != null) {
          if (line.startsWith("#")) {
            Matcher m = headerLine.matcher(line);
            if (m.matches()) {
              header.put(m.group(1), m.group(2));
            }
          } else if (!line.isBlank()) {
            ranges.add(cidr(line.split("\t", 2)[0]));
          }
        }
      }
      ranges.sort((a, b) -> compare(a[0], a[1], b[0], b[1]));
      // Merged where they overlap, so the last range starting at or before an address is the
      // only one that can hold it.
      List<long[]> merged = new ArrayList<>();
      for (long[] range : ranges) {
        long[] last = merged.isEmpty() ? null : merged.get(merged.size() - 1);
        if (last != null && compare(range[0], range[1], last[2], last[3]) <= 0) {
          if (compare(range[2], range[3], last[2], last[3]) > 0) {
            last[2] = range[2];
            last[3] = range[3];
          }
        } else {
          merged.add(range);
        }
      }
      int n = merged.size();
      startHi = new long[n];
      startLo = new long[n];
      endHi = new long[n];
      endLo = new long[n];
      for (int i = 0; i < n; i++) {
        long[] range = merged.get(i);
        startHi[i] = range[0];
        startLo[i] = range[1];
        endHi[i] = range[2];
        endLo[i] = range[3];
      }
    }

    boolean contains(long hi, long lo) {
      int low = 0;
      int high = startHi.length - 1;
      int last = -1;  // the last range starting at or before the address
      while (low <= high) {
        int mid = (low + high) >>> 1;
        if (compare(startHi[mid], startLo[mid], hi, lo) <= 0) {
          last = mid;
          low = mid + 1;
        } else {
          high = mid - 1;
        }
      }
      return last >= 0 && compare(hi, lo, endHi[last], endLo[last]) <= 0;
    }

    int size() {
      return startHi.length;
    }

    /** {startHi, startLo, endHi, endLo} of an IPv4 or IPv6 CIDR (an IPv4 one as ::ffff:0:0/96). */
    private static long[] cidr(String text) {
      int slash = text.indexOf('/');
      IpAddress address = slash < 0 ? null : IpAddress.parse(text.substring(0, slash));
      int bits = -1;
      if (address != null && text.substring(slash + 1).matches("\\d{1,3}")) {
        bits = Integer.parseInt(text.substring(slash + 1));
        bits = text.indexOf(':') < 0 ? (bits <= 32 ? bits + 96 : -1) : (bits <= 128 ? bits : -1);
      }
      if (bits < 0) {
        throw new IllegalStateException(RANGES + ": not a CIDR: '" + text + "'");
      }
      int host = 128 - bits;
      long hiMask = host == 128 ? -1L : host > 64 ? (1L << (host - 64)) - 1 : 0;
      long loMask = host >= 64 ? -1L : (1L << host) - 1;
      if ((address.hi & hiMask) != 0 || (address.lo & loMask) != 0) {
        throw new IllegalStateException(RANGES + ": host bits set in '" + text + "'");
      }
      return new long[] {address.hi, address.lo, address.hi | hiMask, address.lo | loMask};
    }
  }

  /** Unsigned 128-bit order of (aHi, aLo) and (bHi, bLo). */
  private static int compare(long aHi, long aLo, long bHi, long bLo) {
    int c = Long.compareUnsigned(aHi, bHi);
    return c != 0 ? c : Long.compareUnsigned(aLo, bLo);
  }
}
