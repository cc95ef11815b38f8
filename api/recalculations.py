"""Recalculations (admin keys only): run one over the store this process owns, and follow it.

POST /v1/admin/recalculations {from, to, ads?, reason?, settings?, dry_run?} checks the request
and the range (a 400 says what is wrong), starts the run in the background and answers 202
with its id; GET /v1/admin/recalculations/<id> says how it goes (running, done with the diff,
or failed with why), GET /v1/admin/recalculations lists the recent ones. One runs at a time in
a process (a second gets a 409): each one is a Flink batch job, minutes of CPU. POST
/v1/admin/recalculations/rollback {id} undoes a published one (its id in the result's
`published`, and in the store's `recalculations` table, the audit record).
`adclick recalculate` (apps.recalculate) is the same from a terminal. adclick.recalculation
does the work.
"""

import contextlib
import itertools
import logging
import threading
from datetime import datetime
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request

from adclick import recalculation
from api import auth
from api import db
from api import params
from api.errors import ApiError

log = logging.getLogger(__name__)
bp = Blueprint("recalculations", __name__, url_prefix="/v1/admin/recalculations")
bp.before_request(auth.require("admin"))
EXTENSION = "adclick.recalculations"
KEPT = 20  # finished runs listed


class Runs:
    """This process's recalculations: the running one and the last KEPT finished."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = {}
        self._ids = itertools.count(1)
        self._rolling_back = False

    @contextlib.contextmanager
    def exclusive(self):
        """Held while no recalculation runs (a rollback's), else a 409."""
        with self._lock:
            self._check_idle()
            self._rolling_back = True
        try:
            yield
        finally:
            with self._lock:
                self._rolling_back = False

    def _check_idle(self):
        if self._rolling_back or any(run["status"] == "running" for run in self._runs.values()):
            raise ApiError("a recalculation or rollback is running; wait for it to finish", 409)

    def start(self, client, database, request_, who):
        with self._lock:
            self._check_idle()
            run_id = f"r{next(self._ids)}"
            run = {"id": run_id, "status": "running", "requested_by": who,
                   "requested_at": params.iso(datetime.now(timezone.utc)),
                   "from": recalculation.iso(request_.start),
                   "to": recalculation.iso(request_.end), "ads": list(request_.ads),
                   "reason": request_.reason, "dry_run": request_.dry_run}
            self._runs[run_id] = run
            finished = [key for key, value in self._runs.items() if value["status"] != "running"]
            for key in finished[:-KEPT]:
                del self._runs[key]
        threading.Thread(target=self._run, args=(run, client, database, request_),
                         name=f"recalculation-{run_id}", daemon=True).start()
        return dict(run)

    def _run(self, run, client, database, request_):
        try:
            result = recalculation.recalculate(client, database, request_,
                                               who=run["requested_by"])
            update = {"status": "done", "result": result}
        except recalculation.Refused as refused:
            update = {"status": "refused", "error": str(refused)}
        except Exception as error:  # the run's answer, not the server's end
            log.exception("recalculation %s failed", run["id"])
            update = {"status": "failed", "error": str(error)[-2000:]}
        with self._lock:
            run.update(update)

    def get(self, run_id):
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else dict(run)

    def list(self):
        with self._lock:
            return [{key: value for key, value in run.items() if key != "result"}
                    for run in self._runs.values()]


def _runs():
    return current_app.extensions.setdefault(EXTENSION, Runs())


@bp.post("")
def start():
    try:
        request_ = recalculation.parse_request(request.get_json(force=True, silent=True))
        recalculation.check_range(db.client(), db.database(), request_)
    except recalculation.Refused as refused:
        raise ApiError(str(refused)) from None
    run = _runs().start(db.client(), db.database(), request_, auth.current().name)
    return jsonify(run), 202


@bp.post("/rollback")
def rollback():
    """Undo a published recalculation {id}: at once, recorded as a rollback."""
    example = '{"id": <a published recalculation\'s id>, "reason": <text, at most 500 characters>}'
    body = params.json_object(request.get_json(force=True, silent=True), ("id", "reason"),
                              ("id",), example)
    reason = body.get("reason", "")
    if isinstance(body["id"], bool) or not isinstance(body["id"], int) or body["id"] < 1 \
            or not isinstance(reason, str) or len(reason) > 500:
        raise ApiError(f"the body must be {example}")
    with _runs().exclusive():
        try:
            done = recalculation.rollback(db.client(), db.database(), body["id"],
                                          auth.current().name, reason)
        except recalculation.Refused as refused:
            raise ApiError(str(refused)) from None
    return jsonify(done)


@bp.get("")
def list_runs():
    return jsonify({"recalculations": _runs().list()})


@bp.get("/<run_id>")
def get(run_id):
    run = _runs().get(run_id)
    if run is None:
        raise ApiError(f"no recalculation {run_id[:40]!r} in this process", 404)
    return jsonify(run)
