"""The pipeline's health as one answer: GET /v1/status (the dashboard's health strip).

What a data team checks before trusting a number:
- freshness: how long ago the newest complete minute ended. The job fires a minute once the
  watermark passes it and the loader stores it after the job's next checkpoint, 10-20 s after
  the minute's end; so under traffic this climbs to 70-80 s and drops back every minute;
- the loader: records each topic still holds for it, rows stored, its last batch (only when the
  loader runs in this process, as under `adclick serve`: attach_loader);
- what did not count on time, per minute: late corrections, clicks too late, dead letters;
- the Flink job's newest completed checkpoint, from Flink's REST API (FLINK_REST_URL).

The same values feed /metrics (api.metrics).
"""

import time
from datetime import datetime
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request

from adclick import flink_rest
from adclick import queries
from api import ads
from api import auth
from api import db
from api import params

bp = Blueprint("status", __name__, url_prefix="/v1")
bp.before_request(auth.require("operator"))

LOADER = "adclick.loader"
FLINK_TIMEOUT_S = 2


def attach_loader(app, loader):
    """Report loader (an adclick.ingest.Loader running in this process) in status and metrics."""
    app.extensions[LOADER] = loader


def loader_of(app):
    return app.extensions.get(LOADER)


def freshness_s(minute, now=None):
    """Seconds since the minute starting at `minute` ended (None without one)."""
    if minute is None:
        return None
    now = time.time() if now is None else now
    return round(now - (minute + params.MINUTE).timestamp(), 3)


def loader_status(loader):
    if loader is None:
        return None
    last = loader.last_batch_at
    return {
        "lag": dict(loader.lag),
        "rows": dict(loader.rows_loaded),
        "last_batch_at": None if last is None else params.iso(
            datetime.fromtimestamp(last, tz=timezone.utc)),
        "reconnects": loader.reconnects,
    }


def flink_jobs(rest_url):
    """The live jobs of the Flink cluster at rest_url, each with its newest completed checkpoint.

    None when no REST URL is configured; {"error": ...} when Flink does not answer.
    """
    if not rest_url:
        return None
    try:
        jobs = []
        for job in flink_rest.live_jobs(rest_url, FLINK_TIMEOUT_S):
            completed = flink_rest.newest_checkpoint(rest_url, job["jid"], FLINK_TIMEOUT_S)
            checkpoint = None
            if completed:
                at = completed["latest_ack_timestamp"] / 1000
                checkpoint = {"id": completed["id"],
                              "completed_at": params.iso(datetime.fromtimestamp(
                                  at, tz=timezone.utc)),
                              "age_s": round(time.time() - at, 3)}
            jobs.append({"name": job["name"], "state": job["state"],
                         "last_checkpoint": checkpoint})
        return {"jobs": jobs}
    except (OSError, ValueError, KeyError) as error:
        return {"error": f"Flink REST API at {rest_url} did not answer: {error}"}


def late_minutes(minutes):
    """The last `minutes` minutes up to the newest complete one: corrections, too late, dead."""
    start, end = ads.resolve_range(params.RangeRequest(minutes=minutes))
    counts = db.cached(("late", start, end), lambda: queries.late_per_minute(
        db.client(), db.database(), start, end, db.read_settings()))
    rows = []
    for minute in params.minutes_of(start, end):
        corrections, too_late, dead = counts.get(minute, (0, 0, 0))
        rows.append({"minute": params.iso(minute), "late_corrections": corrections,
                     "too_late": too_late, "dead_letters": dead})
    return rows


@bp.get("/status")
def status():
    """Freshness, the loader, late and dead letters per minute, the job's last checkpoint."""
    params.check_known(request.args, ("minutes",))
    minutes = params.integer(request.args, "minutes", 10, 1, 60)
    newest = ads.newest_complete_minute()
    app = current_app._get_current_object()
    return jsonify({
        "newest_complete_minute": None if newest is None else params.iso(newest),
        "freshness_s": freshness_s(newest),
        "loader": loader_status(loader_of(app)),
        "minutes": late_minutes(minutes),
        "flink": db.cached(("flink",), lambda: flink_jobs(app.config.get("FLINK_REST_URL"))),
    })
