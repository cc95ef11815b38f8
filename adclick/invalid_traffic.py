"""The invalid-traffic rules in Python: what the job labels each counted click and impression,
for the generator's truth, tests and checks.

The job decides the labels in the JVM (udfs/java/.../TrafficRules.java for the rules of one
event, ClickLabelOperator.java for those of the ad's other clicks; sql/flink/25_*.sql says
them). This is the same rule set, written a second time on purpose, as the reconciliation is a
second count: a test that compares the two is then a real check. The lists are the job's: the
crawler patterns of the pinned `crawler-user-agents` package, the data-center ranges of the
snapshot the job's jar carries.

Labels, first match in this order (config.TRAFFIC_REASONS): bot_user_agent, datacenter_ip,
repeat_click (the same user clicked the same ad less than the repeat window before),
ip_frequency (the ip key made the threshold's number of clicks or more on the ad in the window
before); else valid. "Before" orders clicks by (click_ts, click_id).
"""

import bisect
import functools
import ipaddress
import json
import re
from importlib import metadata
from importlib import resources
from pathlib import Path

from adclick import config
from adclick import contract

DATACENTER_RANGES = (Path(__file__).resolve().parent.parent / "udfs" / "java" / "src" / "main"
                     / "resources" / "adclick" / "traffic" / "datacenter-ranges.txt")


@functools.lru_cache(maxsize=1)
def crawler_list():
    """The crawler-user-agents package's entries: each a pattern and example user agents."""
    text = resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text()
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _crawler_pattern():
    return re.compile("|".join(f"(?:{entry['pattern']})" for entry in crawler_list()))


@functools.lru_cache(maxsize=1)
def crawler_examples():
    """The list's example user agents that an event may carry (adclick.contract's rule)."""
    field = contract.CLICK.field("user_agent")
    return tuple(example for entry in crawler_list() for example in entry["instances"]
                 if field.check(example, 0) is None)


def crawler_list_version():
    return metadata.version("crawler-user-agents")


@functools.lru_cache(maxsize=65_536)  # real traffic has few distinct user agents
def is_crawler(user_agent):
    """Whether user_agent matches a pattern of the crawler list (None: no user agent)."""
    return user_agent is not None and _crawler_pattern().search(user_agent) is not None


@functools.lru_cache(maxsize=1)
def datacenter_ranges():
    """{4: [(first, last)], 6: [(first, last)]}: the snapshot's ranges as sorted integers,
    overlaps merged; and the snapshot's header as a dict (its source and date)."""
    spans = {4: [], 6: []}
    header = {}
    for line in DATACENTER_RANGES.read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            if value and " " not in key.strip():
                header[key.strip()] = value.strip()
            continue
        if line.strip():
            network = ipaddress.ip_network(line.split("\t")[0])
            spans[network.version].append((int(network.network_address),
                                           int(network.broadcast_address)))
    merged = {}
    for version, ranges in spans.items():
        merged[version] = []
        for first, last in sorted(ranges):
            if merged[version] and first <= merged[version][-1][1] + 1:
                merged[version][-1] = (merged[version][-1][0], max(last, merged[version][-1][1]))
            else:
                merged[version].append((first, last))
    return merged, header


def parse_ip(ip):
    """The address ip spells (an IPv4-mapped IPv6 one as IPv4), or None: the contract only
    bounds its characters."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_datacenter(ip):
    address = parse_ip(ip)
    if address is None:
        return False
    ranges = datacenter_ranges()[0][address.version]
    value = int(address)
    at = bisect.bisect_right(ranges, (value, float("inf"))) - 1
    return at >= 0 and ranges[at][0] <= value <= ranges[at][1]


def ip_key(ip):
    """What ip_frequency counts by: the IPv4 address, the /64 of an IPv6 one, else the text."""
    address = parse_ip(ip)
    if address is None:
        return "?" + ip.lower()
    if address.version == 4:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


def rules_version(repeat_ms=config.REPEAT_CLICK_WINDOW_SECONDS * 1000,
                  ip_window_ms=config.IP_FREQUENCY_WINDOW_SECONDS * 1000,
                  ip_threshold=config.IP_FREQUENCY_THRESHOLD):
    """What the job records with each closed minute (TrafficRulesVersion.java): the lists'
    versions and the thresholds."""
    header = datacenter_ranges()[1]
    return (f"crawler-user-agents {crawler_list_version()}; datacenter-ranges {header['date']} "
            f"{header['repository']}@{header['commit']}; repeat_click < {repeat_ms} ms; "
            f"ip_frequency >= {ip_threshold} in {ip_window_ms} ms")


def event_label(user_agent, ip):
    """The label an event gets from itself alone: bot_user_agent, datacenter_ip, or None."""
    if is_crawler(user_agent):
        return "bot_user_agent"
    if is_datacenter(ip):
        return "datacenter_ip"
    return None


def click_labels(clicks, repeat_ms=config.REPEAT_CLICK_WINDOW_SECONDS * 1000,
                 ip_window_ms=config.IP_FREQUENCY_WINDOW_SECONDS * 1000,
                 ip_threshold=config.IP_FREQUENCY_THRESHOLD):
    """{click_id: label} of the counted clicks (Click tuples, one per click_id), each labelled
    against all the others of its ad."""
    by_ad = {}
    for click in clicks:
        by_ad.setdefault(click.ad_id, []).append(click)
    labels = {}
    for ad_clicks in by_ad.values():
        ad_clicks.sort(key=lambda click: (click.click_ts, click.click_id))
        last_by_user = {}  # the newest earlier click_ts of each user
        by_key = {}  # the earlier click_ts of each ip key, oldest first
        for click in ad_clicks:
            key = ip_key(click.ip)
            times = by_key.setdefault(key, [])
            recent = len(times) - bisect.bisect_right(times, click.click_ts - ip_window_ms)
            previous = last_by_user.get(click.user_id)
            label = event_label(click.user_agent, click.ip)
            if label is None:
                if previous is not None and click.click_ts - previous < repeat_ms:
                    label = "repeat_click"
                elif recent >= ip_threshold:
                    label = "ip_frequency"
                else:
                    label = "valid"
            labels[click.click_id] = label
            last_by_user[click.user_id] = click.click_ts
            times.append(click.click_ts)
    return labels
