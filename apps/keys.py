"""`adclick keys` and `adclick ads`: manage API keys and the ads dimension.

    adclick keys create NAME --role admin|reader|advertiser:<id> [--expires-in 30d]
    adclick keys list [--revoked] [--format json]
    adclick keys revoke NAME_OR_ID
    adclick keys expire NAME_OR_ID [--at 2026-12-31T00:00:00Z]
    adclick ads load FILE        (apps.ads: CSV with the header ad_id,advertiser_id,name)

By default these go through the running `adclick serve` (its /v1/admin API, with an admin key:
--api-key, ADCLICK_API_KEY or the demo's key), since that process owns the embedded store.
With --clickhouse-url they work on the store directly: a ClickHouse server, or an embedded
path that no running process holds (to make the first admin key before any server starts).
A key is printed once, when created; `list` shows id, name, role, created, expiry and last use.

Exit status: 0 on success, 1 if refused (the reason on stderr), 2 on a usage error.
"""

import argparse
import json
import re
import sys
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import requests

from adclick import access
from adclick import sql_client
from adclick import store

DURATION = re.compile(r"^([0-9]{1,6})([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
ADS_PER_REQUEST = 10_000


Refused = sql_client.Refused  # the store or the API refused; the message says why

class Direct:
    """Keys and ads on the store itself."""

    def __init__(self, url, database):
        self.client = store.connect(url)
        self.database = store.check_identifier(database)
        store.apply_schema(self.client, self.database)

    def _call(self, function, *args):
        try:
            return function(self.client, self.database, *args)
        except access.AccessError as error:
            raise Refused(str(error)) from None

    def create(self, name, role, expires_at):
        key, record = self._call(access.create_key, name, role, expires_at)
        return {"key": key, **record.public()}

    def list(self, revoked):
        return [key.public() for key in access.keys(self.client, self.database, revoked)]

    def revoke(self, name_or_id):
        return {**self._call(access.revoke_key, name_or_id).public(), "revoked": True}

    def expire(self, name_or_id, at):
        return self._call(access.expire_key, name_or_id, at).public()

    def load_ads(self, rows):
        return self._call(access.load_ads, rows)


class Api:
    """Keys and ads through the running server's /v1/admin API."""

    def __init__(self, api_url, api_key, timeout):
        self.base = api_url.rstrip("/") + "/v1/admin"
        self.api_key, self.timeout = api_key, timeout

    def _call(self, method, path, **kwargs):
        return sql_client.call_api(
            method, self.base + path, self.api_key, self.timeout,
            {401: " (give an admin key: --api-key or ADCLICK_API_KEY)",
             403: " (this needs an admin key)"}, **kwargs)

    def create(self, name, role, expires_at):
        body = {"name": name, "role": role}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat().replace("+00:00", "Z")
        return self._call("POST", "/keys", json=body)

    def list(self, revoked):
        return self._call("GET", "/keys", params={"revoked": "true" if revoked else "false"}
                          )["keys"]

    def revoke(self, name_or_id):
        return self._call("POST", f"/keys/{requests.utils.quote(name_or_id, safe='')}/revoke")

    def expire(self, name_or_id, at):
        body = {"at": at.isoformat().replace("+00:00", "Z")} if at else None
        return self._call("POST", f"/keys/{requests.utils.quote(name_or_id, safe='')}/expire",
                          json=body)

    def load_ads(self, rows):
        stored = 0
        for first in range(0, len(rows), ADS_PER_REQUEST):
            batch = [dict(zip(access.AD_COLUMNS, row))
                     for row in rows[first:first + ADS_PER_REQUEST]]
            stored += self._call("POST", "/ads", json={"ads": batch})["stored"]
        return stored


def duration(text):
    match = DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number and s, m, h or d (30d)")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def moment(text):
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: say the zone (Z for UTC)")
    return value.astimezone(timezone.utc)


def connection_of(args):
    if args.clickhouse_url:
        return Direct(args.clickhouse_url, args.database)
    return Api(args.api_url, args.api_key, args.timeout)


def _print_keys(keys, out):
    columns = ("id", "name", "role", "created_at", "expires_at", "last_used_at", "state")
    rows = [[key["id"], key["name"], key["role"], key["created_at"] or "-",
             key["expires_at"] or "never", key["last_used_at"] or "never",
             "revoked" if key["revoked"] else "expired" if key["expired"] else "live"]
            for key in keys]
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    for row in (columns, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip(),
              file=out)


def parser():
    main = argparse.ArgumentParser(prog="adclick keys", description=__doc__.split("\n")[0])
    sql_client.add_connection_arguments(main)
    commands = main.add_subparsers(dest="command", required=True, metavar="command")
    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name")
    create.add_argument("--role", required=True, help="admin, reader or advertiser:<id>")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=duration, help="e.g. 90d, 12h")
    expiry.add_argument("--expires-at", type=moment, help="e.g. 2026-12-31T00:00:00Z")
    listing = commands.add_parser("list", help="list the keys (never the keys themselves)")
    listing.add_argument("--revoked", action="store_true", help="revoked keys too")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    revoke = commands.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("name_or_id")
    expire = commands.add_parser("expire", help="end a key's life now or --at a time")
    expire.add_argument("name_or_id")
    expire.add_argument("--at", type=moment)
    return main


def main(argv=None, out=sys.stdout):
    args = parser().parse_args(argv)
    try:
        connection = connection_of(args)
        if args.command == "create":
            expires_at = args.expires_at or (
                datetime.now(timezone.utc) + args.expires_in if args.expires_in else None)
            created = connection.create(args.name, args.role, expires_at)
            print(created.pop("key"), file=out)
            print(f"created {created['id']} ({created['name']}, {created['role']}, expires"
                  f" {created['expires_at'] or 'never'}); the key is shown only now",
                  file=sys.stderr)
        elif args.command == "list":
            keys = connection.list(args.revoked)
            if args.format == "json":
                print(json.dumps(keys, indent=2), file=out)
            else:
                _print_keys(keys, out)
        elif args.command == "revoke":
            key = connection.revoke(args.name_or_id)
            print(f"revoked {key['id']} ({key['name']})", file=out)
        else:
            key = connection.expire(args.name_or_id, args.at)
            print(f"{key['id']} ({key['name']}) expires {key['expires_at']}", file=out)
    except Refused as error:
        print(f"adclick keys: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
