"""What POST /v1/sql may run: one SELECT (or DESCRIBE) over the data tables, nothing else.

Everything here is an allow-list, checked on the engine's own parse, never on the user's text:

1. The statement is parsed, and only parsed, by `formatQuerySingleLine`, with the text bound as
   a parameter: a syntax error is the engine's, and what comes back is the statement's
   canonical form (no comments, one quoting of strings and names). That canonical text is what
   is checked and what runs, so what ran is what was checked.
2. Its root must be a SELECT (with UNION, INTERSECT, EXCEPT, WITH) or a DESCRIBE, with no
   output clause: no INTO OUTFILE, no FORMAT, no SETTINGS (which could lift the session's
   limits). The embedded engine (chdb) writes INTO OUTFILE's file itself, as clickhouse-local
   does, whatever the session's readonly says; a ClickHouse server refuses it over HTTP.
3. Every node of `EXPLAIN AST` must be of a kind in NODE_KINDS, every table one of DATA_TABLES
   in the API's database, every table function one of TABLE_FUNCTIONS, every function one the
   engine files under a category in FUNCTION_CATEGORIES (or one of FUNCTIONS_ALLOWED), and no
   name may reach another database or a table outside DATA_TABLES.

Running EXPLAIN AST on the user's text would itself be a hole: `EXPLAIN AST SELECT 1 FORMAT CSV
INTO OUTFILE '/x'` parses the INTO OUTFILE as the EXPLAIN's own and the engine writes the file.
So EXPLAIN runs only on the canonical text of a statement that parsed alone (where the
statement's own parser takes every output clause), and only if that text has no OUTFILE word
outside its literals at all.

Behind this the session is readonly=1 with time, memory and row limits (api.db.Store); on a
ClickHouse server a user granted SELECT on the data tables only is the engine's own boundary
(docs/OPERATIONS.md).
"""

import re
import threading
import weakref

from clickhouse_connect.driver.exceptions import DatabaseError

from api.errors import ApiError
from api.errors import refused_by_engine

# The tables a user may read: the pipeline's data. Not the API's keys or key usage, not the raw
# tables' input and rules (plumbing of the loader), not system tables or other databases.
# tests/test_sql_scope.py requires every table of the schema to be in DATA_TABLES or in
# PRIVATE_TABLES, so a new table stays closed until someone decides.
DATA_TABLES = frozenset({
    "ad_click_counts", "top_ads_minute", "late_clicks", "late_impressions", "dead_letters",
    "conversions", "conversion_attributions", "unattributed_conversions", "raw_clicks",
    "raw_impressions", "raw_conversions", "ad_counts_hourly", "ad_counts_hourly_state", "ads",
    "minutes_closed",
    "loader_rejects", "recalculations", "recalculated_attributions", "recalculated_top_ads",
    "recalculations_in_force", "published_click_counts", "published_attributions",
    "published_top_ads_minute",
})
PRIVATE_TABLES = frozenset({
    "api_keys", "api_key_usage", "raw_clicks_input", "raw_impressions_input",
    "raw_conversions_input", "raw_clicks_rules", "raw_impressions_rules", "raw_conversions_rules",
})
# Generators of rows, reading nothing.
TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generaterandom", "generate_series",
    "generateseries", "null",
})
# The parse's node kinds of a query that reads: expressions, joins, windows, subqueries.
NODE_KINDS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "DescribeQuery",
    "ExpressionList", "Identifier", "Function", "Literal", "Asterisk", "QualifiedAsterisk",
    "TablesInSelectQuery", "TablesInSelectQueryElement", "TableExpression", "TableIdentifier",
    "TableJoin", "ArrayJoin", "Subquery", "WithElement", "OrderByElement", "SampleRatio",
    "WindowDefinition", "WindowListElement", "InterpolateElement", "ColumnsRegexpMatcher",
    "ColumnsListMatcher", "QualifiedColumnsRegexpMatcher", "QualifiedColumnsListMatcher",
    "ColumnsTransformerList", "ColumnsExceptTransformer", "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformerReplacement",
})
ROOT_KINDS = {"SelectWithUnionQuery": "ExpressionList", "DescribeQuery": "TableExpression"}
# The categories of system.functions that compute on values only. Left out: Other (it holds
# file(), joinGet(), server settings), Dictionary and Embedded Dictionary (other data),
# Introspection, Machine Learning (model files), AI (calls out), Internal.
FUNCTION_CATEGORIES = frozenset({
    "Aggregate Functions", "Type Conversion", "Dates and Times", "Arrays", "String", "Geo",
    "Hash", "String Search", "JSON", "Mathematical", "URL", "Arithmetic", "Geo Polygon", "Map",
    "Comparison", "IP Address", "Tuple", "Time Series", "Distance", "Bitmap", "Random Number",
    "Encoding", "UUID", "Bit", "String Splitting", "String Replacement", "Null", "Rounding",
    "Time Window", "Conditional", "Logical", "Financial", "Encryption", "NumericIndexedVector",
})
# Functions of the parse itself (lambda, IN, EXISTS) and harmless ones filed under Other.
FUNCTIONS_ALLOWED = frozenset({
    "lambda", "in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "exists",
    "materialize", "ignore", "identity", "toTypeName", "toColumnTypeName", "isConstant", "bar",
    "transform", "formatReadableSize", "formatReadableDecimalSize", "formatReadableQuantity",
    "formatReadableTimeDelta", "parseReadableSize", "countDigits", "currentDatabase",
    "version", "runningDifference", "runningDifferenceStartingWithFirstValue", "neighbor",
    "rowNumberInAllBlocks", "finalizeAggregation", "initializeAggregation", "throwIf",
})
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
NOT_A_SELECT = "only one SELECT (or DESCRIBE TABLE) can run here"


class Node:
    """One line of EXPLAIN AST: its kind ('TableIdentifier'), its argument and children."""

    def __init__(self, kind, argument):
        self.kind = kind
        self.argument = argument
        self.children = []

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def parse_explain_ast(lines):
    """The tree of EXPLAIN AST's lines (one space of indent per level)."""
    root = Node("Root", "")
    stack = [(-1, root)]
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        text = line.strip()
        if not text:
            continue
        kind, _, rest = text.partition(" ")
        # "TableIdentifier t1.x (alias a)", "Function in (children 1)": the first word after
        # the kind is the name; alias and child counts follow in parentheses.
        argument = "" if rest.startswith("(") else rest.split(" (")[0].strip()
        node = Node(kind, argument)
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    return root


def bare_words(canonical):
    """The words of a canonical statement outside its literals and quoted names, upper-cased.

    The canonical form quotes strings with '...' and backslash escapes, and names with `...`
    or "..." when they need it; it has no comments.
    """
    words, i, n = [], 0, len(canonical)
    while i < n:
        c = canonical[i]
        if c in "'`\"":
            j = i + 1
            while j < n and canonical[j] != c:
                j += 2 if canonical[j] == "\\" else 1
            i = j + 1
        else:
            match = WORD.match(canonical, i)
            if match:
                words.append(match.group(0).upper())
                i = match.end()
            else:
                i += 1
    return words


class Functions:
    """Which functions the engine files under an allowed category (from system.functions)."""

    COMBINATORS = ("SimpleState", "OrDefault", "Distinct", "Resample", "ForEach", "ArgMax",
                   "ArgMin", "OrNull", "MergeState", "Merge", "State", "Array", "Tuple", "Null",
                   "Map", "If")

    def __init__(self, rows):
        self.allowed, self.aggregates, self.insensitive = set(FUNCTIONS_ALLOWED), set(), {}
        for name, categories, is_aggregate, alias_to, case_insensitive in rows:
            if case_insensitive:
                self.insensitive[name.lower()] = name
        by_name = {row[0]: row for row in rows}
        for name, categories, is_aggregate, alias_to, _ in rows:
            target = by_name.get(alias_to, (name, categories, is_aggregate))
            if target[2]:
                self.aggregates.add(name)
            if target[2] or target[1] in FUNCTION_CATEGORIES:
                self.allowed.add(name)

    def _canonical(self, name):
        return name if name in self.allowed else self.insensitive.get(name.lower(), name)

    def _aggregate(self, name):
        """An aggregate function, maybe with combinators (sumIf, uniqMergeState)."""
        name = self._canonical(name)
        return name in self.aggregates or any(
            name.endswith(suffix) and len(name) > len(suffix)
            and self._aggregate(name[:-len(suffix)]) for suffix in self.COMBINATORS)

    def allows(self, name):
        return self._canonical(name) in self.allowed or self._aggregate(name)


class Catalog:
    """What names mean in the engine: its databases, the API database's tables, its functions."""

    # The databases and the API database's tables, in one query per statement checked.
    NAMES = """
SELECT 'database', name FROM system.databases
UNION ALL
SELECT 'table', name FROM system.tables WHERE database = {db:String}
"""
    FUNCTIONS = ("SELECT name, categories, is_aggregate, alias_to, case_insensitive"
                 " FROM system.functions")
    _lock = threading.Lock()
    _functions = weakref.WeakKeyDictionary()  # client -> Functions: fixed per engine

    def __init__(self, client, database):
        self.database = database
        self.databases, self.tables = set(), set()
        for kind, name in client.query(self.NAMES, parameters={"db": database}).result_rows:
            (self.databases if kind == "database" else self.tables).add(name)
        with self._lock:
            if client not in self._functions:
                self._functions[client] = Functions(client.query(self.FUNCTIONS).result_rows)
            self.functions = self._functions[client]

    def table_refusal(self, name):
        """Why a table name may not be read. An unqualified name that is no table of the
        database is a WITH clause's (or unknown, which the engine says)."""
        database, _, table = name.rpartition(".")
        if database and database != self.database:
            return f"only the tables of database {self.database} are readable through /v1/sql"
        if (database or table in self.tables) and table not in DATA_TABLES:
            return (f"table {table} is not readable through /v1/sql (readable: "
                    f"{', '.join(sorted(DATA_TABLES))})")
        return None

    def name_refusal(self, name):
        """Why a plain name (a column, alias.column, or a table after IN) may not be read."""
        parts = name.split(".")
        if len(parts) >= 2 and parts[0] in self.databases:
            return self.table_refusal(".".join(parts[:2]))
        if parts[0] in self.tables and parts[0] not in DATA_TABLES:
            return self.table_refusal(parts[0])
        return None


def refusal(tree, catalog):
    """(status, reason) why the parsed statement may not run, or None."""
    statements = tree.children
    root = statements[0] if len(statements) == 1 else None
    if root is None or root.kind not in ROOT_KINDS:
        return 400, f"{NOT_A_SELECT}; this is {statements[0].kind if statements else '?'}"
    body = root.children[0] if root.children else None
    # The client's own FORMAT Native follows the statement; any other clause is the user's.
    extra = [child for child in root.children[1:]
             if not (child.kind == "Identifier" and child.argument == "Native")]
    if body is None or body.kind != ROOT_KINDS[root.kind] or extra:
        return 403, ("no INTO OUTFILE, FORMAT or SETTINGS clause can run here: the result comes"
                     " back as JSON, under the API's limits")
    table_functions = set()  # a table function's node is checked as one, not as a function
    for node in root.walk():
        if node.kind not in NODE_KINDS:
            return 403, f"{node.kind} is not allowed through /v1/sql"
        reason = None
        if node.kind == "TableIdentifier" and node.argument:
            reason = catalog.table_refusal(node.argument)
        elif node.kind == "Identifier" and node.argument:
            reason = catalog.name_refusal(node.argument)
        elif node.kind == "TableExpression":
            for child in node.children:
                if child.kind == "Function":
                    table_functions.add(id(child))
                if child.kind == "Function" and child.argument.lower() not in TABLE_FUNCTIONS:
                    reason = (f"table function {child.argument} is not allowed through /v1/sql"
                              f" (allowed: {', '.join(sorted(TABLE_FUNCTIONS))})")
        elif (node.kind == "Function" and id(node) not in table_functions
              and not catalog.functions.allows(node.argument)):
            reason = f"function {node.argument} is not allowed through /v1/sql"
        if reason:
            return 403, reason
    return None


def check(client, statement, database):
    """The canonical text of statement if it only reads what /v1/sql may read, which is what
    must run; ApiError otherwise."""
    try:
        canonical = client.query("SELECT formatQuerySingleLine({statement:String})",
                                 parameters={"statement": statement}).result_rows[0][0]
    except DatabaseError as error:
        raise refused_by_engine(error) from None
    words = bare_words(canonical)
    if "OUTFILE" in words:
        raise ApiError("no INTO OUTFILE clause can run here: the result comes back as JSON", 403)
    if not words or words[0] not in ("SELECT", "WITH", "DESCRIBE"):
        raise ApiError(f"{NOT_A_SELECT}; this starts with {words[0] if words else '?'}", 400)
    try:
        lines = [row[0] for row in client.query(f"EXPLAIN AST\n{canonical}").result_rows]
        catalog = Catalog(client, database)
    except DatabaseError as error:
        raise refused_by_engine(error) from None
    found = refusal(parse_explain_ast(lines), catalog)
    if found is not None:
        status, message = found
        raise ApiError(message, status)
    return canonical
