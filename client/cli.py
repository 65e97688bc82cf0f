"""``verso predict|status|metadata|reload|bench``: the client's command line.

Every command talks to a server over gRPC (``--target``, default ``$VERSO_TARGET`` or
``localhost:8500``; several replicas comma-separated) or REST (``--rest URL``). Results print
as rich tables (plain text when not on a terminal); ``--json`` prints JSON for scripts.
Failures print one line ``verso: error: CODE: message`` on stderr and exit 1 (2 for a wrong
command line); no traceback unless ``VERSO_DEBUG=1``.

This module imports nothing heavy at import time: ``main`` first makes TF's protos importable
without TensorFlow's runtime (``client._light``), then imports the client.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from typing import Optional

from client.terminal import printable

EXIT_ERROR = 1
EXIT_USAGE = 2  # as argparse: input that makes no sense, nothing was started
COMMANDS = ("predict", "status", "metadata", "reload", "bench", "rollout", "compare", "feedback")
# verso.rollout.Gates, each a `verso rollout set` flag (0: the server's default, in brackets).
ROLLOUT_GATES = (
    ("max_error_rate_increase", float, "canary error rate at most this above stable's [0.005: 0.5 points]"),
    ("max_p99_ratio", float, "canary p99 latency at most this times stable's, or within --max-p99-increase-ms "
                             "of it [1.2]"),
    ("min_top1_agreement", float, "shadow calls: canary's top-1 class agrees with stable's at least this "
                                  "often [0.97]"),
    ("max_accuracy_drop", float, "feedback: canary accuracy at most this below stable's [0.01: 1 point]"),
    ("min_samples", int, "calls, feedback rows or shadow comparisons per version before a check "
                         "can pass or fail [100]"),
    ("confidence", float, "one-sided confidence of every check: fail only when worse than the gate, "
                          "pass only when within it, with this confidence [0.95]"),
    ("failure_threshold", int, "consecutive failed analyses before ROLLBACK (one is HOLD) [3]"),
    ("warmup_calls", int, "first calls of each version left out of its latency (negative: none) [20]"),
    ("max_loss_increase", float, "feedback: canary mean loss (log-loss; regressors: squared error) at most "
                                 "this above stable's [0: no loss gate]"),
    ("max_class_drop", float, "bias: no class's recall or slice's accuracy at most this below stable's "
                              "[0.05: 5 points; negative: no bias gate]"),
    ("min_class_samples", int, "bias: feedback rows a class or slice needs in each version to be judged (fewer: "
                               "not judged) [30]"),
    ("max_cost_ratio", float, "cost: canary CPU seconds per prediction at most this times stable's "
                              "[0: no cost gate]"),
    ("max_p99_increase_ms", float, "canary p99 latency at most this many ms above stable's, whatever the ratio "
                                   "[5; negative: the ratio alone]"),
)


WIDE_HELP = ("every column, however wide (default: the least important columns are left out to fit the "
             "terminal, and named)")


class CliError(Exception):
    """A command-line mistake or a failed call: printed as one line."""


class UsageError(CliError):
    """Input that makes no sense, found before anything started: one line, exit 2."""


def _add_rollout_parser(sub, conn: argparse.ArgumentParser) -> None:
    """``verso rollout set|verdict|status``: a flag for every ModelRollout field and gate."""
    ro = sub.add_parser("rollout", help="a model's rollout: set it, its verdict, its status")
    rsub = ro.add_subparsers(dest="rollout_command", required=True)
    rs = rsub.add_parser("set", parents=[conn], help="configure a stable/canary split")
    rs.add_argument("model")
    rs.add_argument("--stable", type=int, required=True, help="the version most traffic goes to")
    rs.add_argument("--canary", type=int, default=0, help="the candidate version (0: none)")
    rs.add_argument("--percent", type=float, default=0.0, help="canary share of routed requests, percent")
    rs.add_argument("--shadow", type=float, default=0.0, help="share of stable calls also sent to the canary")
    rs.add_argument("--labels", default="", help="comma-separated version labels routed like a request naming "
                                                  "no version")
    rs.add_argument("--shadow-max-in-flight", type=int, default=0, help="shadow calls running at once (4)")
    rs.add_argument("--evidence-output", default="", help="the output compared for divergence and top-1 "
                                                          "(default: the signature's first)")
    rs.add_argument("--window", type=int, default=0, help="calls per version kept as evidence (1000)")
    rs.add_argument("--scores-output", default="", help="the output holding class scores for log-loss and Brier "
                                                        "score (default: detected, a float [batch, classes] output)")
    rs.add_argument("--cost-per-cpu-hour", type=float, default=0.0, help="price of a CPU hour: money per 1000 "
                                                                         "predictions in status")
    rs.add_argument("--cost-per-gib-hour", type=float, default=0.0, help="price of a GiB-hour of resident memory")
    rs.add_argument("--currency", default="", help="currency label of the prices (USD)")
    rs.add_argument("--max-age", type=float, default=0.0, help="staleness alarm age in seconds (0: off)")
    rs.add_argument("--auto", action="store_true", help="let the verdict move the canary share stepwise")
    rs.add_argument("--steps", default="", help="comma-separated canary percents of the automatic steps "
                                                "(10,25,50,100)")
    rs.add_argument("--interval", type=float, default=0.0, help="seconds between automatic steps (30)")
    for flag, kind, text in ROLLOUT_GATES:
        rs.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=0, help=f"gate: {text}")
    rs.add_argument("--json", action="store_true", help="print JSON")
    rs.add_argument("--wide", action="store_true", help=WIDE_HELP)
    for name, text in (("verdict", "PROMOTE / HOLD / ROLLBACK with the checks and what happens next"),
                       ("status", "configuration, evidence per version, this rollout's decisions, alarms")):
        r = rsub.add_parser(name, parents=[conn], help=text)
        r.add_argument("model")
        r.add_argument("--json", action="store_true", help="print JSON")
        r.add_argument("--wide", action="store_true", help=WIDE_HELP)
        if name == "status":
            r.add_argument("--all-decisions", action="store_true",
                           help="also the decisions of the model's earlier rollouts (other stable/canary pairs)")


def _parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("server")
    g.add_argument("--target", default=os.environ.get("VERSO_TARGET", "localhost:8500"),
                   help="gRPC host:port, or several comma-separated replicas (default: $VERSO_TARGET "
                        "or localhost:8500)")
    g.add_argument("--rest", metavar="URL", help="use the REST API at URL (e.g. http://localhost:8501) "
                                                  "instead of gRPC")
    g.add_argument("--timeout", type=float, default=10.0, help="deadline of each call in seconds (10)")
    g.add_argument("--tls-ca", metavar="PEM", help="TLS: trust the server certificate signed by this CA "
                                                   "(gRPC, or an https:// --rest URL)")
    g.add_argument("--tls-cert", metavar="PEM", help="mutual TLS: this client certificate (with --tls-key)")
    g.add_argument("--tls-key", metavar="PEM", help="mutual TLS: the client certificate's private key")
    g.add_argument("--token-file", metavar="FILE", default=os.environ.get("VERSO_TOKEN_FILE"),
                   help="the server's admin token (its --admin_token_file), needed by rollout set, feedback "
                        "and reload (default: $VERSO_TOKEN_FILE; for a server on this machine, the token "
                        "`verso serve` made in $XDG_STATE_HOME/verso/admin.token, when there is one)")

    servable = argparse.ArgumentParser(add_help=False)
    s = servable.add_argument_group("servable")
    s.add_argument("model", help="model name")
    v = s.add_mutually_exclusive_group()
    v.add_argument("--version", type=int, help="a specific version (default: the latest)")
    v.add_argument("--label", help="a version label")

    inputs = argparse.ArgumentParser(add_help=False)
    i = inputs.add_argument_group("inputs")
    i.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="[ALIAS=]VALUE; VALUE is a JSON or Python literal ('[1.0, 2.0]'), @FILE.npy, "
                        "@FILE.npz (one array per alias), @FILE.json (a value, {alias: value}, or a "
                        "TF Serving REST body with \"instances\"/\"inputs\"), @FILE.txt (a literal), or any "
                        "other @FILE as raw bytes (one string, e.g. a PNG). No alias: the signature's only input")
    i.add_argument("--signature", default="", help="signature name (default serving_default)")

    p = argparse.ArgumentParser(prog="verso", description="Verso's client commands.")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", parents=[servable, inputs, conn], help="run Predict and print the outputs")
    pr.add_argument("--output", action="append", help="return only this output (repeatable)")
    pr.add_argument("--json", action="store_true", help="print JSON")
    st = sub.add_parser("status", parents=[servable, conn], help="versions and their states")
    st.add_argument("--json", action="store_true", help="print JSON")
    md = sub.add_parser("metadata", parents=[servable, conn], help="signatures with dtypes and shapes")
    md.add_argument("--json", action="store_true", help="print JSON")
    md.add_argument("--all", action="store_true", help="also show __saved_model_init_op")
    rl = sub.add_parser("reload", parents=[conn], help="send a model config file (ReloadConfig)")
    rl.add_argument("config", help="text-format ModelServerConfig file")
    b = sub.add_parser("bench", parents=[servable, inputs, conn],
                       help="stress test: closed loop, open-loop rates and stages, the limit search, faults",
                       description="Closed loop (default): CONCURRENCY calls in flight until REQUESTS are done or "
                                   "DURATION has passed. Open loop: --rate R (calls sent on a fixed schedule; "
                                   "latency counts from the scheduled send time) or --stages. --find-limit: the "
                                   "highest rate that meets --slo-p99. Without INPUTs, random inputs of ROWS rows "
                                   "are made from the signature.")
    b.add_argument("--requests", "-n", type=int, help="number of calls (default 1000 in a closed loop)")
    b.add_argument("--duration", "-d", help="run for this long (30s, 2m; bare numbers are seconds)")
    b.add_argument("--concurrency", "-c", type=int, help="closed loop: calls in flight (8)")
    b.add_argument("--rate", help="open loop: calls per second on a fixed schedule (with --duration, default 10s)")
    b.add_argument("--stages", help="open loop: DURATION:RATE,... each ramping the rate linearly to RATE "
                                    "(e.g. 30s:100,30s:500,10s:0)")
    b.add_argument("--find-limit", action="store_true",
                   help="search the highest rate whose p99 and error rate meet --slo-p99 and --max-error-rate")
    b.add_argument("--slo-p99", help="--find-limit: the p99 latency to meet, e.g. 50ms")
    b.add_argument("--max-error-rate", default="0.1%", help="--find-limit: errors allowed (0.1%%)")
    b.add_argument("--start-rate", default="10", help="--find-limit: the first rate probed (10)")
    b.add_argument("--max-rate", default="100000", help="--find-limit: the highest rate probed (100000)")
    b.add_argument("--probe-duration", default="3s", help="--find-limit: each probe's length (3s)")
    b.add_argument("--budget", default="60s", help="--find-limit: the whole search's time limit (60s)")
    b.add_argument("--fault", action="append", default=[], metavar="AT:KIND[:ARG]",
                   help="during the load: AT:swap:VERSION_DIR, AT:remove:VERSION, AT:kill-worker, "
                        "AT:reload:CONFIG_FILE (repeatable; only on servers on this machine)")
    b.add_argument("--model-base-path", help="the model's local directory (for swap and remove faults)")
    b.add_argument("--server-pid", type=int, help="the server's PID (for kill-worker: a --num_workers server)")
    b.add_argument("--scenario", metavar="FILE.json",
                   help='a run as JSON: {"rate"|"stages"|"concurrency", "duration", "faults": [...], '
                        '"thresholds": [...]}; flags given as well win')
    b.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                   help="fail the run (exit 1) unless EXPR holds: p50|p90|p99|p999|mean|max<VALUE[us|ms|s], "
                        "errors<VALUE[%%], rps>VALUE (repeatable)")
    b.add_argument("--processes", type=int, default=1,
                   help="open loop: send from this many client processes, each 1/N of the rate (1); for rates "
                        "past one process's ceiling (benchmarks/README.md)")
    b.add_argument("--max-in-flight", type=int, default=10000,
                   help="open loop: calls outstanding at most; calls due past it are dropped and counted (10000)")
    b.add_argument("--rows", type=int, default=1, help="rows per generated request (1)")
    b.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the whole report as JSON: to FILE, or to standard output without one")
    b.add_argument("--plot", metavar="FILE.png",
                   help="latency and throughput over time with faults marked; latency against offered rate for "
                        "--find-limit (needs matplotlib)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar or live table")
    b.add_argument("--dataset", metavar="FILE.npz",
                   help="inputs by alias (and optionally 'labels', numeric 'targets' and 'slices', one per row): "
                        "call i sends the next ROWS rows, cycling; with 'slices', each call carries its rows' "
                        "slice key")
    b.add_argument("--feedback", action="store_true",
                   help="after each answer, send the dataset's labels (or targets) of its rows as feedback "
                        "(rollouts)")
    b.add_argument("--routing-keys", type=int, default=0, metavar="N",
                   help="send routing keys user-0 .. user-N-1 in turn (sticky rollout assignment)")

    _add_rollout_parser(sub, conn)
    cp = sub.add_parser("compare", parents=[conn], help="side-by-side evidence of a model's versions")
    cp.add_argument("model")
    cp.add_argument("--json", action="store_true", help="print JSON")
    cp.add_argument("--wide", action="store_true", help=WIDE_HELP)
    cp.add_argument("--plot", metavar="FILE.png",
                    help="also draw the latency distributions to p99.9 (p99 and the gate marked), accuracy and loss "
                         "over time on one time axis, per-class recall and cost per version (needs matplotlib)")
    cp.add_argument("--html", metavar="FILE.html",
                    help="also write one self-contained HTML report (opens without a network or a server)")
    fb = sub.add_parser("feedback", parents=[conn], help="ground truth for an earlier answer")
    fb.add_argument("request_id", help="the answer's verso-request-id")
    fb.add_argument("labels", nargs="+", help="one label per row of that answer")
    return p


# ---- inputs -------------------------------------------------------------------------------------

def _literal(text: str):
    try:
        return json.loads(text)  # Python's json: NaN/Infinity accepted
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise CliError(f"cannot read {text!r}: not a JSON or Python literal") from None


def _request_body(doc):
    """A TF Serving REST Predict body as {alias: value} (or a bare value for one input)."""
    if "inputs" in doc:
        return doc["inputs"]
    rows = doc["instances"]
    if rows and all(isinstance(r, dict) and "b64" not in r for r in rows):
        return {k: [r.get(k) for r in rows] for k in rows[0]}
    return rows


def _load(path: str):
    import numpy as np

    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if not path.endswith((".json", ".txt")):
            # Any other file is sent as it is: one string element (an image for a model with hooks).
            with open(path, "rb") as f:
                return np.array([f.read()], dtype=object)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    doc = _literal(text)
    if isinstance(doc, dict) and ("inputs" in doc or "instances" in doc):
        return _request_body(doc)
    return doc


def parse_inputs(items: list[str]):
    """The INPUT arguments as what ``predict`` takes: one value, or ``{alias: value}``."""
    named: dict = {}
    bare = []
    for item in items:
        alias, sep, value = item.partition("=")
        if not sep or not alias or alias[0] in "[{(\"'@-+.0123456789" or " " in alias:
            alias, value = None, item
        value = _load(value[1:]) if value.startswith("@") else _literal(value)
        if alias is None:
            bare.append(value)
        else:
            named[alias] = value
    if bare and (named or len(bare) > 1):
        if len(bare) == 1 and isinstance(bare[0], dict):
            return {**bare[0], **named}
        raise CliError("several inputs: name each one ALIAS=VALUE")
    if not bare and not named:
        return None
    return bare[0] if bare else named


# ---- output -------------------------------------------------------------------------------------

def _console(stderr: bool = False):
    """Every rich output of the CLI goes through this console: what callers wrote (slice keys,
    labels, names, messages) is shown as text, never as markup or terminal control
    (``client.terminal``)."""
    from client import terminal

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a file, a test): wide enough that no column is cut.
    width = None if stream.isatty() or "COLUMNS" in os.environ else 240
    return terminal.console(stderr=stderr, width=width)


def _jsonable(arr):
    import numpy as np

    arr = np.asarray(arr)
    if arr.dtype.kind in "OS":
        return np.vectorize(lambda x: x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x),
                            otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype.kind == "c":
        return [[float(x.real), float(x.imag)] for x in arr.ravel()]
    return arr.astype(np.float64).tolist() if arr.dtype.kind == "f" else arr.tolist()


def _print_json(doc) -> None:
    print(json.dumps(doc, indent=2, allow_nan=True))


def _show_predict(outputs, version, as_json: bool) -> None:
    import numpy as np
    from rich.table import Table
    from rich.text import Text

    if as_json:
        _print_json({"model_version": version, "outputs": {a: _jsonable(v) for a, v in outputs.items()}})
        return
    table = Table(title=f"version {version}" if version is not None else None, title_justify="left")
    for col in ("output", "dtype", "shape", "value"):
        table.add_column(col, no_wrap=col != "value")
    for alias, arr in outputs.items():
        arr = np.asarray(arr)
        # The value's own line breaks are kept (a matrix); anything else in it is shown as text.
        value = np.array2string(arr, threshold=200, max_line_width=100)
        table.add_row(alias, str(arr.dtype), str(arr.shape), Text("\n".join(map(printable, value.split("\n")))))
    _console().print(table)


def _show_status(model: str, versions, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        _print_json({"model": model, "versions": [v.__dict__ for v in versions]})
        return
    table = Table(title=f"model {model}", title_justify="left")
    for col in ("version", "state", "status"):
        table.add_column(col)
    for v in versions:
        status = "OK" if v.error_code == "OK" else f"{v.error_code}: {v.error_message}"
        table.add_row(str(v.version), v.state, status)
    _console().print(table)


def _show_metadata(md, as_json: bool, show_all: bool) -> None:
    from rich.table import Table

    sigs = {n: s for n, s in md.signatures.items() if show_all or not n.startswith("__")}
    if as_json:
        _print_json({"model": md.model, "version": md.version, "signatures": {
            n: {"method": s.method,
                "inputs": {a: {"dtype": t.dtype, "shape": t.shape, "name": t.name} for a, t in s.inputs.items()},
                "outputs": {a: {"dtype": t.dtype, "shape": t.shape, "name": t.name} for a, t in s.outputs.items()}}
            for n, s in sigs.items()}})
        return
    console = _console()
    console.print(f"model {md.model} version {md.version}")
    for name, sig in sigs.items():
        table = Table(title=f"signature {name} ({sig.method or 'no method'})", title_justify="left")
        for col in ("", "alias", "dtype", "shape", "tensor"):
            table.add_column(col)
        for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
            for alias, t in tensors.items():
                table.add_row(kind, alias, t.dtype, t.shape_text, t.name)
        console.print(table)


def _show_bench(report: dict) -> None:
    from rich.table import Table

    from client import stress_view

    console = _console()
    console.print(stress_view.headline(report))
    if report["mode"] == "find-limit":
        for line in stress_view.limit_lines(report):
            console.print(line)
        console.print("at the knee:" if report["limit"]["knee"] is not None else "the last probe:")
    table = Table(show_header=False)
    table.add_column()
    table.add_column(justify="right")
    for name, value in stress_view.summary_lines(report):
        table.add_row(name, value)
    console.print(table)
    for code, message in report["error_examples"].items():
        console.print(f"{code}: {_one_line(message)}")
    for code, message in report.get("feedback", {}).get("refused_examples", {}).items():
        console.print(f"feedback refused, {code}: {_one_line(message)}")
    for line in stress_view.fault_lines(report):
        console.print(line)
    for t in report.get("thresholds", []):
        actual = "-" if t["actual"] is None else f"{t['actual']:.4g}"
        console.print(f"threshold {t['threshold']}: {'ok' if t['passed'] else 'FAILED'} (actual {actual})")


# ---- commands -----------------------------------------------------------------------------------

def _client(args, aio: bool = False, **kw):
    from client import AsyncClient, AsyncRestClient, Client, RestClient

    tls = args.tls_ca or args.tls_cert or args.tls_key
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    token = _token(args)
    if token:
        kw["token"] = token
    if args.rest:
        if tls:
            kw["verify"] = _tls_context(args)
        return (AsyncRestClient if aio else RestClient)(args.rest, timeout=args.timeout, **kw)
    if tls:
        import grpc
        kw["credentials"] = grpc.ssl_channel_credentials(_read(args.tls_ca), _read(args.tls_key),
                                                         _read(args.tls_cert))
    return (AsyncClient if aio else Client)(args.target, timeout=args.timeout, **kw)


def _token(args) -> Optional[str]:
    """The admin token to send: --token-file's (or $VERSO_TOKEN_FILE's), else, when every
    server named is on this machine, the one a local `verso serve` made by default (never sent
    to another machine, whose server has a token of its own)."""
    path = args.token_file
    if not path:
        from protos.local_paths import admin_token_file
        default = admin_token_file()
        if not (os.path.isfile(default) and _local_server(args)):
            return None
        path = default
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise CliError(f"cannot read --token-file {path}: {e.strerror}") from None


def _local_server(args) -> bool:
    """Whether the --rest URL's host, or every --target, is this machine (localhost, a loopback
    address, a UNIX socket)."""
    import urllib.parse

    from protos.local_paths import is_loopback_name

    def local(host: Optional[str]) -> bool:
        return is_loopback_name(host or "")

    if args.rest:
        url = args.rest if "://" in args.rest else "http://" + args.rest
        try:
            return local(urllib.parse.urlsplit(url).hostname)
        except ValueError:
            return False
    for target in args.target.split(","):
        target = target.strip()
        if target.startswith(("unix:", "unix-abstract:")):
            continue
        for prefix in ("dns:///", "ipv4:", "ipv6:"):
            target = target.removeprefix(prefix)
        host = target.rsplit("]", 1)[0] + "]" if target.startswith("[") else target.rsplit(":", 1)[0]
        if not local(host):
            return False
    return True


def _read(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


def _tls_context(args):
    import ssl
    try:
        ctx = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise CliError(f"cannot use the TLS files: {e}") from None
    return ctx


def _servable(args) -> dict:
    return {"version": args.version, "label": args.label}


def _predict(args) -> None:
    inputs = parse_inputs(args.inputs)
    if inputs is None:
        raise CliError("predict needs at least one INPUT")
    with _client(args) as c:
        outputs, version = c.predict(args.model, inputs, signature=args.signature, output_filter=args.output,
                                     with_version=True, as_dict=True, **_servable(args))
    _show_predict(outputs, version, args.json)


def _status(args) -> None:
    with _client(args) as c:
        versions = c.status(args.model, **_servable(args))
    _show_status(args.model, versions, args.json)


def _metadata(args) -> None:
    with _client(args) as c:
        md = c.metadata(args.model, **_servable(args))
    _show_metadata(md, args.json, args.all)


def _reload(args) -> None:
    import pathlib

    from client._api import reload_config

    config = reload_config(pathlib.Path(args.config))
    with _client(args) as c:
        c.reload(config)
    names = [m.name for m in config.model_config_list.config]
    print(printable(f"reloaded: {len(names)} model(s): {', '.join(names)}"))


def _load_dataset(path: str) -> dict:
    if not path.endswith(".npz"):
        raise CliError(f"--dataset {path}: expected an .npz file (arrays by alias, optionally 'labels')")
    return _load(path)


_SCENARIO_KEYS = ("rate", "stages", "duration", "concurrency", "requests", "faults", "thresholds")


def _stress_plan(args, target: str) -> dict:
    """Everything ``verso bench`` was asked for, checked before anything starts: the mode
    (closed, rate, stages, find-limit), its schedule, faults and thresholds. Raises
    UsageError (exit 2, one line) for what makes no sense."""
    import pathlib

    from client import faults as fl
    from client import stress
    from client._api import reload_config
    from client.errors import VersoError

    scenario = {}
    if args.scenario:
        try:
            with open(args.scenario) as f:
                scenario = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"--scenario {args.scenario}: {e}") from None
        if not isinstance(scenario, dict):
            raise UsageError(f"--scenario {args.scenario}: expected a JSON object")
        unknown = sorted(set(scenario) - set(_SCENARIO_KEYS))
        if unknown:
            raise UsageError(f"--scenario {args.scenario}: unknown key {unknown[0]!r} "
                             f"(known: {', '.join(_SCENARIO_KEYS)})")
        for key in ("faults", "thresholds"):
            if not isinstance(scenario.get(key, []), list):
                raise UsageError(f"--scenario {args.scenario}: {key!r} must be a list of strings")

    def pick(name):
        value = getattr(args, name)
        return value if value is not None else scenario.get(name)

    rate, stages, duration = pick("rate"), pick("stages"), pick("duration")
    concurrency, requests = pick("concurrency"), pick("requests")
    try:
        modes = [m for m, on in (("rate", rate is not None), ("stages", stages is not None),
                                 ("find-limit", args.find_limit)) if on]
        if len(modes) > 1:
            raise stress.StressInputError(f"choose one of --rate, --stages and --find-limit, not {' and '.join(modes)}")
        mode = modes[0] if modes else "closed"
        if mode != "closed" and concurrency is not None:
            raise stress.StressInputError("--concurrency is for the closed loop; an open loop sends on its schedule")
        if args.rows < 1:
            raise stress.StressInputError("--rows must be positive")
        if requests is not None and (not isinstance(requests, int) or requests < 1):
            raise stress.StressInputError(f"--requests {requests}: must be a positive whole number")
        if args.max_in_flight < 1:
            raise stress.StressInputError("--max-in-flight must be positive")
        if args.processes < 1:
            raise stress.StressInputError("--processes must be positive")
        if args.processes > 1 and not (rate is not None or stages is not None):
            raise stress.StressInputError("--processes spreads an open loop (--rate or --stages)")
        length = stress.parse_duration(str(duration), "--duration") if duration is not None else None
        if length is not None and requests is not None:
            raise stress.StressInputError("give --requests or --duration, not both")
        plan = {"mode": mode, "requests": requests, "duration": length, "schedule": None}
        if mode == "closed":
            c = 8 if concurrency is None else concurrency
            if not isinstance(c, int) or c < 1:
                raise stress.StressInputError(f"--concurrency {c}: must be a positive whole number")
            plan["concurrency"] = c
            if length is None and requests is None:
                plan["requests"] = 1000
        elif mode == "rate":
            r = stress.parse_rate(str(rate), "--rate")
            plan["rate"] = r
            plan["duration"] = length = requests / r if requests is not None else (length or 10.0)
            plan["schedule"] = stress.Schedule.constant(r, length)
        elif mode == "stages":
            if length is not None or requests is not None:
                raise stress.StressInputError("--stages set the run's length: no --duration or --requests with them")
            plan["stages"] = stress.parse_stages(str(stages))
            plan["schedule"] = stress.Schedule(plan["stages"])
            plan["duration"] = length = plan["schedule"].duration
        else:
            if not args.slo_p99:
                raise stress.StressInputError("--find-limit needs --slo-p99, e.g. --slo-p99 50ms")
            if length is not None or requests is not None:
                raise stress.StressInputError("--find-limit runs probes of --probe-duration within --budget: "
                                              "no --duration or --requests")
            plan["slo_p99_s"] = stress.parse_duration(args.slo_p99, "--slo-p99", default_unit="ms")
            plan["max_error_rate"] = stress.parse_threshold(f"errors<{args.max_error_rate}").value
            plan["start_rate"] = stress.parse_rate(args.start_rate, "--start-rate")
            plan["max_rate"] = stress.parse_rate(args.max_rate, "--max-rate")
            if plan["start_rate"] > plan["max_rate"]:
                raise stress.StressInputError("--start-rate is above --max-rate")
            plan["probe_s"] = stress.parse_duration(args.probe_duration, "--probe-duration")
            plan["budget_s"] = stress.parse_duration(args.budget, "--budget")
            if plan["budget_s"] < plan["probe_s"]:
                raise stress.StressInputError("--budget is shorter than one --probe-duration")
        faults = [fl.parse_fault(str(t)) for t in list(scenario.get("faults", [])) + args.fault]
        if faults and mode == "find-limit":
            raise stress.StressInputError("faults run under a fixed load (--rate, --stages or --duration), "
                                          "not with --find-limit")
        if faults and length is None:
            raise stress.StressInputError("faults need a run of known length: --duration, --rate or --stages")
        for f in faults:
            if f.at >= length:
                raise stress.StressInputError(f"fault {f.label} at {f.at:g}s comes after the run's end ({length:g}s)")
        fl.check(faults, fl.Controls(target, args.model_base_path, args.server_pid))
        for f in faults:
            if f.kind == "reload":  # a config that does not parse is refused now, not mid-run
                try:
                    reload_config(pathlib.Path(f.arg))
                except VersoError as e:
                    raise stress.StressInputError(f"fault {f.label}: {e.message}") from None
        plan["faults"] = sorted(faults, key=lambda f: f.at)
        plan["thresholds"] = [stress.parse_threshold(str(t))
                              for t in list(scenario.get("thresholds", [])) + args.threshold]
    except stress.StressInputError as e:
        raise UsageError(str(e)) from None
    if args.feedback and not args.dataset:
        raise UsageError("--feedback needs --dataset with labels")
    return plan


async def _inject(faults: list, client, controls, start: float) -> list[dict]:
    """Each fault at its time after ``start`` (``time.monotonic``); what happened to each."""
    import asyncio
    import pathlib
    import time

    from client import faults as fl

    events = []
    for f in faults:
        delay = start + f.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.monotonic() - start
        try:
            if f.kind == "swap":
                result = await asyncio.to_thread(fl.swap, controls.base_path, f.arg)
            elif f.kind == "remove":
                result = await asyncio.to_thread(fl.remove, controls.base_path, f.arg)
            elif f.kind == "kill-worker":
                result = fl.kill_worker(controls.server_pid)
            else:
                await client.reload(pathlib.Path(f.arg))
                result = f"config {f.arg} applied"
            error = None
        except Exception as e:  # a fault that could not be done is part of the report, not a crash
            result, error = None, f"{type(e).__name__}: {e}"
        events.append({"label": f.label, "kind": f.kind, "arg": f.arg, "at_s": f.at, "began_s": began,
                       "done_s": time.monotonic() - start, "result": result, "error": error})
    return events


async def _sender(args, client, given, dataset):
    """The one call a run repeats: ``(send, rows per call, feedback counter)``. ``send()``
    makes the next Predict (requests encoded once, before the run, so the run measures the
    server, not the client's encoding) and returns the version that answered."""
    import itertools

    from client import bench, stress
    from client._api import bind_inputs, make_spec
    from client.errors import VersoError

    spec = make_spec(args.model, args.version, args.label, args.signature)
    try:
        signature = (await client.metadata(args.model, **_servable(args))).signature(args.signature)
    except VersoError as e:
        # A server without GetModelMetadata (benchmarks/echo_server.py: the tool's own
        # ceiling) can still be loaded with given inputs over gRPC, which carry dtypes.
        if not (e.code.name == "UNIMPLEMENTED" and given is not None and not client._codec.needs_signature):
            raise
        signature = None
    if dataset is not None:
        try:
            batches = bench.dataset_batches(dataset, list(signature.inputs), args.rows)
        except ValueError as e:
            raise CliError(str(e)) from None
        if args.feedback and batches[0].labels is None and batches[0].targets is None:
            raise CliError(f"--feedback: {args.dataset} has no 'labels' or 'targets' array")
    else:
        arrays = bench.generated_inputs(signature, args.rows) if given is None else bind_inputs(given, signature)
        batches = [bench.Batch(arrays)]
    first = next(iter(batches[0].inputs.values()), None)
    rows = int(first.shape[0]) if first is not None and first.ndim else 1
    keys = [f"user-{i}" for i in range(args.routing_keys)] or [None]
    codec = client._codec
    calls = [(codec.predict_request(spec, b.inputs, None, key, b.slice), b) for b in batches for key in keys]
    turn = itertools.count()
    missing_id = [0]  # answers that carried no request id: no feedback could be sent for them

    async def send():
        request, b = calls[next(turn) % len(calls)]
        raw = await client._io("predict", request, client.timeout)
        version = codec.version_of(raw)
        request_id = codec.request_id_of(raw)
        if not args.feedback:
            return version
        if not request_id:
            missing_id[0] += 1
            return version
        # Made after the Predict is timed and counted: its time and its refusal are its own.
        return stress.Answered(version, lambda: client.feedback(
            request_id, b.labels if b.labels is not None else (), targets=b.targets if b.targets is not None else ()))

    return send, rows, missing_id


def _bench_process(args, schedule, start_at: float) -> dict:
    """One of ``--processes``' client processes: its share of the open loop, from ``start_at``
    (time.monotonic, the same clock in every process of this machine); the Recorder as a dict."""
    import asyncio
    import time

    from client._light import use_protos_without_runtime

    use_protos_without_runtime()  # a spawned process: as main() does, no TensorFlow runtime
    from client import stress

    async def run():
        client = _client(args, aio=True, max_attempts=1)
        try:
            dataset = _load_dataset(args.dataset) if args.dataset else None
            send, _, _ = await _sender(args, client, parse_inputs(args.inputs), dataset)
            rec = await stress.open_loop(send, schedule, max_in_flight=args.max_in_flight, clock=time.monotonic,
                                         start=start_at)
            return rec.to_dict()
        finally:
            await client.close()

    return asyncio.run(run())


async def _open_loop_processes(args, plan: dict, start_at: float):
    """The open loop over ``--processes`` client processes, each sending 1/N of the schedule
    (its rates divided by N), all from the same start; their recorders merged."""
    import asyncio
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from client import stress

    n = args.processes
    share = plan["schedule"].scaled(1 / n)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _bench_process, args, share, start_at)
                                       for _ in range(n)))
    rec = stress.Recorder()
    for part in parts:
        rec.merge(stress.Recorder.from_dict(part))
    return rec


def _bench(args) -> None:
    import asyncio
    import time

    from client import stress
    from client import faults as fl

    target = args.rest or args.target
    plan = _stress_plan(args, target)
    given = parse_inputs(args.inputs)
    dataset = _load_dataset(args.dataset) if args.dataset else None
    controls = fl.Controls(target, args.model_base_path, args.server_pid)

    async def main() -> dict:
        # No retries: a stress test reports the server's UNAVAILABLE answers, not hides them.
        client = _client(args, aio=True, max_attempts=1)
        try:
            send, rows, missing_id = await _sender(args, client, given, dataset)
            mode = plan["mode"]
            common = {"target": target, "model": args.model, "rows": rows}
            injecting = None
            try:
                if mode == "closed":
                    injecting = asyncio.ensure_future(_inject(plan["faults"], client, controls, time.monotonic()))
                    rec = await _with_progress(send, args, plan)
                    report = stress.summarize(rec, mode=mode, concurrency=plan["concurrency"], **common)
                elif mode in ("rate", "stages"):
                    if args.processes > 1:
                        start_at = time.monotonic() + 5.0  # time for every process to start and connect
                        injecting = asyncio.ensure_future(_inject(plan["faults"], client, controls, start_at))
                        rec = await _open_loop_processes(args, plan, start_at)
                    else:
                        view = _LiveView(args)
                        start_at = time.monotonic()
                        injecting = asyncio.ensure_future(_inject(plan["faults"], client, controls, start_at))
                        rec = await view.run(stress.open_loop(
                            send, plan["schedule"], max_in_flight=args.max_in_flight, clock=time.monotonic,
                            start=start_at, on_second=view.on_second if view.enabled else None))
                    extra = {"rate": plan["rate"]} if mode == "rate" else {
                        "stages": [{"duration_s": st.duration, "rate": st.rate} for st in plan["stages"]]}
                    report = stress.summarize(rec, mode=mode, offered=plan["schedule"].expected(),
                                              processes=args.processes, **extra, **common)
                else:
                    report = await _find_limit(send, plan, args, common)
                events = await injecting if injecting is not None else []
            finally:
                if injecting is not None:
                    injecting.cancel()
            if events:
                for e in events:
                    e["before"] = rec.window(e["at_s"] - 5, e["at_s"])
                    e["after"] = rec.window(e["at_s"], e["at_s"] + 5)
                report["faults"] = events
            if args.feedback:
                fb = report.setdefault("feedback", stress.Recorder().feedback_summary())
                fb["no_request_id"] = missing_id[0]  # this process's (--processes: the others' are not known)
                report["feedback_sent"] = fb["sent"]  # kept for scripts written against earlier versions
            report["thresholds"] = stress.check_thresholds(plan["thresholds"], report)
            return report
        finally:
            await client.close()

    report = asyncio.run(main())
    if args.json == "-":
        _print_json(report)
    else:
        _show_bench(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2, allow_nan=True)
    if args.plot:
        from client import stress_view
        try:
            stress_view.plot(report, args.plot)
        except RuntimeError as e:
            raise CliError(str(e)) from None
    if report["ok"] == 0 and report["requests"] and report["mode"] != "find-limit":
        code, message = next(iter(report["error_examples"].items()))
        raise CliError(f"every call failed: {code}: {message}")
    failed = [t for t in report["thresholds"] if not t["passed"]]
    if failed:
        raise CliError("thresholds failed: " + ", ".join(
            f"{t['threshold']} (actual {'-' if t['actual'] is None else format(t['actual'], '.4g')})" for t in failed))


async def _find_limit(send, plan: dict, args, common: dict) -> dict:
    from client import stress

    recorders = {}
    show = not args.no_progress and sys.stderr.isatty()

    async def probe(rate: float):
        rec = await stress.open_loop(send, stress.Schedule.constant(rate, plan["probe_s"]),
                                     max_in_flight=args.max_in_flight)
        recorders[rate] = rec
        p99 = stress.percentile_ms(rec.all, 99)
        p = stress.Probe(rate, None if p99 is None else p99 / 1e3, rec.error_rate(),
                         rec.ok.get_total_count() / max(rec.wall_s, 1e-9))
        if show:
            print(f"probe {rate:.1f} req/s: p99 {p99 if p99 is not None else float('nan'):.2f} ms, "
                  f"errors {p.error_rate * 100:.2f} %", file=sys.stderr)
        return p

    limit = await stress.find_limit(probe, slo_p99_s=plan["slo_p99_s"], max_error_rate=plan["max_error_rate"],
                                    start_rate=plan["start_rate"], max_rate=plan["max_rate"],
                                    probe_s=plan["probe_s"], budget_s=plan["budget_s"])
    shown = limit.knee if limit.knee is not None else limit.probes[-1].rate
    report = stress.summarize(recorders[shown], **common, mode="find-limit", rate=shown)
    report["slo_p99_ms"] = plan["slo_p99_s"] * 1e3
    report["max_error_rate"] = plan["max_error_rate"]
    report["limit"] = {"knee": limit.knee, "first_bad": limit.first_bad, "stopped_by": limit.stopped_by,
                       "probes": [{"rate": p.rate, "p99_ms": None if p.p99_s is None else p.p99_s * 1e3,
                                   "error_rate": p.error_rate, "achieved": p.achieved, "ok": p.ok}
                                  for p in limit.probes]}
    return report


class _LiveView:
    """The live per-second table of an open loop, on a terminal only (not with --no-progress)."""

    def __init__(self, args):
        self.enabled = not args.no_progress and sys.stderr.isatty()
        self._live = None

    def on_second(self, second: int, rec) -> None:
        from client import stress_view

        if self._live is not None:
            self._live.update(stress_view.live_table(rec, second))

    async def run(self, coro):
        if not self.enabled:
            return await coro
        from rich.live import Live

        with Live(console=_console(stderr=True), refresh_per_second=2) as live:
            self._live = live
            return await coro


async def _with_progress(send, args, plan: dict):
    from client import stress

    requests, duration = plan["requests"], plan["duration"]
    run = dict(concurrency=plan["concurrency"], requests=requests, duration=duration)
    if args.no_progress or not sys.stderr.isatty():
        return await stress.closed_loop(send, **run)
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console(stderr=True)
    columns = [TextColumn("bench"), BarColumn(), MofNCompleteColumn() if requests else TextColumn(""),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=requests if requests else duration)
        start = time.perf_counter()

        def on_done():
            if requests:
                progress.advance(task)
            else:
                progress.update(task, completed=min(time.perf_counter() - start, duration))

        return await stress.closed_loop(send, **run, on_done=on_done)


def _rollout_doc(status) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(status, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _known(x: float, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    return "-" if x < 0 else fmt.format(x * scale)


def _age(seconds: float) -> str:
    if seconds < 0:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _training_per_1000(cost) -> str:
    """The training money per 1000 predictions served (a cell beside the serving cost)."""
    if cost.training_money_per_1000 < 0:
        return "-"
    return f"{cost.training_money_per_1000:.6f} {cost.training.currency or cost.currency or 'USD'}"


def _training_line(v) -> str:
    """What training the version cost and what serving and training cost together per 1000."""
    t, c = v.cost.training, v.cost
    parts = [f"{label} {value:g}" for label, value in (("CPU h", t.cpu_hours), ("GPU h", t.gpu_hours)) if value >= 0]
    if t.money >= 0:
        parts.append(f"{t.money:.2f} {t.currency or c.currency or 'USD'}")
    line = f"v{v.version} training: " + (", ".join(parts) or "given, no figures")
    if c.training_money_per_1000 >= 0:
        line += f"; {_training_per_1000(c)} per 1000 over the {c.predictions} predictions served"
    if c.total_money_per_1000 >= 0:
        line += f"; serving + training {c.total_money_per_1000:.6f} {c.currency or 'USD'} per 1000"
    return line


def _versions_columns(status) -> list:
    """The versions table of ``compare`` / ``rollout status``, most important columns first
    (priority 0: always shown; the higher, the sooner dropped on a narrow terminal). A new
    column is one more entry."""
    from client.table_fit import Column

    def errors(v) -> str:
        text = ", ".join(f"{k} {n}" for k, n in sorted(v.errors.items())) or "0"
        if v.caller_errors:  # the caller's failures: shown, never judged (their codes: --json)
            text += f" (+{sum(v.caller_errors.values())} caller)"
        return text

    def agree(v) -> str:
        return f"{_known(v.top1_agreement, '{:.1f}', 100)} % ({v.shadow_compared})" if v.top1_agreement >= 0 else "-"

    def accuracy(v) -> str:
        return f"{_known(v.accuracy, '{:.1f}', 100)} % ({v.feedback})" if v.accuracy >= 0 else "-"

    return [
        Column("version", 0, lambda v: str(v.version)),
        Column("role", 0, lambda v: v.role or "-", justify="left"),
        Column("traffic", 1, lambda v: f"{v.traffic_percent:g} %"),
        Column("calls", 1, lambda v: str(v.requests)),
        Column("accuracy", 1, accuracy),
        Column("errors", 2, errors, wraps=True),
        Column("p99 ms", 2, lambda v: _known(v.p99_ms)),
        Column("top-1 agree", 3, agree),
        Column("p50 ms", 4, lambda v: _known(v.p50_ms)),
        Column("loss", 4, lambda v: _loss(v.loss)),
        Column("req/s", 5, lambda v: f"{v.requests_per_second:.1f}"),
        Column("CPU s/1k", 5, lambda v: _known(v.cost.cpu_seconds_per_1000, "{:.3f}")),
        Column("drift", 5, lambda v: _drift(v.drift), justify="left", wraps=True),
        Column("age", 6, lambda v: _age(v.age_seconds) + (" STALE" if v.stale else "")),
        Column("cost/1k", 6, lambda v: (f"{v.cost.money_per_1000:.6f} {v.cost.currency}"
                                        if v.cost.money_per_1000 >= 0 else "-")),
        Column("train/1k", 6, lambda v: _training_per_1000(v.cost)),
        Column("max diff", 7, lambda v: _known(v.max_abs_diff, "{:.3g}")),
    ]


def _checks_columns() -> list:
    """The checks table of every verdict (``compare``, ``rollout status``, ``rollout verdict``)."""
    from client.table_fit import Column

    def known(c) -> bool:
        return c.statistic == c.statistic  # NaN: not measured yet

    return [
        Column("check", 0, lambda c: c.name, justify="left"),
        Column("result", 0, lambda c: c.result, justify="left"),
        Column("estimate", 1, lambda c: f"{c.statistic:.4g}" if known(c) else "-"),
        Column("gate", 1, lambda c: f"{c.limit:g}"),
        Column("interval", 2, lambda c: f"[{c.low:.4g}, {c.high:.4g}]" if known(c) else "-"),
        Column("samples c / s", 3, lambda c: f"{c.canary_samples} / {c.stable_samples}"),
        Column("about", 2, lambda c: c.subject or "", justify="left", wraps=True),
    ]


def _print_table(console, columns: list, rows, wide: bool, title: Optional[str] = None) -> None:
    """``rows`` under ``columns``, the least important columns dropped to fit the console's
    width (``wide``: all of them, however wide), with a line naming what was dropped."""
    from client import table_fit

    width = None if wide else console.width
    table, dropped = table_fit.render(columns, rows, width, title=title)
    if wide:
        console.width = max(console.width, table_fit.required_width(columns, rows))
    console.print(table)
    if dropped:
        console.print(f"(not shown at this width: {', '.join(dropped)}; --wide shows every column)")


def _when(unix_time: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(unix_time, datetime.timezone.utc).strftime("%H:%M:%S UTC")


def _headline(status) -> str:
    """The verdict in a word: PROMOTED after a promotion, else the decision (and final)."""
    v = status.verdict
    if v.promoted_version and not status.config.canary:
        return "PROMOTED"
    return (v.decision or "no verdict") + (" (final)" if v.final else "")


def _outlook_lines(status) -> list[str]:
    """What happens next: a promotion said as such, failed analyses of the threshold, the next
    analysis and step, the checks' source on a final verdict, each INCONCLUSIVE check's needs."""
    v, cfg = status.verdict, status.config
    out = []
    if v.promoted_version and not cfg.canary:
        by = "automatic" if v.promoted_by == "automatic" else f"by {v.promoted_by or 'an operator'}"
        out.append(f"v{v.promoted_version} was promoted: it is the stable version"
                   + (f" (was v{v.promoted_from})" if v.promoted_from else "")
                   + (f", {by} at {_when(v.promoted_unix_time)}" if v.promoted_unix_time else ""))
    if cfg.canary and v.failure_threshold and (cfg.auto.enabled or v.failed_analyses):
        out.append(f"failed analyses: {v.failed_analyses} of {v.failure_threshold} (ROLLBACK at "
                   f"{v.failure_threshold} in a row)")
    if v.next_analysis_in_seconds >= 0 and v.next_analysis_unix_time > 0:
        out.append(f"next analysis at {_when(v.next_analysis_unix_time)} (in {v.next_analysis_in_seconds:.0f} s): "
                   f"{v.next_step}")
    elif v.next_step:
        out.append(f"next: {v.next_step}")
    if v.checks_note:
        out.append(f"checks: {v.checks_note}")
    for c in v.checks:
        if c.forecast:
            out.append(f"{c.name}{f' ({c.subject})' if c.subject else ''} needs: {c.forecast}")
    return out


def _show_verdict(console, status, wide: bool) -> None:
    """Every verdict's checks table (final ones included), its reasons and what happens next."""
    if status.verdict.checks:
        _print_table(console, _checks_columns(), list(status.verdict.checks), wide,
                     title="checks (canary against stable)")
    console.print(f"verdict: {_headline(status)}")
    for reason in status.verdict.reasons:
        console.print(f"  {reason}")
    for line in _outlook_lines(status):
        console.print(line)


def _show_compare(status, as_json: bool, wide: bool = False) -> None:
    """Side by side: traffic, latency, errors, quality, loss, cost, age and drift per version
    (the columns that fit the terminal; ``wide``: all); per-class and per-slice tables worst
    first; each check; the verdict and what happens next."""
    if as_json:
        _print_json(_rollout_doc(status))
        return
    cfg = status.config
    console = _console()
    promoted = status.verdict.promoted_version if not cfg.canary else 0
    console.print(f"rollout of {cfg.model}: stable v{cfg.stable}"
                  + (f" (promoted from v{status.verdict.promoted_from})" if promoted and status.verdict.promoted_from
                     else " (promoted)" if promoted else "")
                  + (f", canary v{cfg.canary} at {cfg.canary_percent:g} %" if cfg.canary else ", no canary")
                  + (f", shadow {cfg.shadow_percent:g} %" if cfg.shadow_percent else "")
                  + (", automatic" if cfg.auto.enabled else ""))
    _print_table(console, _versions_columns(status), list(status.versions), wide)
    roles = {v.role: v for v in status.versions if v.role in ("stable", "canary")}
    if roles:
        _side_by_side(console, "class", "recall", {r: {c.label: (c.recall, c.support) for c in v.classes}
                                                   for r, v in roles.items()})
        _side_by_side(console, "slice", "accuracy", {r: {sl.slice: (sl.accuracy, sl.rows) for sl in v.slices}
                                                     for r, v in roles.items()})
    for v in status.versions:
        if v.outputs:
            parts = [f"{alias}: max diff {_known(d.max_abs_diff, '{:.3g}')}"
                     + (f", top-1 agree {d.top1_agreement * 100:.1f} %" if d.top1_agreement >= 0 else "")
                     for alias, d in sorted(v.outputs.items())]
            console.print(f"{_shadow_of(status, v)}, per output: " + "; ".join(parts))
        if v.cost.HasField("training"):
            console.print(_training_line(v), markup=False)
        if v.info.problems:
            console.print(f"v{v.version} problems: " + "; ".join(v.info.problems))
    _show_verdict(console, status, wide)
    for alarm in status.alarms:
        console.print(f"alarm: {alarm}")


def _shadow_of(status, v) -> str:
    """Whom a version's shadow comparisons were against: the stable version for the canary; for
    a version promoted since (or an earlier canary), the stable version of that time."""
    cfg = status.config
    if v.role == "canary":
        return f"v{v.version} vs stable v{cfg.stable}"
    if v.version == status.verdict.promoted_version and status.verdict.promoted_from:
        return f"v{v.version} as canary, before its promotion, vs v{status.verdict.promoted_from}"
    return f"v{v.version} as an earlier canary, vs the stable version of that time"


def _loss(loss) -> str:
    if loss.log_loss >= 0:
        return f"{loss.log_loss:.3f} log ({loss.rows})"
    if loss.mse >= 0:
        return f"{loss.mse:.3g} mse ({loss.rows})"
    return "-"


def _drift(drift) -> str:
    if drift.problem:
        return "reference unreadable"
    if not drift.has_reference:
        return "-"
    if not drift.worst:
        return f"no data ({drift.live_rows} rows)"
    worst = ", ".join(f"{f.feature} PSI {f.psi:.2f}" for f in drift.worst[:2])
    return ("DRIFTING: " if drift.drifting else "ok: ") + worst


def _side_by_side(console, what: str, measure: str, by_role: dict) -> None:
    """A per-class or per-slice table of stable against canary, the largest drop first."""
    from rich.table import Table

    stable, canary = by_role.get("stable", {}), by_role.get("canary", {})
    keys = sorted(set(stable) | set(canary))
    if not keys:
        return

    def drop(k):
        s, c = stable.get(k, (-1, 0))[0], canary.get(k, (-1, 0))[0]
        return s - c if s >= 0 and c >= 0 else float("-inf")

    table = Table(title=f"per {what} ({measure} from feedback; worst first)")
    for col in (what, f"stable {measure}", f"canary {measure}", "change, points"):
        table.add_column(col, justify="left" if col == what else "right")
    for k in sorted(keys, key=drop, reverse=True):
        s, c = stable.get(k, (-1, 0)), canary.get(k, (-1, 0))
        d = drop(k)
        table.add_row(k, f"{_known(s[0], '{:.1f}', 100)} % ({s[1]})", f"{_known(c[0], '{:.1f}', 100)} % ({c[1]})",
                      f"{-d * 100:+.1f}" if d != float("-inf") else "-")
    console.print(table)


def _show_evidence_since(status) -> None:
    """When each version's evidence began: evidence belongs to the build loaded now (a version
    removed and re-created starts afresh), named by its load identity."""
    import datetime

    console = _console()
    for v in status.versions:
        if v.evidence_since_unix_time > 0:
            when = datetime.datetime.fromtimestamp(v.evidence_since_unix_time, datetime.timezone.utc)
            console.print(printable(f"v{v.version} evidence since {when:%Y-%m-%d %H:%M:%S} UTC"
                                    + (f" (build {v.load_id})" if v.load_id else "")))


def this_rollouts_decisions(decisions, all_decisions: bool = False) -> tuple[list, int]:
    """The decisions to show: this rollout's (``all_decisions``: every one kept), and how many
    of earlier rollouts were left out."""
    shown = [d for d in decisions if all_decisions or not d.earlier_rollout]
    return shown, len(decisions) - len(shown)


def _show_status_log(status, all_decisions: bool = False) -> None:
    import datetime

    console = _console()
    shown, earlier = this_rollouts_decisions(status.decisions, all_decisions)
    if status.rollout_started_unix_time:
        when = datetime.datetime.fromtimestamp(status.rollout_started_unix_time, datetime.timezone.utc)
        console.print(f"decisions of this rollout (since {when.strftime('%Y-%m-%d %H:%M:%S')} UTC):")
    for d in shown:
        when = datetime.datetime.fromtimestamp(d.unix_time, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"{when} UTC  {d.who or '-'}: {d.text}" + ("  [earlier rollout]" if d.earlier_rollout else ""))
    if earlier:
        console.print(f"({earlier} decision{'s' if earlier != 1 else ''} of earlier rollouts not shown: "
                      "--all-decisions shows them)")
    console.print(f"state file: {status.state_file or 'none (in memory)'}", markup=False, highlight=False)


def _rollout(args) -> None:
    with _client(args) as c:
        if args.rollout_command == "set":
            fields = {}
            if args.auto or args.interval or args.steps:
                fields["auto"] = {"enabled": bool(args.auto), "interval_seconds": args.interval,
                                  "steps": [float(x) for x in args.steps.split(",") if x.strip()]}
            gates = {flag: getattr(args, flag) for flag, _, _ in ROLLOUT_GATES if getattr(args, flag)}
            if gates:
                fields["gates"] = gates
            for field, value in (("max_age_seconds", args.max_age), ("window", args.window),
                                 ("shadow_max_in_flight", args.shadow_max_in_flight),
                                 ("evidence_output", args.evidence_output),
                                 ("scores_output", args.scores_output),
                                 ("labels", [x.strip() for x in args.labels.split(",") if x.strip()])):
                if value:
                    fields[field] = value
            prices = {k: v for k, v in (("cost_per_cpu_hour", args.cost_per_cpu_hour),
                                        ("cost_per_gib_hour", args.cost_per_gib_hour),
                                        ("currency", args.currency)) if v}
            if prices:
                fields["prices"] = prices
            status = c.set_rollout(args.model, stable=args.stable, canary=args.canary, canary_percent=args.percent,
                                   shadow_percent=args.shadow, **fields)
            _show_compare(status, args.json, args.wide)
            return
        status = c.rollout(args.model)
    if args.rollout_command == "verdict":
        if args.json:
            v = status.verdict
            _print_json({"model": args.model, "decision": v.decision, "final": v.final,
                         "promoted": ({"version": v.promoted_version, "from": v.promoted_from,
                                       "unix_time": v.promoted_unix_time, "by": v.promoted_by}
                                      if v.promoted_version and not status.config.canary else None),
                         "failed_analyses": v.failed_analyses, "failure_threshold": v.failure_threshold,
                         "next_analysis_unix_time": v.next_analysis_unix_time or None,
                         "next_analysis_in_seconds": v.next_analysis_in_seconds if v.next_analysis_in_seconds >= 0
                         else None, "next_step": v.next_step, "checks_note": v.checks_note,
                         "reasons": list(v.reasons), "tradeoff": v.tradeoff, "worst_drop": v.worst_drop,
                         "checks": [{"name": c.name, "result": c.result, "statistic": c.statistic, "low": c.low,
                                     "high": c.high, "limit": c.limit, "canary_samples": c.canary_samples,
                                     "stable_samples": c.stable_samples, "subject": c.subject,
                                     "more_canary_samples": c.more_canary_samples,
                                     "more_stable_samples": c.more_stable_samples, "samples_unit": c.samples_unit,
                                     "forecast": c.forecast} for c in v.checks]})
            return
        console = _console()
        console.print(_headline(status).split(" (")[0])  # the decision alone on the first line, for scripts
        _show_verdict(console, status, args.wide)
        return
    _show_compare(status, args.json, args.wide)
    if not args.json:
        _show_evidence_since(status)
        _show_status_log(status, args.all_decisions)


def _compare(args) -> None:
    with _client(args) as c:
        status = c.rollout(args.model)
    _show_compare(status, args.json, args.wide)
    if args.plot:
        _plot(status, args.plot)
    if args.html:
        _html(status, args.html)


def _plot(status, path: str) -> None:
    try:
        from client import report
        report.plot(status, path)
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'verso[plot]'") from None
    print(f"wrote {path}")


def _html(status, path: str) -> None:
    """One self-contained page (the dashboard's renderer with the data embedded)."""
    from google.protobuf import json_format

    from client import report

    def doc(message) -> dict:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    versions = [{"version": v.version, "state": "AVAILABLE" if v.available else "not loaded", "error": "",
                 "age_seconds": v.age_seconds if v.age_seconds >= 0 else None, "age_source": v.info.age_source,
                 "info": doc(v.info), "drift": doc(v.drift), "resident_bytes": v.cost.resident_bytes,
                 "cost": doc(v.cost)} for v in status.versions]
    report.write_html(report.status_document(status, [{"name": status.config.model, "versions": versions}]), path)
    print(f"wrote {path}")


def _feedback(args) -> None:
    with _client(args) as c:
        r = c.feedback(args.request_id, args.labels)
    print(printable(f"{r.model} v{r.version}: {r.correct} of {r.rows} rows correct"))


def _one_line(text: str) -> str:
    """An error message (it may quote what a caller sent) as one printable line."""
    return printable(" ".join(text.split()))


_HANDLERS = {"predict": _predict, "status": _status, "metadata": _metadata, "reload": _reload, "bench": _bench,
             "rollout": _rollout, "compare": _compare, "feedback": _feedback}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one client command; returns the process exit status."""
    from client._light import use_protos_without_runtime

    use_protos_without_runtime()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)  # exits 2 on a usage error
    from client.errors import VersoError

    try:
        _HANDLERS[args.command](args)
    except UsageError as e:
        print(f"verso: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, VersoError) as e:
        print(f"verso: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line, the traceback only when asked for
        if os.environ.get("VERSO_DEBUG"):
            raise
        print(f"verso: error: {type(e).__name__}: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    return 0


VERSO_USAGE = """usage: verso <command> [flags]

commands:
  serve [TF Serving flags]   run the model server; with neither --model_config_file nor
                             --model_base_path it serves the bundled model_repository/.
                             Unlike tensorflow_model_server it serves REST on 8501 and
                             Prometheus metrics at /monitoring/prometheus/metrics by default
  predict MODEL [INPUT...]   run Predict and print the outputs
  status MODEL               versions and their states
  metadata MODEL             signatures with dtypes and shapes
  reload CONFIG_FILE         send a model config file (ReloadConfig)
  bench MODEL [INPUT...]     stress test: calls in flight or an open-loop --rate/--stages,
                             --find-limit --slo-p99, --fault during the load, --threshold
  rollout set|verdict|status MODEL
                             a model's canary rollout: configure the split, shadow traffic
                             and gates; its verdict; its evidence per version
  compare MODEL              side-by-side evidence of a model's versions (--plot FILE.png, --html FILE.html)
  feedback REQUEST_ID LABEL...
                             ground truth for an earlier answer (rollout accuracy)

The client commands talk to --target (gRPC, default localhost:8500) or --rest URL;
`verso COMMAND --help` lists each command's flags.
"""


# ``verso serve`` runs the server in this process's place (same PID, so signals and exit status
# are the server's) without importing it: the client never imports the server, and the code
# drops the working directory from sys.path first, so a user's own ``server.py`` next to their
# code cannot stand in for Verso's package.
SERVE_CODE = "import sys; sys.path.pop(0); from server.cli import verso_serve_main; sys.exit(verso_serve_main())"


def verso_main(argv: Optional[list[str]] = None) -> int:
    """The ``verso`` command: ``serve`` becomes the server (exec), the rest are client commands."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(VERSO_USAGE)
        return 0 if argv else 2
    if argv[0] == "serve":
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-c", SERVE_CODE, *argv[1:]])
    if argv[0] in COMMANDS:
        return main(argv)
    print(f"verso: unknown command {argv[0]!r}\n{VERSO_USAGE}", file=sys.stderr)
    return 2
