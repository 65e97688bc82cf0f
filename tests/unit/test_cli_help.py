"""`verso --help` names every command, and `verso rollout set` can set every field of a
rollout, every gate included (read from the proto, so a new field without a flag fails)."""

from __future__ import annotations

import pytest

from client.cli import COMMANDS, ROLLOUT_GATES, verso_main
from client.cli import _parser as build_parser
from protos import rollout_pb2


def test_verso_help_lists_every_command(capsys):
    assert verso_main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve",) + COMMANDS:
        assert f"\n  {command} " in out, command


# ModelRollout fields whose flag is not the field's name with dashes.
RENAMED = {"canary_percent": "--percent", "shadow_percent": "--shadow", "max_age_seconds": "--max-age",
           "auto": "--auto", "gates": None, "model": None, "prices": "--cost-per-cpu-hour"}


def test_rollout_set_has_a_flag_for_every_field_and_gate(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollout", "set", "--help"])
    out = capsys.readouterr().out
    for field in rollout_pb2.ModelRollout.DESCRIPTOR.fields:
        flag = RENAMED.get(field.name, "--" + field.name.replace("_", "-"))
        if flag is not None:
            assert flag in out, field.name
    gates = [f.name for f in rollout_pb2.Gates.DESCRIPTOR.fields]
    assert [g for g, _, _ in ROLLOUT_GATES] == gates
    for gate in gates:
        assert "--" + gate.replace("_", "-") in out, gate
    for field in rollout_pb2.Auto.DESCRIPTOR.fields:
        assert {"enabled": "--auto", "steps": "--steps", "interval_seconds": "--interval"}[field.name] in out
