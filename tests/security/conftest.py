"""Shared set-up of the attack suite."""

from __future__ import annotations

from pathlib import Path


def rollout_configs(repo, tmp_path: Path, rollout: str) -> list[str]:
    """Model ``m`` with versions 1 and 2 (all served), the rollout config entry ``rollout``
    (text inside ``models { model: "m" ... }``) and Prometheus on: the server flags for them."""
    repo.put("m", 1, "hp1")
    repo.put("m", 2, "hp2")
    models = tmp_path / "models.config"
    models.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{repo.path("m")}" '
                      'model_platform: "tensorflow" model_version_policy { all {} } } }\n')
    rollouts = tmp_path / "rollouts.config"
    rollouts.write_text(f'models {{ model: "m" {rollout} }}\n')
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    return [f"--model_config_file={models}", f"--rollout_config_file={rollouts}",
            f"--monitoring_config_file={monitoring}", "--version_settle_seconds=0"]
