"""The README runs as written: its calls (the official client, REST, the Python client's
snippets as doctests, the command lines) against ``verso serve`` started as the Quickstart
starts it, from ``localhost`` on a host where that is ``::1`` first (tests/readme_text.py);
every command line of docs/ is one the command line accepts; every link of the README and
docs/ resolves. The demos: test_rollout_demo.py, test_quality_demo.py, test_stress_demo.py."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import urllib.parse

import pytest

from tests.readme_text import DOCS, README, ROOT, readme_machine, section, sh_blocks, sh_lines

# Re-exported for the demo tests written against the README's first layout.
__all__ = ["README", "ROOT"]


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    with readme_machine(tmp_path_factory.mktemp("readme")) as m:
        m.serve("verso serve")
        yield m


DOCTEST_RUNNER = """
import doctest, io, sys
text = open(sys.argv[1], encoding="utf-8").read()
test = doctest.DocTestParser().get_doctest(text, {}, "README.md#using-the-client", "README.md", 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
out = io.StringIO()
runner.run(test, out=out.write)
print(len(test.examples), runner.failures)
print(out.getvalue())
"""


def test_readme_client_snippets_run_as_written(machine, tmp_path):
    blocks = re.findall(r"```pycon\n(.*?)```", section("Using the client"), flags=re.S)
    snippets = tmp_path / "snippets.txt"
    snippets.write_text("\n".join(blocks))  # one session: later blocks use earlier names
    (tmp_path / "runner.py").write_text(DOCTEST_RUNNER)
    r = machine.shell(f"python {tmp_path}/runner.py {snippets}")
    assert r.returncode == 0, r.stderr
    examples, failures = map(int, r.stdout.split("\n", 1)[0].split())
    assert examples >= 15 and failures == 0, r.stdout


def test_readme_official_client_and_rest_calls_run_as_written(machine, tmp_path):
    code = re.search(r"```python\n(.*?)```", section("Calling it with the official client"), flags=re.S).group(1)
    (tmp_path / "official.py").write_text(code)
    r = machine.shell(f"python {tmp_path}/official.py")
    assert r.returncode == 0 and r.stdout.strip() == "[2.5 3.  4.5]", (r.stdout, r.stderr)
    lines = sh_lines(section("Calling it over REST"))
    assert len(lines) == 6 and all(ln.startswith("curl ") for ln in lines), lines
    for line in lines:
        r = machine.shell(line.replace("curl -s", "curl -sf"), timeout=60)  # -f: an HTTP error fails the line
        assert r.returncode == 0 and r.stdout, (line, r.stdout, r.stderr)
    r = machine.shell(lines[0])
    assert json.loads(r.stdout) == {"predictions": [2.5, 3.0, 4.5]}, r.stdout


def test_readme_client_command_lines_run_as_written(machine):
    lines = sh_lines(section("Using the client"))
    lines += sh_lines(section("Demo: a model version with its own pre-processing"))
    assert len(lines) >= 7 and all(ln.startswith("verso ") for ln in lines), lines
    for line in lines:
        r = machine.shell(line)
        assert r.returncode == 0 and r.stdout, (line, r.stdout, r.stderr)
    assert "[7]" in machine.shell(lines[-1]).stdout


def test_the_quickstart_is_the_ci_script_and_the_server_the_tests_start():
    """The Quickstart's two commands are what a fresh clone runs: .ci/run runs the second."""
    serve, test = sh_blocks(section("Quickstart"))
    assert serve == ["python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[onnx]' && verso serve"]
    assert test == ["python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"]
    assert test[0] in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_a_newcomers_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    demos = [h for h in headings if h.startswith("Demo: ")]
    assert headings[:3] == ["Quickstart", "Calling it with the official client", "Calling it over REST"], headings
    assert demos[0] == "Demo: promote a better model, roll back a broken one"
    assert headings.index(demos[0]) == 3  # the rollout demo first, right after the calls
    assert headings[-1] == "Documentation"
    for doc in DOCS:
        assert f"(docs/{doc.name})" in section("Documentation"), f"docs/{doc.name} is not in the map"
    assert "(SECURITY.md)" in text


def _cli_accepts(argv: list[str]) -> None:
    """The ``verso`` command line's own parser takes ``argv`` (``verso serve``: the server's flags)."""
    from client.cli import _parser
    if argv[0] == "serve":
        from server.settings import parse_flags
        assert not parse_flags(argv[1:]).unknown, argv
        return
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            _parser().parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"verso {shlex.join(argv)}: {err.getvalue()}") from e


def test_every_docs_command_line_is_one_the_command_line_takes():
    """docs/ holds reference pages: their ``verso`` lines are checked against the parser (the
    README's demos, which the pages refer to, are run in full by the demo tests; the 30 s
    stress run of docs/stress-testing.md is the README's stress demo, longer)."""
    checked = 0
    for doc in DOCS:
        for line in sh_lines(doc.read_text(encoding="utf-8")):
            for part in line.split("&&"):
                argv = shlex.split(part.replace("$PWD", str(ROOT)))
                if argv and argv[0] == "verso":
                    _cli_accepts(argv[1:])
                    checked += 1
    assert checked >= 4


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for title in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        path, _, anchor = target.partition("#")
        dest = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: {target}: no such heading"


def test_a_bare_parser_check_would_catch_a_wrong_flag():
    """The docs check above can fail: a flag the command line does not have is refused."""
    with pytest.raises(AssertionError, match="unrecognized arguments"):
        _cli_accepts(["rollout", "status", "digits", "--no-such-flag"])
