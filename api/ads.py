"""The ads resource: API 1 (one ad's click count), API 2 (the most clicked ads, or the best by
impressions, conversions, CTR or CVR), one ad's metrics (impressions, clicks, conversions, CTR,
CVR), and the clicks of each minute (one ad's or all, for charts).

Both answer for a range of whole minutes. `minutes=M` means the M most recent complete minutes:
a minute is complete once the job's watermark has passed it, which is when it appears in
minutes_closed (with or without clicks; or in top_ads_minute, with clicks), so the range ends
right after the newest such minute. Ending there rather
than at the wall clock keeps a count from creeping up while its minute is still open. With no
complete minute yet the range ends at the current UTC minute. `from`/`to` name the range.

An advertiser's key (api.auth) reads its own ads only: every query is filtered to them
(Filters.advertiser), its top-N ranks them alone, and any other ad is a 404, the same answer
as for an ad that does not exist, so a key learns nothing of others' ads.

Answers (and the latest complete minute) go through api.db.cached: the same question asked
again within RESULT_CACHE_S gets the same answer without a query; the advertiser is part of
the question.
"""

from datetime import datetime
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request

from adclick import access
from adclick import config
from adclick import queries
from api import auth
from api import db
from api import params
from api.errors import ApiError

bp = Blueprint("ads", __name__, url_prefix="/v1/ads")
bp.before_request(auth.require("reader"))

COUNT_PARAMETERS = params.RANGE_PARAMETERS + params.FILTER_PARAMETERS
POPULAR_PARAMETERS = COUNT_PARAMETERS + ("count", "by", "min_impressions")
PER_MINUTE_PARAMETERS = COUNT_PARAMETERS + ("ad_id",)


def _current_minute():
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


def newest_complete_minute():
    """The start of the store's newest complete minute, or None (cached like the answers)."""
    return db.cached(("latest_complete_minute",), lambda: queries.latest_complete_minute(
        db.client(), db.database(), db.read_settings()))


def resolve_range(requested):
    """[start, end) of a RangeRequest, asking the store for its latest complete minute."""
    if requested.minutes is None:
        return requested.start, requested.end
    latest = newest_complete_minute()
    end = _current_minute() if latest is None else latest + params.MINUTE
    return end - requested.minutes * params.MINUTE, end


def _parse(allowed):
    params.check_known(request.args, allowed)
    requested = params.time_range(request.args, current_app.config["MAX_RANGE_MINUTES"])
    return requested, params.filters(request.args, auth.current().advertiser)


def readable_ad(value):
    """The ad id of a path or parameter, if the key may read it: 404 for an advertiser's key
    on an ad the ads table does not give to its advertiser."""
    ad_id = params.ad_id(value)
    advertiser = auth.current().advertiser
    if advertiser is not None:
        owner = db.cached(("ad_owner", ad_id), lambda: access.ad_owner(
            db.client(), db.database(), ad_id, db.read_settings()))
        if owner != advertiser:
            raise ApiError(f"no ad {ad_id} among this key's ads", 404)
    return ad_id


@bp.get("/<ad_id>/aggregated_count")
def aggregated_count(ad_id):
    """API 1: clicks of one ad over the range, optionally filtered."""
    ad_id = readable_ad(ad_id)
    requested, filters = _parse(COUNT_PARAMETERS)
    start, end = resolve_range(requested)
    count = db.cached(
        ("count", ad_id, start, end, filters),
        lambda: queries.ad_click_count(db.client(), db.database(), ad_id, start, end,
                                       filters.countries, filters.devices,
                                       filters.advertiser, db.read_settings(),
                                       traffic=filters.traffic))
    return jsonify({"ad_id": ad_id, "count": count,
                    "from": params.iso(start), "to": params.iso(end)})


@bp.get("/<ad_id>/metrics")
def metrics(ad_id):
    """One ad's impressions, clicks and attributed conversions over the range, optionally
    filtered, with CTR (clicks / impressions) and CVR (conversions / clicks); a ratio is null
    when its divisor is 0. Valid traffic unless `traffic`/`reason` say otherwise; the answer
    also carries the invalid clicks by reason and their share of all clicks."""
    ad_id = readable_ad(ad_id)
    requested, filters = _parse(COUNT_PARAMETERS)
    start, end = resolve_range(requested)
    impressions, clicks, conversions = db.cached(
        ("metrics", ad_id, start, end, filters),
        lambda: queries.ad_metrics(db.client(), db.database(), ad_id, start, end,
                                   filters.countries, filters.devices, filters.advertiser,
                                   db.read_settings(), traffic=filters.traffic))
    by_label = db.cached(
        ("traffic", ad_id, start, end, filters),
        lambda: queries.traffic_breakdown(db.client(), db.database(), start, end, [ad_id],
                                          filters.countries, filters.devices,
                                          filters.advertiser, db.read_settings()))
    return jsonify({"ad_id": ad_id, "from": params.iso(start), "to": params.iso(end),
                    "traffic": sorted(filters.traffic or ("valid",) + config.TRAFFIC_REASONS),
                    **_funnel(impressions, clicks, conversions), **invalid_share(by_label)})


def invalid_share(by_label):
    """invalid_clicks (all reasons), invalid_click_rate (of all clicks, null with none) and
    the invalid clicks by reason, from {label: (clicks, impressions)}."""
    reasons = {reason: by_label.get(reason, (0, 0))[0] for reason in config.TRAFFIC_REASONS}
    invalid = sum(reasons.values())
    total = invalid + by_label.get("valid", (0, 0))[0]
    return {"invalid_clicks": invalid, "invalid_click_rate": queries.ratio(invalid, total),
            "invalid_clicks_by_reason": reasons}


def _funnel(impressions, clicks, conversions):
    return {"impressions": impressions, "clicks": clicks, "conversions": conversions,
            "ctr": queries.ratio(clicks, impressions), "cvr": queries.ratio(conversions, clicks)}


@bp.get("/popular_ads")
def popular_ads():
    """API 2: the `count` best ads over the range by `by` (default clicks), highest first, ties
    by ad_id. Ranked by a ratio, an ad needs min_impressions impressions."""
    requested, filters = _parse(POPULAR_PARAMETERS)
    limit = params.integer(request.args, "count", params.POPULAR_DEFAULT, 1, params.POPULAR_MAX)
    by = params.choice(request.args, "by", "clicks", tuple(queries.RANKINGS))
    min_impressions = params.integer(request.args, "min_impressions",
                                     params.MIN_IMPRESSIONS_DEFAULT, 0, params.INTEGER_MAX)
    start, end = resolve_range(requested)
    answer = {"from": params.iso(start), "to": params.iso(end)}
    if by == "clicks":  # the brief's API 2, from the clicks alone
        rows = db.cached(
            ("popular", start, end, limit, filters),
            lambda: queries.popular_ads(db.client(), db.database(), start, end, limit,
                                        filters.countries, filters.devices,
                                        filters.advertiser, db.read_settings(),
                                        traffic=filters.traffic))
        return jsonify({**answer,
                        "ads": [{"ad_id": ad_id, "count": count} for ad_id, count in rows]})
    rows = db.cached(
        ("popular_by", by, start, end, limit, min_impressions, filters),
        lambda: queries.popular_ads_by(db.client(), db.database(), by, start, end, limit,
                                       min_impressions, filters.countries, filters.devices,
                                       filters.advertiser, db.read_settings(),
                                       traffic=filters.traffic))
    ads = []
    for ad_id, impressions, clicks, conversions in rows:
        funnel = _funnel(impressions, clicks, conversions)
        ads.append({"ad_id": ad_id, "count": funnel[by], **funnel})
    extra = {"min_impressions": min_impressions} if by in queries.RATIO_DIVISORS else {}
    return jsonify({**answer, "by": by, **extra, "ads": ads})


@bp.get("/per_minute")
def per_minute():
    """Clicks in each minute of the range, of one ad (ad_id=...) or of all, optionally filtered;
    every minute of the range is listed, oldest first, 0 where there were none."""
    requested, filters = _parse(PER_MINUTE_PARAMETERS)
    ad_id = readable_ad(request.args["ad_id"]) if "ad_id" in request.args else None
    start, end = resolve_range(requested)
    counts = db.cached(
        ("per_minute", ad_id, start, end, filters),
        lambda: queries.clicks_per_minute(db.client(), db.database(), start, end,
                                          [ad_id] if ad_id else (), filters.countries,
                                          filters.devices, filters.advertiser,
                                          db.read_settings(), traffic=filters.traffic))
    minutes = [{"minute": params.iso(minute), "clicks": counts.get(minute, 0)}
               for minute in params.minutes_of(start, end)]
    return jsonify({"ad_id": ad_id, "from": params.iso(start), "to": params.iso(end),
                    "minutes": minutes})
