"""CrowdLabels container and long/wide I/O."""

import numpy as np
import pandas as pd
import pytest

from crowdmed._validation import check_labels
from crowdmed.data import (
    CrowdLabels,
    from_long_frame,
    read_labels,
    read_wide,
    to_long,
    to_matrix,
    write_labels,
)


def test_dense_round_trip():
    m = np.array([[0, -1, 2], [1, 1, -1]])  # (2 items, 3 annotators)
    cl = CrowdLabels.from_dense(m)
    assert (cl.n_items, cl.n_annotators, cl.n_classes, cl.n_labels) == (2, 3, 3, 4)
    np.testing.assert_array_equal(cl.to_dense(), m)
    assert cl.to_dense().dtype == np.int64


def test_triplets_and_views_agree():
    cl = CrowdLabels.from_triplets([0, 0, 1], [0, 1, 1], [1, 0, 1], n_annotators=3, n_classes=2)
    np.testing.assert_array_equal(cl.to_dense(), [[1, 0, -1], [-1, 1, -1]])
    np.testing.assert_array_equal(cl.vote_counts(), [[1, 1], [0, 1]])
    np.testing.assert_array_equal(cl.labels_per_annotator(), [1, 2, 0])
    inc = cl.incidence().toarray()
    assert inc.shape == (2, 6)
    assert inc[0, 0 * 2 + 1] == 1
    assert inc[0, 1 * 2 + 0] == 1
    assert inc[1, 1 * 2 + 1] == 1


def test_long_round_trip_keeps_ids_and_classes():
    df = pd.DataFrame(
        {
            "item": ["c1", "c1", "c2"],
            "annotator": ["dr_a", "dr_b", "dr_a"],
            "label": ["benign", "malignant", "benign"],
        }
    )
    labels, items, anns, classes = to_matrix(df)
    np.testing.assert_array_equal(labels, [[0, 1], [0, -1]])
    assert list(items) == ["c1", "c2"]
    assert list(anns) == ["dr_a", "dr_b"]
    assert list(classes) == ["benign", "malignant"]
    back = to_long(labels, items, anns, classes)
    pd.testing.assert_frame_equal(
        back.sort_values(["item", "annotator"]).reset_index(drop=True), df
    )


def test_conversion_does_not_modify_input():
    m = np.array([[0, -1], [1, 1]])
    before = m.copy()
    cl = CrowdLabels.from_dense(m)
    cl.labels[0] = 1
    np.testing.assert_array_equal(m, before)


def test_crowdkit_columns_and_explicit_classes(tmp_path):
    p = tmp_path / "ck.csv"
    pd.DataFrame({"task": [1, 1, 2], "worker": ["w", "v", "w"], "label": [3, 1, 3]}).to_csv(
        p, index=False
    )
    cl = read_labels(p, classes=[1, 2, 3])
    assert cl.n_classes == 3
    np.testing.assert_array_equal(cl.to_dense(), [[2, 0], [2, -1]])


def test_headerless_active_crowd_toolkit(tmp_path):
    p = tmp_path / "act.csv"
    p.write_text("w1,t1,0,1\nw2,t1,1,1\nw1,t2,1,-1\n")
    cl = read_labels(p)
    assert list(cl.annotator_ids) == ["w1", "w2"]
    assert list(cl.item_ids) == ["t1", "t2"]
    np.testing.assert_array_equal(cl.gold, [1, -1])


def test_gold_and_quiz_columns(tmp_path):
    p = tmp_path / "l.csv"
    pd.DataFrame(
        {
            "item": ["a", "a", "b"],
            "annotator": ["x", "y", "x"],
            "label": [0, 1, 1],
            "gold": [1, 1, None],
            "quiz_accuracy": [0.9, 0.6, 0.9],
        }
    ).to_csv(p, index=False)
    cl = read_labels(p)
    np.testing.assert_array_equal(cl.gold, [1, -1])
    np.testing.assert_allclose(cl.quiz_accuracy, [0.9, 0.6])


def test_quiz_file(tmp_path):
    lab = tmp_path / "l.csv"
    lab.write_text("item,annotator,label\na,x,0\na,y,1\n")
    quiz = tmp_path / "q.csv"
    quiz.write_text("annotator,quiz_accuracy\ny,0.75\n")
    cl = read_labels(lab, quiz=quiz)
    np.testing.assert_allclose(cl.quiz_accuracy, [np.nan, 0.75])


def test_wide_csv(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("case,r1,r2,r3,gold\nc1,1,1,,1\nc2,0,,0,0\nc3,0,1,1,\n")
    cl = read_wide(p)
    np.testing.assert_array_equal(cl.to_dense(), [[1, 1, -1], [0, -1, 0], [0, 1, 1]])
    assert list(cl.annotator_ids) == ["r1", "r2", "r3"]
    np.testing.assert_array_equal(cl.gold, [1, 0, -1])


def test_wide_csv_item_without_labels(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("case,r1,r2\nc1,1,1\nc2,,\n")
    with pytest.raises(ValueError, match=r"Items \['c2'\] have no labels"):
        read_wide(p)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet"])
def test_write_read_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    cl = CrowdLabels.from_dense(
        np.array([[0, 1, -1], [1, 1, 0]]), gold=[1, -1], quiz_accuracy=[0.8, np.nan, 0.5]
    )
    p = write_labels(cl, tmp_path / f"labels{suffix}")
    back = read_labels(p)
    np.testing.assert_array_equal(back.to_dense(), cl.to_dense())
    np.testing.assert_array_equal(back.gold, cl.gold)
    np.testing.assert_allclose(back.quiz_accuracy, cl.quiz_accuracy)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("policy", "annotators", "expected"),
    [
        ("first", ["a", "b"], [[0, 1]]),
        ("last", ["b", "a"], [[1, 1]]),  # ids in order of first appearance of kept rows
        ("drop", ["b"], [[1]]),  # annotator a's conflicting pair is dropped
    ],
)
def test_duplicate_policies(policy, annotators, expected):
    df = pd.DataFrame({"item": [0, 0, 0], "annotator": ["a", "b", "a"], "label": [0, 1, 1]})
    cl = from_long_frame(df, on_duplicate=policy, classes=[0, 1])
    assert list(cl.annotator_ids) == annotators
    np.testing.assert_array_equal(cl.to_dense(), expected)


def test_duplicate_agreeing_pair_kept_once_by_drop():
    df = pd.DataFrame({"item": [0, 0, 0], "annotator": ["a", "a", "b"], "label": [1, 1, 0]})
    cl = from_long_frame(df, on_duplicate="drop")
    np.testing.assert_array_equal(cl.to_dense(), [[1, 0]])


# ----------------------------------------------------------------------------- bad input
BAD_DENSE = [
    # (description, labels, error type, message regex)
    ("empty", np.zeros((0, 3), dtype=int), ValueError, r"at least one annotation"),
    ("all missing", np.full((2, 2), -1), ValueError, r"all entries are -1"),
    ("1-D", np.array([0, 1]), ValueError, r"2-D array of shape \(n_items, n_annotators\)"),
    (
        "NaN",
        np.array([[0.0, np.nan], [1.0, 1.0]]),
        ValueError,
        r"must not contain NaN; mark missing annotations with -1",
    ),
    ("below -1", np.array([[0, -2]]), ValueError, r"classes 0..K-1 or -1 for missing; got \[-2\]"),
    ("strings", np.array([["a", "b"]]), TypeError, r"integer array; got dtype <U1"),
    ("non-integer float", np.array([[0.5, 1.0]]), TypeError, r"integer class indices"),
    (
        "item without labels",
        np.array([[0, 1], [-1, -1]]),
        ValueError,
        r"Items \[1\] have no labels",
    ),
    (
        "single class",
        np.array([[0, 0], [0, 0]]),
        ValueError,
        r"at least 2 classes .* Pass `n_classes`",
    ),
]


@pytest.mark.parametrize(
    ("desc", "labels", "exc", "match"), BAD_DENSE, ids=[c[0] for c in BAD_DENSE]
)
def test_bad_dense_input(desc, labels, exc, match):
    with pytest.raises(exc, match=match):
        check_labels(labels)


def test_label_out_of_declared_range():
    with pytest.raises(ValueError, match=r"`labels` must lie in 0..1; got \[2\]"):
        check_labels(np.array([[0, 2]]), n_classes=2)


def test_duplicate_pairs_named():
    df = pd.DataFrame({"item": ["x", "x"], "annotator": ["dr1", "dr1"], "label": [0, 1]})
    with pytest.raises(
        ValueError, match=r"must occur once; got 2 rows .*\('x', 'dr1'\).*on_duplicate"
    ):
        from_long_frame(df)


def test_duplicate_triplets_named():
    with pytest.raises(ValueError, match=r"must occur once; got duplicates \[\(0, 1\)\]"):
        CrowdLabels.from_triplets([0, 0], [1, 1], [0, 1])


def test_missing_column_named():
    df = pd.DataFrame({"case": [1], "reader": ["a"], "value": [0]})
    with pytest.raises(
        ValueError, match=r"No label column found; columns are \['case', 'reader', 'value'\]"
    ):
        from_long_frame(df)
    cl = from_long_frame(df.assign(value=[1]).pipe(lambda d: d), item="case", label="value")
    assert cl.n_labels == 1


def test_wrong_explicit_column():
    df = pd.DataFrame({"item": [1], "annotator": ["a"], "label": [0]})
    with pytest.raises(ValueError, match=r"Column 'lbl' \(the label column\) is not in the table"):
        from_long_frame(df, label="lbl")


def test_missing_label_in_table_is_dropped():
    # -1 and an empty cell mark a missing label, in memory as in files
    df = pd.DataFrame(
        {"item": [1, 2, 3, 3], "annotator": ["a", "a", "a", "b"], "label": [0, None, -1, 1]}
    )
    cl = from_long_frame(df)
    assert cl.item_ids.tolist() == [1, 3]
    assert cl.classes.tolist() == [0, 1]
    assert cl.to_dense().tolist() == [[0, -1], [-1, 1]]


def test_missing_item_id_in_table():
    df = pd.DataFrame({"item": [1, None], "annotator": ["a", "a"], "label": [0, 1]})
    with pytest.raises(
        ValueError, match=r"Column 'item' \(item\) .* 1 empty cells \(lines \[2\]\)"
    ):
        from_long_frame(df)


def test_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(ValueError, match=r"is empty"):
        read_labels(p)
    p.write_text("item,annotator,label\n")
    with pytest.raises(ValueError, match=r"label table '.*e\.csv' is empty"):
        read_labels(p)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist; check the path"):
        read_labels(tmp_path / "nope.csv")


def test_unknown_class_in_explicit_list():
    df = pd.DataFrame({"item": [1], "annotator": ["a"], "label": ["maybe"]})
    with pytest.raises(ValueError, match=r"labels \['maybe'\] outside the classes \['no', 'yes'\]"):
        from_long_frame(df, classes=["no", "yes"])


def test_idle_annotator_warns():
    with pytest.warns(UserWarning, match=r"Annotators \[1\] did not label any items"):
        check_labels(np.array([[0, -1], [1, -1]]))


def test_repr():
    cl = CrowdLabels.from_dense(np.array([[0, 1]]), gold=[1])
    assert repr(cl) == "CrowdLabels(n_items=1, n_annotators=2, n_classes=2, n_labels=2, n_gold=1)"


def test_n_classes_extends_integer_classes_but_not_named_ones():
    cl = CrowdLabels.from_dense(np.array([[0, 1]]))
    assert check_labels(cl, n_classes=4).n_classes == 4
    named = from_long_frame(
        pd.DataFrame({"item": [1, 1], "annotator": ["a", "b"], "label": ["no", "yes"]})
    )
    with pytest.raises(ValueError, match=r"conflicts with the named classes \['no', 'yes'\]"):
        check_labels(named, n_classes=3)
