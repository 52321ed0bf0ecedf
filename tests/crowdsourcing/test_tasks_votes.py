import json

import numpy as np
import pandas as pd
import pytest

from crowdmed.crowdsourcing.labelstudio import read_label_studio
from crowdmed.crowdsourcing.tasks import export_tasks, load_package
from crowdmed.crowdsourcing.views import blue_ratio_display, context_crops
from crowdmed.crowdsourcing.votes import read_votes
from crowdmed.simulate.votes import simulate_votes


def _export(fields, tmp_path, **kw):
    images, cand, gold = fields
    kw.setdefault("gold", gold)
    return export_tasks(images, cand, tmp_path / "pkg", random_state=0, **kw)


def test_export_writes_a_complete_package(fields, tmp_path):
    images, cand, _ = fields
    pkg = _export(fields, tmp_path, threshold=0.3, gold_rate=0.2, patch_size=33, label_studio=True)
    kept = cand[cand["score"] >= 0.3]
    m = pkg.manifest
    assert list(m.columns) == ["task", "image", "x", "y", "score", "is_gold"]
    assert (~m["is_gold"]).sum() == len(kept)
    # gold rate respected: gold share of all tasks is 0.2 (to one task)
    assert abs(m["is_gold"].sum() - 0.2 * len(m)) <= 1
    assert set(pkg.gold["task"]) == set(m.loc[m["is_gold"], "task"])
    assert set(pkg.gold["label"]) <= {0, 1}
    # gold answers are not in the manifest shown alongside the patches
    assert "label" not in m.columns
    # every candidate is there once, with its score
    got = m.loc[~m["is_gold"], ["image", "x", "y", "score"]].sort_values("score")
    np.testing.assert_allclose(got["score"], np.sort(kept["score"]))
    # patches are context crops centred on the candidate; blue-ratio view from the crop
    row = m.iloc[0]
    p = pkg.patches([row["task"]])[0]
    want = context_crops(images[row["image"]], [row["x"]], [row["y"]], 33)[0]
    np.testing.assert_array_equal(p, want)
    br = pkg.patches([row["task"]], view="blue_ratio")[0]
    np.testing.assert_array_equal(br, blue_ratio_display(want))
    tmpl = pd.read_csv(pkg.path / "votes_template.csv")
    assert list(tmpl.columns) == ["task", "annotator", "label"]
    assert tmpl["task"].tolist() == pkg.tasks
    ls = json.loads((pkg.path / "label_studio" / "tasks.json").read_text())
    assert [t["data"]["task"] for t in ls] == pkg.tasks
    assert "is_gold" not in json.dumps(ls)
    assert "<Choices" in (pkg.path / "label_studio" / "config.xml").read_text()
    # nothing but the package was left next to it
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_task_order_is_seeded_and_shuffled(fields, tmp_path):
    images, cand, gold = fields
    a = export_tasks(images, cand, tmp_path / "a", gold=gold, gold_rate=0.2, random_state=1)
    b = export_tasks(images, cand, tmp_path / "b", gold=gold, gold_rate=0.2, random_state=1)
    c = export_tasks(images, cand, tmp_path / "c", gold=gold, gold_rate=0.2, random_state=2)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    assert not a.manifest[["x", "y"]].equals(c.manifest[["x", "y"]])
    assert not a.manifest["score"].dropna().is_monotonic_increasing


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25])
def test_gold_rate(fields, tmp_path, rate):
    pkg = _export(fields, tmp_path, gold_rate=rate)
    n = len(pkg.manifest)
    assert pkg.n_gold == (0 if rate == 0 else max(1, round(rate * 30 / (1 - rate))))
    assert abs(pkg.n_gold / n - rate) < 1 / n + 1e-9


def test_export_errors_write_nothing(fields, tmp_path):
    images, cand, gold = fields
    with pytest.raises(ValueError, match="pool has 12"):
        export_tasks(images, cand, tmp_path / "p", gold=gold, gold_rate=0.5)
    with pytest.raises(ValueError, match="needs a pool of gold"):
        export_tasks(images, cand, tmp_path / "p", gold_rate=0.1)
    bad = cand.assign(image=cand["image"].where(cand.index != 3, "nope"))
    with pytest.raises(ValueError, match="'nope'"):
        export_tasks(images, bad, tmp_path / "p", gold_rate=0)
    outside = cand.assign(x=cand["x"].where(cand.index != 0, 500))
    with pytest.raises(ValueError, match="inside the 80x64 image"):
        export_tasks(images, outside, tmp_path / "p", gold_rate=0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "p").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        export_tasks(images, cand, tmp_path / "p", gold_rate=0)


def _truth(pkg):
    g = pkg.gold_labels()
    rng = np.random.default_rng(0)
    return np.where(g >= 0, g, rng.integers(0, 2, len(g)))


def test_csv_round_trip_loses_nothing(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.2)
    sim = simulate_votes(pkg.tasks, _truth(pkg), n_annotators=8, votes_per_task=5, random_state=0)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    imp = read_votes(tmp_path / "votes.csv", pkg.path)
    cl = imp.labels
    assert cl.n_labels == len(sim.votes)
    assert len(imp.problems) == 0
    assert list(cl.item_ids) == pkg.tasks  # task order
    back = cl.to_long()
    want = sim.votes.assign(label=(sim.votes["label"] == "mitosis").astype(int))
    key = ["item", "annotator"]
    got = back.rename(columns={"item": "item"}).sort_values(key).reset_index(drop=True)
    want = want.rename(columns={"task": "item"}).sort_values(key).reset_index(drop=True)
    assert got[[*key, "label"]].astype(str).equals(want[[*key, "label"]].astype(str))
    # gold and quiz accuracy from the gold tasks
    np.testing.assert_array_equal(cl.gold, pkg.gold_labels())
    g = cl.gold[cl.items]
    on = g >= 0
    for a in range(cl.n_annotators):
        sel = on & (cl.annotators == a)
        if sel.any():
            assert cl.quiz_accuracy[a] == pytest.approx((cl.labels[sel] == g[sel]).mean())
    assert set(imp.quiz_source) <= {"gold", "none"}


def test_malformed_rows_are_named(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.1)
    t = pkg.tasks
    votes = pd.DataFrame(
        {
            "task": [t[0], t[1], "t9999", t[2], t[0], t[3]],
            "annotator": ["a", "a", "a", "", "a", "b"],
            "label": ["mitosis", "0", "1", "1", "1", "maybe"],
        }
    )
    path = tmp_path / "v.csv"
    votes.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"4 malformed or duplicated rows: line 4: unknown task"):
        read_votes(path, pkg)
    with pytest.raises(
        ValueError, match=r"line 6: duplicated vote of annotator 'a'.*\(first at line 2\)"
    ):
        read_votes(path, pkg)
    imp = read_votes(path, pkg, on_error="drop")
    assert imp.labels.n_labels == 2
    assert imp.problems["where"].tolist() == ["line 4", "line 5", "line 6", "line 7"]
    assert "empty annotator" in imp.problems["problem"].iloc[1]
    assert "bad label 'maybe'" in imp.problems["problem"].iloc[3]
    assert "line 7: bad label" in imp.report()


def test_given_quiz_takes_precedence(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.2)
    sim = simulate_votes(pkg.tasks, _truth(pkg), n_annotators=4, votes_per_task=2, random_state=0)
    imp = read_votes(sim.votes, pkg, quiz={"sim-001": 0.25})
    i = list(imp.labels.annotator_ids).index("sim-001")
    assert imp.labels.quiz_accuracy[i] == 0.25
    assert imp.quiz_source[i] == "given"
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        read_votes(sim.votes, pkg, quiz={"sim-001": 2})


def test_label_studio_round_trip(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.1, label_studio=True)
    tasks = json.loads((pkg.path / "label_studio" / "tasks.json").read_text())
    sim = simulate_votes(pkg.tasks, _truth(pkg), n_annotators=5, votes_per_task=3, random_state=1)
    by_task = {t: g for t, g in sim.votes.groupby("task")}
    export = []
    for i, rec in enumerate(tasks):
        anns = [
            {
                "id": 100 * i + j,
                "completed_by": {"id": j, "email": a},
                "was_cancelled": False,
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "patch",
                        "type": "choices",
                        "value": {"choices": [lab]},
                    }
                ],
            }
            for j, (a, lab) in enumerate(
                zip(
                    by_task[rec["data"]["task"]]["annotator"],
                    by_task[rec["data"]["task"]]["label"],
                    strict=True,
                )
            )
        ]
        anns.append({"completed_by": 99, "was_cancelled": True, "result": []})
        export.append({"id": i + 1, "data": rec["data"], "annotations": anns})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    frame = read_label_studio(path)
    assert len(frame) == len(sim.votes)  # the cancelled annotations are skipped
    a = read_votes(path, pkg).labels
    b = read_votes(sim.votes, pkg).labels
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    # a bad record is named by its position
    export[2]["annotations"][0]["result"][0]["value"]["choices"] = ["unsure"]
    path.write_text(json.dumps(export))
    with pytest.raises(ValueError, match="task 3, annotation 1: bad label 'unsure'"):
        read_votes(path, pkg)


def test_load_package_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_package(tmp_path / "none")
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="not a task package"):
        load_package(tmp_path / "x")


def test_simulated_crowd_has_spammers():
    sim = simulate_votes(
        [f"t{i}" for i in range(200)],
        np.arange(200) % 2,
        n_annotators=20,
        votes_per_task=10,
        spammer_fraction=0.25,
        random_state=0,
    )
    assert sim.votes.groupby("task").size().eq(10).all()
    assert (sim.annotators["kind"] == "spammer").sum() == 5
    spam = sim.annotators[sim.annotators["kind"] == "spammer"]
    np.testing.assert_allclose(spam["spammer_score"], 0, atol=1e-12)
    assert sim.votes["annotator"].str.startswith("sim-").all()


def test_label_studio_annotation_without_a_choice_is_named(fields, tmp_path):
    pkg = _export(fields, tmp_path, threshold=0.3, gold_rate=0.0, patch_size=33)
    t = pkg.tasks
    export = [
        {
            "id": 7,
            "data": {"task": t[0]},
            "annotations": [
                {"completed_by": 1, "result": []},  # submitted without a choice
                {"completed_by": 2, "was_cancelled": True, "result": []},  # skipped
                {
                    "completed_by": "3",
                    "result": [{"type": "choices", "value": {"choices": ["Mitosis"]}}],
                },
            ],
        }
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(ValueError, match="task 1, annotation 1: no label chosen"):
        read_votes(path, pkg)
    imp = read_votes(path, pkg, on_error="drop")
    assert imp.votes[["annotator", "label"]].values.tolist() == [["3", 1]]


def test_quiz_csv_keeps_annotator_ids_as_text_in_any_column(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.0)
    votes = pd.DataFrame({"task": pkg.tasks[:2], "annotator": ["007", "007"], "label": [1, 0]})
    # annotator ids that look like numbers, in the second column of the quiz table
    (tmp_path / "quiz.csv").write_text("quiz_accuracy,annotator\n0.8,007\n")
    imp = read_votes(votes, pkg, quiz=tmp_path / "quiz.csv")
    assert imp.labels.quiz_accuracy.tolist() == [0.8]
    assert imp.quiz_source.tolist() == ["given"]


# ---------------------------------------------------------------------- input regressions
def test_votes_with_a_byte_order_mark_and_leading_zero_annotators(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.0)
    t = pkg.tasks
    text = f"task,annotator,label\n{t[0]},007,mitosis\n{t[0]},7,no\n{t[1]},007,1\n"
    (tmp_path / "votes.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    cl = read_votes(tmp_path / "votes.csv", pkg.path).labels
    # "007" and "7" are two annotators, kept as written
    assert cl.annotator_ids.tolist() == ["007", "7"]
    assert cl.n_labels == 3


def test_empty_vote_file_is_a_one_line_error(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.0)
    (tmp_path / "votes.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^Vote file '.*votes\.csv' is empty; it needs a header"):
        read_votes(tmp_path / "votes.csv", pkg.path)


def test_vote_file_that_is_a_folder_or_not_utf8(fields, tmp_path):
    pkg = _export(fields, tmp_path, gold_rate=0.0)
    (tmp_path / "votes").mkdir()
    with pytest.raises(ValueError, match=r"Vote file '.*votes' is a folder, not a file"):
        read_votes(tmp_path / "votes", pkg.path)
    (tmp_path / "latin1.csv").write_bytes("task,annotator,label\nt,Jos\xe9,1\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"Vote file '.*latin1\.csv' is not UTF-8 text \(byte 0xe9"
    ):
        read_votes(tmp_path / "latin1.csv", pkg.path)


def test_label_studio_export_with_byte_order_mark(tmp_path):
    records = [
        {
            "id": 1,
            "data": {"task": "007"},
            "annotations": [
                {"completed_by": {"email": "a@x"}, "result": [{"value": {"choices": ["mitosis"]}}]}
            ],
        }
    ]
    path = tmp_path / "export.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records).encode())
    table = read_label_studio(path)
    assert table["task"].tolist() == ["007"]
    assert table["annotator"].tolist() == ["a@x"]


def test_label_studio_export_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        read_label_studio(tmp_path)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'[{"data": {"task": "\xe9"}}]')
    with pytest.raises(ValueError, match=r"latin1\.json' is not UTF-8"):
        read_label_studio(bad)
