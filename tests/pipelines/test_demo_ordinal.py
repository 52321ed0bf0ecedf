"""The demo's ordinal (graded-response) consensus of the LIDC malignancy ratings."""

import json

import numpy as np
import pandas as pd
import pytest

from crowdmed.pipelines.demo import run_demo


@pytest.fixture(scope="module")
def lidc_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_ordinal")
    result = run_demo(
        out, datasets=["lidc_malignancy"], methods=["majority-vote", "dawid-skene"],
        parts=["crowd"], random_state=0,
    )  # fmt: skip
    return out, result


def test_graded_response_columns_and_summary(lidc_demo):
    out, _ = lidc_demo
    consensus = pd.read_csv(out / "lidc_consensus.csv", index_col="item")
    assert consensus["graded_response"].between(1, 5).all()
    assert consensus["graded_response_confidence"].between(0.2, 1.0).all()
    s = json.loads((out / "results.json").read_text(encoding="utf-8"))["lidc"]
    half_up = np.floor(consensus["median"] + 0.5).astype(int)
    assert s["share_gr_equals_median"] == pytest.approx(
        (consensus["graded_response"] == half_up).mean(), abs=1e-12
    )
    # Measured: 72.8 % of nodules equal the median; slots R1..R4 within 0.35 grades.
    assert s["share_gr_equals_median"] > 0.7
    assert set(s["gr_slot_offsets"]) == {"R1", "R2", "R3", "R4"}
    assert abs(sum(s["gr_slot_offsets"].values())) < 1e-9  # mean-zero offsets
    assert max(abs(v) for v in s["gr_slot_offsets"].values()) < 0.35
    dist = pd.DataFrame(s["consensus_distribution"]).set_index("malignancy")
    assert dist["graded-response consensus"].sum() == 1866
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "graded-response consensus" in report
    assert f"{s['share_gr_equals_median']:.1%} of nodules. Slot offsets: R1 " in report
