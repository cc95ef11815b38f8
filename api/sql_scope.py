"""What POST /v1/sql may read: the data tables, never the API's keys or the machine's files.

readonly=1 (api.db) stops writes and setting changes, but a readonly session still reads every
table of the engine, and with the embedded store that engine also holds `api_keys` (hashes and
names). The embedded engine has no users to grant per table, so the statement is checked
before it runs, on the engine's own parse of it (`EXPLAIN AST`, which parses and evaluates
nothing): every table it names, every table function and a few functions that read outside
the data. Whatever is not allowed here is refused, so a new kind of statement or table
function stays closed until someone opens it on purpose.

Refused (403): the tables in PRIVATE_TABLES under any name or database, other databases than
the API's, system tables outside SYSTEM_TABLES (system.processes shows other sessions'
queries), table functions outside TABLE_FUNCTIONS (merge() and mergeTreeIndex() read tables
by pattern, file() the disk) and the functions in FUNCTIONS_DENIED. Statements that are not
reads (400) are refused here too, the engine's readonly behind it.
"""

from clickhouse_connect.driver.exceptions import DatabaseError

from api.errors import ApiError
from api.errors import clickhouse_error_name

PRIVATE_TABLES = frozenset({"api_keys"})
# Metadata and generators: nothing in them shows another session's statements or data.
SYSTEM_TABLES = frozenset({
    "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "databases", "tables", "columns",
    "parts", "functions", "table_functions", "data_type_families", "time_zones", "formats",
})
TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generaterandom", "generate_series",
    "generateseries", "null",
})
FUNCTIONS_DENIED = frozenset({"file", "joinget", "joingetornull"})
# The parse's root node for each kind of statement that only reads. SHOW COLUMNS is not among
# them: EXPLAIN AST does not print its WHERE clause, so what it reads cannot be checked.
READ_STATEMENTS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "DescribeQuery", "Explain",
    "ExistsTableQuery", "ShowCreateTableQuery", "ShowTables",
})


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


def _table_refusal(name, database, is_table=True):
    """Why a name may not be read; a plain Identifier (is_table False) may be alias.column."""
    parts = name.split(".")
    table = parts[-1]
    if table in PRIVATE_TABLES:
        return f"table {table} is not readable through /v1/sql"
    if len(parts) >= 2 and parts[0] == "system":
        if table not in SYSTEM_TABLES:
            return (f"system.{table} is not readable through /v1/sql (system tables allowed:"
                    f" {', '.join(sorted(SYSTEM_TABLES))})")
        return None
    if is_table and len(parts) >= 2 and parts[0] != database:
        return f"only the tables of database {database} are readable through /v1/sql"
    return None


def refusal(tree, database):
    """Why the parsed statement may not run, or None."""
    statements = [node for node in tree.children if node.kind != "Identifier"]
    kind = statements[0].kind if statements else "?"
    if kind not in READ_STATEMENTS:
        return 400, (f"only statements that read can run here (SELECT, DESCRIBE, EXPLAIN,"
                     f" SHOW TABLES, SHOW CREATE TABLE, EXISTS); this one is {kind}")
    for node in tree.walk():
        if node.kind in ("TableIdentifier", "Identifier", "ExistsTableQuery",
                         "ShowCreateTableQuery"):
            reason = node.argument and _table_refusal(node.argument, database,
                                                      is_table=node.kind != "Identifier")
            if reason:
                return 403, reason
        if node.kind == "TableExpression":
            for child in node.children:
                name = child.argument.lower()
                if child.kind == "Function" and name not in TABLE_FUNCTIONS:
                    return 403, (f"table function {child.argument} is not allowed through"
                                 f" /v1/sql (allowed: {', '.join(sorted(TABLE_FUNCTIONS))})")
        if node.kind == "Function" and node.argument.lower() in FUNCTIONS_DENIED:
            return 403, f"function {node.argument} is not allowed through /v1/sql"
    return None


def check(client, statement, database):
    """Raise ApiError unless statement only reads what /v1/sql may read."""
    try:
        lines = [row[0] for row in client.query(f"EXPLAIN AST\n{statement}").result_rows]
    except DatabaseError as error:
        # A syntax error's position counts "EXPLAIN AST" too; its line number is one more.
        message = str(error).split(" (version ")[0].strip()[:2000]
        raise ApiError(f"ClickHouse refused the query ({clickhouse_error_name(error)}):"
                       f" {message}") from None
    found = refusal(parse_explain_ast(lines), database)
    if found is not None:
        status, message = found
        raise ApiError(message, status)
