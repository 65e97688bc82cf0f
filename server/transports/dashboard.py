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

import time
from importlib import resources

from google.protobuf import json_format

PAGE_PATH = "/dashboard"
DATA_PATH = "/dashboard/data.json"


def page() -> bytes:
    """The dashboard page's bytes (read each time: it is small, and edits show at once)."""
    return (resources.files("protos") / "static" / "dashboard.html").read_bytes()


def message_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def data(core) -> dict:
    """The data document for ``core`` (a ``ServingCore``) now."""
    manager, rollouts = core.manager, core.rollouts
    models = []
    for name in sorted(manager.model_names()):
        versions = []
        for st in sorted(manager.status(name), key=lambda s: s.version):
            entry = {"version": st.version, "state": st.state.name, "error": st.error or ""}
            if rollouts is not None:
                entry.update(rollouts.version_overview(name, st.version))
            versions.append(entry)
        models.append({"name": name, "versions": versions})
    statuses = []
    if rollouts is not None:
        for name in sorted(rollouts.configs):
            statuses.append(message_dict(rollouts.status(name)))
    return {"unix_time": time.time(), "models": models, "rollouts": statuses}
