"""adclick.invalid_traffic, the rules written again in Python for the generator's truth and the
tests: its boundaries, and the data-center snapshot both it and the job read."""

import ipaddress

from adclick import invalid_traffic
from adclick.contract import Click
from adclick.invalid_traffic import click_labels

T = 1_800_000_000_000


def click(n, ts, user="u", ip="10.0.0.1", ad="a", user_agent=None):
    return Click(f"c{n:03d}", ad, ts, user, ip, "KR", "mobile", user_agent)


def test_a_repeat_is_under_the_window_and_ties_go_by_click_id():
    labels = click_labels([click(1, T, "u"), click(2, T + 9_999, "u"), click(3, T + 19_999, "u"),
                           click(4, T + 19_999, "u"), click(5, T, "v", ad="b")])
    assert labels == {"c001": "valid", "c002": "repeat_click", "c003": "valid",
                      "c004": "repeat_click", "c005": "valid"}


def test_the_fourth_click_of_an_ip_key_in_the_window_is_ip_frequency():
    v6 = ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:0:0:0:7"]
    clicks = [click(i, T + i, f"u{i}", ip) for i, ip in enumerate(v6 + ["2001:db8:1:2::8"])]
    clicks.append(click(10, T + 10, "u10", "2001:db8:1:3::1"))  # another /64
    assert [click_labels(clicks)[c.click_id] for c in clicks] == \
        ["valid", "valid", "valid", "ip_frequency", "valid"]
    # 600 s after the first, it no longer counts: two earlier clicks only.
    late = [click(i, T + i * 200_000, f"u{i}", "10.0.0.9") for i in range(4)]
    assert click_labels(late)["c003"] == "valid"
    assert click_labels(late[:3] + [late[3]._replace(click_ts=T + 599_999)])["c003"] == \
        "ip_frequency"


def test_an_events_own_labels_come_first_and_its_clicks_still_count_for_the_others():
    bot = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
    first, _ = invalid_traffic.datacenter_ranges()[0][4][0]
    datacenter = str(ipaddress.ip_address(first))
    labels = click_labels([click(1, T, user_agent=bot, ip=datacenter),
                           click(2, T + 1, ip=datacenter), click(3, T + 2)])
    assert labels == {"c001": "bot_user_agent", "c002": "datacenter_ip", "c003": "repeat_click"}


def test_the_snapshot_holds_only_globally_reachable_ranges_with_its_source():
    # A provider's list once held documentation networks (2001:db8::/32, 192.0.2.0/24):
    # they would label the addresses of examples and tests as data centers.
    ranges, header = invalid_traffic.datacenter_ranges()
    for version, spans in ranges.items():
        for first, last in spans:
            assert ipaddress.ip_address(first).is_global and \
                ipaddress.ip_address(last).is_global, (version, first, last)
    assert {"repository", "commit", "date", "license"} <= set(header)
    assert not invalid_traffic.is_datacenter("2001:db8::1")
    assert not invalid_traffic.is_datacenter("192.0.2.1")
