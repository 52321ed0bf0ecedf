"""crowd_features: per-annotator scores -> per-item consensus and disagreement columns."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.quality import crowd_features


@pytest.fixture
def scores() -> pd.DataFrame:
    # 3 items x up to 3 annotators; item "z" scored by one annotator only, NaN = not scored
    return pd.DataFrame(
        {
            "item": ["x", "x", "x", "y", "y", "z"],
            "annotator": ["a", "b", "c", "a", "b", "c"],
            "asym": [0.0, 1.0, 2.0, 1.0, 1.0, 2.0],
            "border": [1.0, 4.0, np.nan, 8.0, 2.0, np.nan],
        }
    )


# (stat, expected asym column, expected border column); hand-computed from the fixture
CASES = [
    ("mean", [1.0, 1.0, 2.0], [2.5, 5.0, np.nan]),
    ("median", [1.0, 1.0, 2.0], [2.5, 5.0, np.nan]),
    ("std", [1.0, 0.0, np.nan], [np.sqrt(4.5), np.sqrt(18.0), np.nan]),  # ddof=1
    ("var", [1.0, 0.0, np.nan], [4.5, 18.0, np.nan]),
    ("min", [0.0, 1.0, 2.0], [1.0, 2.0, np.nan]),
    ("max", [2.0, 1.0, 2.0], [4.0, 8.0, np.nan]),
    ("range", [2.0, 0.0, np.nan], [3.0, 6.0, np.nan]),
    ("count", [3, 2, 1], [2, 2, 0]),
]


@pytest.mark.parametrize(("stat", "asym", "border"), CASES)
def test_hand_values(scores, stat, asym, border):
    out = crowd_features(scores, features=["asym", "border"], stats=(stat,))
    assert list(out.index) == ["x", "y", "z"]
    assert out.index.name == "item"
    assert list(out.columns) == [f"asym_{stat}", f"border_{stat}"]
    np.testing.assert_allclose(out[f"asym_{stat}"], asym)
    np.testing.assert_allclose(out[f"border_{stat}"], border)
    if stat == "count":
        assert (out.dtypes == np.int64).all()


def test_defaults_and_order(scores):
    out = crowd_features(scores)  # every numeric column, mean and std
    assert list(out.columns) == ["asym_mean", "asym_std", "border_mean", "border_std"]
    out = crowd_features(scores, features=["border", "asym"], stats=("range", "mean"))
    assert list(out.columns) == ["border_range", "border_mean", "asym_range", "asym_mean"]


def test_single_annotator_spread_is_nan_and_ddof(scores):
    # item z has one score: disagreement unknown (NaN), for either ddof
    for ddof in (0, 1):
        out = crowd_features(scores, features=["asym"], stats=("std", "var", "range"), ddof=ddof)
        assert out.loc["z"].isna().all()
    pop = crowd_features(scores, features=["asym"], stats=("std",), ddof=0)
    assert pop.loc["x", "asym_std"] == pytest.approx(np.std([0.0, 1.0, 2.0]))


def test_input_not_modified_and_custom_columns(scores):
    before = scores.copy()
    renamed = scores.rename(columns={"item": "image_id", "annotator": "reader"})
    out = crowd_features(renamed, item="image_id", annotator="reader", features=["asym"])
    assert out.index.name == "image_id"
    pd.testing.assert_frame_equal(scores, before)


def test_integer_scores_give_the_float_results():
    # item x: 0, 1, 2; item y: 1, 2 (mean 1.5, median 1.5: no integer rounding); item z: 3
    ints = pd.DataFrame(
        {"item": list("xxxyyz"), "annotator": list("abcabc"), "score": [0, 1, 2, 1, 2, 3]}
    )
    stats = ("mean", "median", "std", "var", "min", "max", "range", "count")
    out = crowd_features(ints, features=["score"], stats=stats)
    ref = crowd_features(
        ints.assign(score=ints["score"].astype(float)), features=["score"], stats=stats
    )
    pd.testing.assert_frame_equal(out, ref)
    np.testing.assert_allclose(out["score_mean"], [1.0, 1.5, 3.0])
    np.testing.assert_allclose(out["score_median"], [1.0, 1.5, 3.0])
    np.testing.assert_allclose(out["score_var"], [1.0, 0.5, np.nan])
    assert out["score_mean"].dtype == np.float64
    assert out["score_count"].dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"features": ["size"]}, ValueError, r"`features` \['size'\] are not columns"),
        ({"item": "image"}, ValueError, r"`item` column 'image' is not in the frame"),
        ({"annotator": "rater"}, ValueError, r"`annotator` column 'rater' is not in the frame"),
        ({"stats": ("mean", "stdev")}, ValueError, r"`stats` must be one of .*Did you mean"),
        ({"stats": ("mean", "mean")}, ValueError, r"must not repeat a statistic"),
        ({"stats": ()}, ValueError, r"at least one of"),
        ({"ddof": -1}, ValueError, r"`ddof` must be a non-negative integer"),
        ({"features": ["item"]}, ValueError, r"must not include the item/annotator column"),
    ],
)
def test_bad_arguments(scores, kwargs, error, match):
    with pytest.raises(error, match=match):
        crowd_features(scores, **kwargs)


def test_bad_frames(scores):
    with pytest.raises(TypeError, match=r"Score column 'note' must be numeric; got dtype object"):
        crowd_features(scores.assign(note="high"), features=["asym", "note"])
    with pytest.raises(TypeError, match=r"must be numeric; got dtype bool"):
        crowd_features(scores.assign(flag=True), features=["flag"])
    with pytest.raises(ValueError, match=r"no numeric score column"):
        crowd_features(scores[["item", "annotator"]].assign(note="x"))
    with pytest.raises(ValueError, match=r"repeated pairs \[\['x', 'a'\]\]"):
        crowd_features(pd.concat([scores, scores.iloc[:1]]))
    with pytest.raises(ValueError, match=r"empty frame"):
        crowd_features(scores.iloc[:0])
    with pytest.raises(TypeError, match=r"must be a pandas DataFrame; got dict"):
        crowd_features({"item": [1]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"1 rows have no annotator id"):
        crowd_features(scores.assign(annotator=["a", "b", None, "a", "b", "c"]))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=4, max_size=4),
        min_size=1,
        max_size=6,
    )
)
def test_matches_numpy_per_item(rows):
    """Every statistic equals NumPy on that item's non-missing scores (4 annotators)."""
    frame = pd.DataFrame(
        [
            {"item": i, "annotator": a, "s": np.nan if v is None else float(v)}
            for i, row in enumerate(rows)
            for a, v in enumerate(row)
        ]
    )
    stats = ("mean", "median", "std", "var", "min", "max", "range", "count")
    out = crowd_features(frame, features=["s"], stats=stats)
    for i, row in enumerate(rows):
        v = np.array([x for x in row if x is not None], dtype=float)
        n = len(v)
        assert out.loc[i, "s_count"] == n
        if n == 0:
            assert out.loc[i, ["s_mean", "s_std", "s_range"]].isna().all()
            continue
        assert out.loc[i, "s_mean"] == pytest.approx(v.mean())
        assert out.loc[i, "s_median"] == pytest.approx(np.median(v))
        assert out.loc[i, "s_min"] == v.min()
        assert out.loc[i, "s_max"] == v.max()
        if n < 2:
            assert np.isnan(out.loc[i, "s_std"])
            assert np.isnan(out.loc[i, "s_range"])
        else:
            assert out.loc[i, "s_std"] == pytest.approx(v.std(ddof=1))
            assert out.loc[i, "s_var"] == pytest.approx(v.var(ddof=1))
            assert out.loc[i, "s_range"] == v.max() - v.min()
