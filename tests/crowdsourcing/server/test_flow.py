"""The annotator flow: quiz, tasks with hidden gold, idempotent votes, export (both databases)."""

import json

import numpy as np
import pandas as pd
import pytest

from crowdmed.crowdsourcing.server import create_app, export_votes, votes_frame
from crowdmed.data.io import read_labels


def answer_all(session, study, key_item, policy, limit=500):
    """Answer until the server has nothing more; returns the (phase, item) sequence."""
    seen = []
    for _ in range(limit):
        nxt = session.next()
        if nxt["item"] is None:
            seen.append((nxt["phase"], None))
            return seen
        item = key_item(study, nxt["item"]["key"])
        seen.append((nxt["phase"], item))
        r = session.vote(nxt["item"]["key"], policy(item))
        assert r.status_code == 200, r.text
    raise AssertionError("the server kept serving items")


def truthful(study):
    return lambda item: study.gold.get(item, 0)


def test_quiz_records_gamma_then_tasks(study, app, annotator, key_item):
    token = study.invite(["alice"])["alice"]
    s = annotator(app, token)
    first = s.next()
    assert first["phase"] == "quiz"
    assert first["progress"] == {"quiz_done": 0, "quiz_total": 4, "tasks_done": 0}
    # Three right, one wrong: γ = 0.75 >= pass mark 0.7.
    for i in range(4):
        nxt = s.next()
        assert nxt["phase"] == "quiz"
        item = key_item(study, nxt["item"]["key"])
        truth = study.gold[item]
        assert s.vote(nxt["item"]["key"], truth if i else 1 - truth).status_code == 200
    row = study.storage.annotators()[0]
    assert row["status"] == "active"
    assert row["quiz_accuracy"] == pytest.approx(0.75)
    assert s.next()["phase"] == "task"


def test_quiz_below_pass_mark_gets_no_tasks(study, app, annotator, key_item):
    s = annotator(app, study.invite(["bob"])["bob"])
    seq = answer_all(s, study, key_item, lambda item: 1 - study.gold.get(item, 0))
    assert [p for p, _ in seq] == ["quiz"] * 4 + ["failed"]
    row = study.storage.annotators()[0]
    assert (row["status"], row["quiz_accuracy"]) == ("failed", 0.0)
    nxt = s.next()
    assert nxt["phase"] == "failed"
    assert nxt["item"] is None
    assert "below the pass mark" in nxt["message"]


def test_items_once_per_annotator_fewest_labels_first_and_capped(study, app, annotator, key_item):
    tokens = study.invite(["a1", "a2", "a3", "a4"])
    sessions = {n: annotator(app, t) for n, t in tokens.items()}
    # a1 answers its quiz and two tasks; a2's first task must be an item nobody labelled yet.
    s1 = sessions["a1"]
    first_real = []
    while len(first_real) < 2:
        nxt = s1.next()
        item = key_item(study, nxt["item"]["key"])
        if nxt["phase"] == "task" and item not in study.gold:
            first_real.append(item)
        s1.vote(nxt["item"]["key"], study.gold.get(item, 0))
    s2 = sessions["a2"]
    while True:
        nxt = s2.next()
        item = key_item(study, nxt["item"]["key"])
        if nxt["phase"] == "task" and item not in study.gold:
            assert item not in first_real
            break
        s2.vote(nxt["item"]["key"], study.gold.get(item, 0))
    for s in sessions.values():
        answer_all(s, study, key_item, truthful(study))
    votes = votes_frame(study, phase=None)
    assert not votes.duplicated(["item", "annotator"]).any()
    real = votes[~votes["item"].isin(list(study.gold))]
    # 6 real items x 3 labels wanted; 4 annotators could give 24.
    assert real.groupby("item").size().to_dict() == {f"case{i:02d}": 3 for i in range(6, 12)}
    # The quiz items are never served again as tasks.
    quiz = votes[votes["phase"] == "quiz"]
    task = votes[votes["phase"] == "task"]
    both = quiz.merge(task, on=["item", "annotator"])
    assert len(both) == 0


def test_hidden_gold_is_mixed_into_the_tasks(study_factory, annotator, key_item):
    st = study_factory(n_items=60, n_gold=20, gold_share=0.3, labels_per_item=1, quiz_size=4)
    app = create_app(st)
    s = annotator(app, st.invite(["carol"])["carol"])
    seq = answer_all(s, st, key_item, truthful(st))
    tasks = [item for phase, item in seq if phase == "task"]
    gold_tasks = [t for t in tasks if t in st.gold]
    assert len(tasks) == 40 + len(gold_tasks)
    assert 4 <= len(gold_tasks) <= 16  # about 0.3 of the first tasks; 16 gold items are left
    # Gold tasks come between real ones, not only at the end.
    positions = [i for i, t in enumerate(tasks) if t in st.gold]
    assert positions[0] < len(tasks) // 2
    table = votes_frame(st, phase="task")
    assert set(table.loc[table["gold"].notna(), "item"]) == set(gold_tasks)


def test_vote_submission_is_idempotent(study, app, annotator, key_item):
    s = annotator(app, study.invite(["dan"])["dan"])
    key = s.next()["item"]["key"]
    r1 = s.vote(key, 1, vote_id="retry-0001")
    r2 = s.vote(key, 1, vote_id="retry-0001")
    assert (r1.json()["status"], r2.json()["status"]) == ("stored", "duplicate")
    assert len(study.storage.votes()) == 1
    # The same id for another answer, or a new id for an answered item: refused, unchanged.
    r3 = s.vote(key, 0, vote_id="retry-0001")
    r4 = s.vote(key, 0, vote_id="retry-0002")
    assert r3.status_code == 409
    assert "already used" in r3.json()["detail"]
    assert r4.status_code == 409
    assert "already answered" in r4.json()["detail"]
    votes = study.storage.votes()
    assert [(v["vote_id"], v["label"]) for v in votes] == [("retry-0001", 1)]


def test_unsure_is_stored_as_missing_and_left_out_of_the_export(study, app, annotator, key_item):
    s = annotator(app, study.invite(["eve"])["eve"])
    answer_all(
        s, study, key_item, lambda item: "unsure" if item == "case07" else study.gold.get(item, 0)
    )
    votes = study.storage.votes()
    unsure = [v for v in votes if v["item"] == "case07"]
    assert len(unsure) == 1
    assert unsure[0]["label"] is None
    out = export_votes(study, study.path / "votes.csv")
    table = pd.read_csv(out)
    assert "case07" not in set(table["item"])
    record = json.loads(out.with_name("votes.csv.json").read_text())
    assert record["n_unsure"] == 1
    assert record["n_votes"] == len(table) == len([v for v in votes if v["phase"] == "task"]) - 1


def test_export_is_read_by_aggregate(study, app, annotator, key_item, tmp_path):
    tokens = study.invite(["f1", "f2"])
    answer_all(annotator(app, tokens["f1"]), study, key_item, truthful(study))
    # f2 answers the quiz right (γ = 1) and then says 1 to every task.
    answer_all(
        annotator(app, tokens["f2"]),
        study,
        key_item,
        lambda item: study.gold.get(item, 0) if item in study.gold else 1,
    )
    out = export_votes(study, tmp_path / "export" / "votes.csv")
    cl = read_labels(out)
    assert list(cl.classes) == [0, 1]
    assert list(cl.annotator_ids) == ["f1", "f2"]
    np.testing.assert_allclose(cl.quiz_accuracy, [1.0, 1.0])
    table = pd.read_csv(out)
    assert list(table.columns) == ["item", "annotator", "label", "gold", "quiz_accuracy"]
    f2 = table[(table["annotator"] == "f2") & table["gold"].isna()]
    assert (f2["label"] == 1).all()
    assert len(f2) > 0
    gold_rows = table[table["gold"].notna()]
    for item, g in zip(gold_rows["item"], gold_rows["gold"], strict=True):
        assert study.gold[item] == g
    # The command line reads it as it is, with the quiz accuracy as the trust prior.
    from typer.testing import CliRunner

    from crowdmed.cli import app as cli

    r = CliRunner().invoke(
        cli, ["aggregate", str(out), "--method", "sens-spec", "--out", str(tmp_path / "c.csv")]
    )
    assert r.exit_code == 0, r.output
    consensus = pd.read_csv(tmp_path / "c.csv")
    assert len(consensus) == table["item"].nunique()
    # No temporary file is left next to the export, and it is not overwritten.
    assert sorted(p.name for p in out.parent.iterdir()) == ["votes.csv", "votes.csv.json"]
    assert not list(study.path.glob("**/*.tmp"))
    with pytest.raises(ValueError, match="already exists"):
        export_votes(study, out)


def test_scores_decide_which_case_next(study, app, annotator, key_item):
    assert study.set_scores(pd.DataFrame({"item": ["case09", "case07"], "score": [2.0, 5]})) == 2
    s = annotator(app, study.invite(["gil"])["gil"])
    seq = answer_all(s, study, key_item, truthful(study))
    real = [item for phase, item in seq if phase == "task" and item not in study.gold]
    assert real[:2] == ["case07", "case09"]
    with pytest.raises(ValueError, match=r"Items \['nope'\] are not in study"):
        study.set_scores(pd.DataFrame({"item": ["nope"], "score": [1.0]}))
    with pytest.raises(ValueError, match="finite numbers; rows \\[1\\]"):
        study.set_scores(pd.DataFrame({"item": ["case07"], "score": ["high"]}))
