"""verso_model.json's training_cost: parsed and validated (a bad one is a problem, never a failed
load), and amortised over the predictions a version has served."""

from __future__ import annotations

import json
import os

import pytest

from protos import rollout_pb2
from server.rollout.cost import CostMeter, CpuShare, amortised_per_1000
from server.rollout.facts import TrainingCost, VersionFacts, parse_training_cost, read_facts
from server.rollout.manager import RolloutManager


def _write(path, doc) -> None:
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", "verso_model.json"), "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))


def test_a_training_cost_is_read_with_the_other_facts(tmp_path):
    _write(str(tmp_path), {"trained_at": 1.7e9, "training_cost": {"cpu_hours": 12, "gpu_hours": 2.5, "money": 31.4,
                                                                   "currency": "eur"}})
    f = read_facts(str(tmp_path))
    assert f.training_cost == TrainingCost(cpu_hours=12.0, gpu_hours=2.5, money=31.4, currency="EUR")
    assert (f.trained_at, f.problems) == (1.7e9, ())
    assert parse_training_cost({}) == TrainingCost()                      # every key optional
    assert parse_training_cost({"money": 0}) == TrainingCost(money=0.0)


@pytest.mark.parametrize("value, problem", [
    ('"ten dollars"', "training_cost must be an object, not str"),
    ('{"money": "lots"}', "training_cost.money must be a finite number >= 0, not 'lots'"),
    ('{"cpu_hours": -1}', "training_cost.cpu_hours must be a finite number >= 0, not -1"),
    ('{"gpu_hours": true}', "training_cost.gpu_hours must be a finite number >= 0, not True"),
    ('{"money": NaN}', "training_cost.money must be a finite number >= 0, not nan"),
    ('{"money": 1e999}', "training_cost.money must be a finite number >= 0, not inf"),
    ('{"money": 3, "currency": "dollars"}', 'training_cost.currency must be a 3-letter code such as "USD"'),
    ('{"money": 3, "currency": 840}', 'training_cost.currency must be a 3-letter code such as "USD", not 840'),
    ('{"monney": 3}', "training_cost has unknown keys ['monney']"),
    ('{"money": {"a": "' + "x" * 500 + '"}}', "training_cost.money must be a finite number >= 0, not {'a': 'xxx"),
])
def test_a_malformed_training_cost_is_a_problem_and_the_rest_still_counts(tmp_path, value, problem, caplog):
    _write(str(tmp_path), '{"trained_at": 1700000000, "metrics": {"auc": 0.9}, "training_cost": ' + value + "}")
    f = read_facts(str(tmp_path))
    assert f.training_cost is None and len(f.problems) == 1, f.problems
    assert f.problems[0].startswith("assets.extra/verso_model.json: " + problem), f.problems[0]
    assert len(f.problems[0]) < 200                                       # a caller's value is cut short
    assert (f.trained_at, f.metrics) == (1.7e9, {"auc": 0.9})
    assert problem in caplog.text


def test_training_money_is_amortised_over_the_predictions_served():
    assert amortised_per_1000(30.0, 12_000) == pytest.approx(2.5)        # 30 / 12000 x 1000
    assert amortised_per_1000(30.0, 0) is None                          # nothing served yet
    assert amortised_per_1000(None, 100) is None                        # no money given
    assert amortised_per_1000(0.0, 100) == 0.0


def _cost(training, served, money_per_1000=-1.0, currency="") -> rollout_pb2.Cost:
    c = rollout_pb2.Cost(money_per_1000=money_per_1000, currency=currency, predictions=served)
    RolloutManager._fill_training(c, training, served, currency)
    return c


def test_status_shows_training_beside_serving_and_their_total_in_one_currency():
    t = TrainingCost(cpu_hours=4.0, money=20.0, currency="USD")
    c = _cost(t, 8000, money_per_1000=0.5, currency="USD")
    assert (c.training.cpu_hours, c.training.gpu_hours, c.training.money, c.training.currency) == (4.0, -1.0, 20.0,
                                                                                                 "USD")
    assert c.training_money_per_1000 == pytest.approx(2.5) and c.total_money_per_1000 == pytest.approx(3.0)
    # another currency than serving's: both shown, never added up
    c = _cost(TrainingCost(money=20.0, currency="EUR"), 8000, money_per_1000=0.5, currency="USD")
    assert c.training_money_per_1000 == pytest.approx(2.5) and c.total_money_per_1000 == -1.0
    # no currency: the rollout's
    assert _cost(TrainingCost(money=20.0), 8000, 0.5, "USD").total_money_per_1000 == pytest.approx(3.0)
    # serving not priced, nothing served, hours only, nothing given
    assert _cost(t, 8000).total_money_per_1000 == -1.0
    assert _cost(t, 0).training_money_per_1000 == -1.0 and _cost(t, 0).training.money == 20.0
    c = _cost(TrainingCost(gpu_hours=3.0), 8000)
    assert c.training.gpu_hours == 3.0 and c.training_money_per_1000 == -1.0
    c = _cost(None, 8000)
    assert not c.HasField("training") and c.training_money_per_1000 == -1.0


def test_the_dashboard_overview_carries_the_training_cost():
    facts = VersionFacts(training_cost=TrainingCost(money=6.0, currency="USD"))
    rm = RolloutManager(None, costs=CostMeter(CpuShare(lambda: 0.0)), facts=lambda name, version: facts)
    rm.costs.add("m", 1, 0.3, 3000)
    cost = rm.version_overview("m", 1)["cost"]
    assert cost["training"] == {"cpu_hours": -1.0, "gpu_hours": -1.0, "money": 6.0, "currency": "USD"}
    assert cost["training_money_per_1000"] == pytest.approx(2.0) and cost["predictions"] == "3000"
