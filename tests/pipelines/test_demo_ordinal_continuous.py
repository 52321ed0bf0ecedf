"""The demo's ordinal and continuous accuracy tables on simulated readers with known truth."""

import json

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation.continuous import CONTINUOUS_METHODS, RaykarRegression
from crowdmed.aggregation.ordinal import ORDINAL_METHODS, GradedResponse
from crowdmed.data.labels import CrowdLabels
from crowdmed.pipelines.demo import run_demo
from crowdmed.pipelines.demo_ordinal_continuous import (
    CONTINUOUS_SETTINGS,
    ORDINAL_SETTINGS,
    run_ordinal_continuous_part,
)
from crowdmed.simulate import simulate_continuous_readers, simulate_ordinal_readers

SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def tables():
    return {seed: run_ordinal_continuous_part(random_state=seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_ordinal_continuous")
    result = run_demo(
        out, datasets=["MS"], methods=["majority-vote"], parts=["crowd"], random_state=0
    )
    return out, result


def test_every_method_is_in_the_tables(tables):
    t = tables[0]
    expected = {m.value for m in ORDINAL_METHODS} | {"dawid-skene", "majority-vote"}
    assert set(t.ordinal["method"]) == expected
    assert t.ordinal.set_index("method").loc["majority-vote", "kind"] == "nominal baseline"
    assert set(t.continuous["method"]) == {m.value for m in CONTINUOUS_METHODS}
    assert t.ordinal[["exact_accuracy", "within_one_accuracy"]].stack().between(0, 1).all()
    assert (t.ordinal["within_one_accuracy"] >= t.ordinal["exact_accuracy"]).all()
    assert (t.continuous["rmse"] >= t.continuous["mae"]).all()  # RMSE >= MAE always
    assert t.summary["simulated"] is True


@pytest.mark.parametrize("seed", SEEDS)
def test_order_and_reader_models_win(tables, seed):
    ordinal = tables[seed].ordinal.set_index("method")
    continuous = tables[seed].continuous.set_index("method")
    exact = ordinal["exact_accuracy"]
    # Measured on seeds 0-7: graded response 0.61-0.69, majority vote 0.45-0.56,
    # Dawid–Skene 0.50-0.57, median 0.49-0.58.
    assert exact["graded-response"] > exact["majority-vote"] + 0.05
    assert exact["graded-response"] > max(exact["dawid-skene"], exact["median"])
    within = ordinal["within_one_accuracy"]
    assert within["graded-response"] > within["majority-vote"]
    # Measured: Raykar and scale-bias MAE 0.21-0.23, mean and median 0.34-0.42.
    mae = continuous["mae"]
    assert mae["raykar"] < mae["mean"] - 0.05
    assert mae["scale-bias"] < min(mae["mean"], mae["median"]) - 0.05
    assert continuous.loc["raykar", "rmse"] < continuous.loc["mean", "rmse"]


def test_seeded_and_equal_to_a_plain_library_fit(tables):
    again = run_ordinal_continuous_part(random_state=0)
    pd.testing.assert_series_equal(
        again.ordinal["exact_accuracy"], tables[0].ordinal["exact_accuracy"]
    )
    pd.testing.assert_series_equal(again.continuous["mae"], tables[0].continuous["mae"])
    assert not np.allclose(tables[0].continuous["mae"], tables[1].continuous["mae"])

    # The tables are what the library gives on the same draws.
    ord_rng, cont_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(2))
    o = ORDINAL_SETTINGS
    sim = simulate_ordinal_readers(
        o["n_items"], o["offsets"], o["noise"], n_classes=o["n_classes"],
        labels_per_item=o["labels_per_item"], random_state=ord_rng,
    )  # fmt: skip
    gr = GradedResponse(random_state=0).fit(CrowdLabels.from_dense(sim.labels, n_classes=5))
    row = tables[0].ordinal.set_index("method").loc["graded-response"]
    assert row["exact_accuracy"] == pytest.approx(np.mean(gr.labels_ == sim.truth), abs=1e-12)
    c = CONTINUOUS_SETTINGS
    simc = simulate_continuous_readers(
        c["n_items"], c["bias"], c["precision"], scale=c["scale"], random_state=cont_rng
    )
    rr = RaykarRegression().fit(simc.values)
    mae = tables[0].continuous.set_index("method").loc["raykar", "mae"]
    assert mae == pytest.approx(np.abs(rr.labels_ - simc.truth).mean(), abs=1e-12)


def test_demo_writes_the_tables_and_reports_them(demo):
    out, result = demo
    ordinal = pd.read_csv(out / "simulated_ordinal.csv")
    continuous = pd.read_csv(out / "simulated_continuous.csv")
    np.testing.assert_allclose(
        ordinal["exact_accuracy"], result.simulated_ordinal["exact_accuracy"]
    )
    np.testing.assert_allclose(continuous["rmse"], result.simulated_continuous["rmse"])
    direct = run_ordinal_continuous_part(random_state=0)
    np.testing.assert_allclose(
        ordinal["within_one_accuracy"], direct.ordinal["within_one_accuracy"]
    )
    assert {"simulated_ordinal.csv", "simulated_continuous.csv"} <= set(result.files)

    data = json.loads((out / "results.json").read_text(encoding="utf-8"))["simulated_readers"]
    assert data["seed"] == 0
    assert [r["method"] for r in data["continuous"]] == list(continuous["method"])

    o = ordinal.set_index("method")["exact_accuracy"]
    mae = continuous.set_index("method")["mae"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Ordinal and continuous methods on simulated readers (known truth)" in report
    assert "Simulated ordinal readers (known truth): 400 items, 5 grades" in report
    assert "Simulated continuous readers (known truth): 300 items" in report
    assert f"| graded-response | ordinal | {o['graded-response']:.3f} |" in report
    assert f"| raykar | {mae['raykar']:.3f} |" in report
    assert (
        f"graded-response {o['graded-response']:.3f} vs majority vote "
        f"{o['majority-vote']:.3f}; MAE of continuous readings, Raykar {mae['raykar']:.3f} "
        f"vs mean {mae['mean']:.3f}." in result.summary
    )
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "simulated_continuous.csv" in page
