"""``GET /dashboard`` on the REST port: one page that watches every model and rollout, and
``GET /dashboard/data.json``, what it polls.

The page (``protos/static/dashboard.html``: HTML, CSS and script in one file, nothing fetched
from elsewhere) renders the data document; ``verso compare --html`` writes the same page with
the document embedded, so the live view and the report are one renderer. The data document:

    {"unix_time": float,
     "models": [{"name": str, "versions": [{"version": int, "state": str, "error": str,
                                              "age_seconds": float | null, "age_source": str,
                                              "info": VersionInfo, "drift": Drift,
                                              "resident_bytes": int, "cost": Cost}]}],
     "rollouts": [RolloutStatus, ...]}

where the message names are ``protos/rollout.proto``'s, as proto3 JSON with field names kept
(int64 fields as strings, as protobuf's JSON mapping has them). Runs on the event loop.
"""

from __future__ import annotations

import logging
import time
from importlib import resources

from google.protobuf import json_format

PAGE_PATH = "/dashboard"
DATA_PATH = "/dashboard/data.json"

log = logging.getLogger("verso.dashboard")


def page() -> bytes:
    """The dashboard page's bytes (read each time: it is small, and edits show at once)."""
    return (resources.files("protos") / "static" / "dashboard.html").read_bytes()


def message_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def data(core) -> dict:
    """The data document for ``core`` (a ``ServingCore``) now.

    Never fails as a whole because of one model, version or rollout: a version that failed to
    load has its error as text and the same keys as any other; a part that cannot be read is
    shown with its defaults and the failure in its ``error`` (logged once per kind of failure),
    so one bad version never turns the page into a 500."""
    manager, rollouts = core.manager, core.rollouts
    models = []
    for name in sorted(manager.model_names()):
        versions = []
        for st in sorted(manager.status(name), key=lambda s: s.version):
            entry = {"version": st.version, "state": st.state.name, "error": str(st.error) if st.error else "",
                     **_NO_OVERVIEW}
            if rollouts is not None:
                try:
                    entry.update(rollouts.version_overview(name, st.version))
                except Exception as e:  # shown on the page; the rest of the document still answers
                    _log_once("version overview", e)
                    entry["error"] = "; ".join(filter(None, (entry["error"], f"cannot read its overview: {e}")))
            versions.append(entry)
        models.append({"name": name, "versions": versions})
    statuses = []
    if rollouts is not None:
        for name in sorted(rollouts.configs):
            try:
                statuses.append(message_dict(rollouts.status(name)))
            except Exception as e:
                _log_once("rollout status", e)
                statuses.append({"config": {"model": name}, "versions": [],
                                 "alarms": [f"cannot read the rollout's status: {e}"]})
    return {"unix_time": time.time(), "models": models, "rollouts": statuses}


# What a version shows when nothing is known of it (the keys ``version_overview`` fills).
_NO_OVERVIEW = {"age_seconds": None, "age_source": "", "info": {}, "drift": {}, "resident_bytes": -1, "cost": {}}
_logged: set[tuple[str, str]] = set()


def _log_once(part: str, e: Exception) -> None:
    """A failure to read ``part``, with its stack, once per (part, exception type): the page
    polls every few seconds and must not flood the log."""
    key = (part, type(e).__name__)
    if key not in _logged:
        _logged.add(key)
        log.exception("Dashboard: cannot read a %s (shown on the page; logged once)", part)
