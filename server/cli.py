"""Console entry points: ``tensorflow_model_server`` (TF Serving's command line) and ``verso``.

``verso serve`` prints where its admin token is (``Admin token: PATH ...``) before the ready
lines, unless --admin_token_file was given. Start-up errors print one line and exit with status 255 (TF Serving returns -1); nothing
prints a traceback to the operator. A config file that does not parse prints what TF Serving
prints: protobuf's ``Error parsing text-format ...`` lines on stderr, then ``Failed to start
server. Error: INVALID_ARGUMENT: Invalid protobuf file: '<path>'`` on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from typing import Optional

EXIT_STARTUP_FAILURE = 255


class LogFormatter(logging.Formatter):
    """Each log record's message is one bounded line: newlines and other control characters in
    it (a model name, a path, an error text quoting what a caller sent) are escaped, so no caller
    can forge a log line or write to the operator's terminal, and a message longer than
    ``MAX_MESSAGE`` characters is cut. A traceback, appended after the message, keeps its line
    breaks (only its other control characters are escaped)."""

    MAX_MESSAGE = 16384
    _CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
    _NAMED = {"\n": "\\n", "\r": "\\r"}

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = record.message
        if len(text) > self.MAX_MESSAGE:
            text = f"{text[:self.MAX_MESSAGE]}... [cut: {len(text) - self.MAX_MESSAGE} more characters]"
        record.message = self._CONTROL.sub(self._escape, text)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        # A traceback's own lines stay; what acts on a terminal in them (an exception's text) does not.
        return self._CONTROL.sub(lambda m: "\n" if m.group() == "\n" else self._escape(m), super().formatException(ei))

    @classmethod
    def _escape(cls, match: re.Match) -> str:
        ch = match.group()
        named = cls._NAMED.get(ch)
        if named:
            return named
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                                      datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # TensorFlow's C++ start-up chatter is noise for a server operator; VERSO users can override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from server import __version__
    try:
        tf_version = version("tensorflow")
    except PackageNotFoundError:
        tf_version = "unknown"
    return f"TensorFlow ModelServer: {__version__}-verso\nTensorFlow Library: {tf_version}"


def run_server(argv: list[str], *, bundled_default: bool) -> int:
    from server.settings import SettingsError, parse_flags, server_config, usage

    if any(a in ("--help", "-help", "-h", "--usage") for a in argv):
        print(usage())
        return 0
    try:
        settings = parse_flags(argv)
        if settings.version:
            print(_version_text())
            return 0
        for arg in settings.unknown:
            print(f"unknown argument: {arg}", file=sys.stderr)
        config = server_config(settings, bundled_default=bundled_default)
        settings = config.settings  # with the platform config file and `verso serve`'s defaults
    except SettingsError as e:
        for line in e.log_lines:
            print(line, file=sys.stderr)
        # TF Serving's main.cc prints this line to stdout; Verso keeps its other one-line
        # start-up errors on stderr, beside the log.
        print(f"Failed to start server. Error: {e}", file=sys.stdout if e.log_lines else sys.stderr)
        return EXIT_STARTUP_FAILURE

    _setup_logging()
    log = logging.getLogger("verso")
    from server.workers import supervise, worker_number
    if worker_number() is None and settings.admin_token_file and "admin_token_file" not in settings.explicit:
        # `verso serve`'s own token: where the operator (and the verso command line) finds it.
        print(f"Admin token: {settings.admin_token_file} (control calls send 'Authorization: Bearer <token>'; "
              f"the verso command line reads it from there)", flush=True)
    if settings.num_workers > 1 and worker_number() is None:
        return supervise(argv, settings.num_workers, grace_s=settings.shutdown_grace_seconds,
                         bundled_default=bundled_default)
    if settings.unimplemented:
        log.warning("Accepted but not implemented yet by Verso, ignored: %s",
                    ", ".join("--" + n for n in settings.unimplemented))
    platform = config.platform
    if platform is not None and platform.ignored:
        log.warning("--platform_config_file %s: fields Verso does not apply, ignored: %s",
                    settings.platform_config_file, ", ".join(platform.ignored))
    if platform is not None and platform.replaced_flags:
        log.warning("--platform_config_file replaces these flags, ignored: %s",
                    ", ".join("--" + n for n in platform.replaced_flags))
    for m in config.models:
        log.info("Model %s: base path %s, policy %s", m.name, m.base_path, m.policy)

    from server.app import App, StartupError
    try:
        asyncio.run(App(config).serve())
    except StartupError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    except RuntimeError as e:  # grpc: the port could not be bound
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    return 0


def tensorflow_model_server_main(argv: Optional[list[str]] = None) -> int:
    """``tensorflow_model_server``: TF Serving's flags, TF Serving's behaviour. (A worker of
    ``verso serve --num_workers`` comes through here too, with ``verso serve``'s defaults.)"""
    from server.workers import BUNDLED_ENV
    return run_server(sys.argv[1:] if argv is None else argv, bundled_default=bool(os.environ.get(BUNDLED_ENV)))


def verso_serve_main(argv: Optional[list[str]] = None) -> int:
    """``verso serve``: TF Serving's flags with Verso's defaults (the bundled repository, REST
    on 8501, Prometheus). ``verso`` itself is the client's command line
    (``client.cli.verso_main``), which execs this for ``serve``: the server never imports the client."""
    return run_server(sys.argv[1:] if argv is None else argv, bundled_default=True)


# How another process starts this server without importing it from its working directory: a
# user's own ``server.py`` or ``server/`` next to their code must not replace Verso's package,
# and ``python -m server`` would put the working directory first on sys.path.
LAUNCH_CODE = "import sys; sys.path.pop(0); from server.cli import {main}; sys.exit({main}())"


def launch_command(main: str = "tensorflow_model_server_main") -> list[str]:
    """The argv prefix that runs ``server.cli.<main>`` in a new Python process."""
    return [sys.executable, "-c", LAUNCH_CODE.format(main=main)]
