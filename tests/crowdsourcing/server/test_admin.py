"""Admin page: progress, live consensus and annotator quality, exports, cache."""

import io

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from crowdmed.aggregation import MajorityVote
from crowdmed.crowdsourcing.server import create_app, votes_frame
from crowdmed.crowdsourcing.server.consensus import compute_consensus
from crowdmed.data.io import from_long_frame


@pytest.fixture
def database_url():
    """The consensus reads votes through the storage layer: SQLite is enough here."""
    return None


def test_consensus_flags_the_spammer_and_matches_majority_vote(study_factory, annotator, key_item):
    st = study_factory(n_items=40, n_gold=10, quiz_size=4, gold_share=0.2, labels_per_item=4)
    app = create_app(st)
    truth = {f"case{i:02d}": i % 2 for i in range(40)}  # gold items agree: class i % 2
    rng = np.random.default_rng(0)
    tokens = st.invite(["good-1", "good-2", "good-3", "spammer"])
    for name, token in tokens.items():
        s = annotator(app, token)
        for _ in range(200):
            nxt = s.next()
            if nxt["item"] is None:
                break
            item = key_item(st, nxt["item"]["key"])
            if nxt["phase"] == "quiz" or name != "spammer":
                label = truth[item] if rng.random() < 0.95 else 1 - truth[item]
            else:
                label = 1  # passes the quiz, then always answers "abnormal"
            assert s.vote(nxt["item"]["key"], int(label)).status_code == 200
    admin = TestClient(app)
    assert admin.get(f"/admin/login/{st.admin}").status_code == 200
    page = admin.get("/admin")
    assert page.status_code == 200
    assert "spammer?" in page.text
    data = admin.get("/admin/api/summary").json()
    people = {a["annotator"]: a for a in data["annotators"]}
    assert people["spammer"]["flagged"] is True
    assert not any(people[f"good-{i}"]["flagged"] for i in (1, 2, 3))
    assert people["spammer"]["spammer_score"] < 0.1
    assert people["spammer"]["specificity"] < 0.2
    assert all(p["quiz_accuracy"] is not None for p in people.values())
    assert data["progress"]["votes"] == len(st.storage.votes())
    # The consensus table agrees with crowdmed's MajorityVote on the exported votes.
    table = votes_frame(st, phase="task").dropna(subset=["label"])
    cl = from_long_frame(table[["item", "annotator", "label"]], classes=[0, 1])
    mv = MajorityVote(random_state=0).fit(cl)
    names = np.array(["normal", "abnormal"])
    expected = dict(zip(cl.item_ids, names[mv.labels_], strict=True))
    got = {r["item"]: r["majority_vote"] for r in data["consensus"]}
    ties = {i for i, p in zip(cl.item_ids, mv.posteriors_, strict=True) if p[0] == p[1]}
    assert {k: v for k, v in got.items() if k not in ties} == {
        k: v for k, v in expected.items() if k not in ties
    }
    # AggNet's model with the quiz prior recovers the truth on the real items.
    ss = {r["item"]: r["sens_spec"] for r in data["consensus"]}
    acc = np.mean([ss[i] == names[truth[i]] for i in ss])
    assert acc >= 0.9
    # Downloads.
    csv = admin.get("/admin/export/consensus.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(pd.read_csv(io.StringIO(csv.text))) == len(data["consensus"])
    ann = pd.read_csv(io.StringIO(admin.get("/admin/export/annotators.csv").text))
    assert set(ann["annotator"]) == set(tokens)
    votes = pd.read_csv(io.StringIO(admin.get("/admin/export/votes.csv").text))
    assert len(votes) == len(table)
    assert admin.get("/admin/export/secrets.csv").status_code == 404


def test_consensus_is_cached_until_a_new_vote(study, app, annotator, key_item):
    cache = app.state.consensus
    first = cache.get()
    assert first.version == (0, 0)
    assert cache.get() is first
    s = annotator(app, study.invite(["q"])["q"])
    nxt = s.next()
    s.vote(nxt["item"]["key"], 0)
    second = cache.get()
    assert second is not first
    assert second.version[0] == 1


def test_admin_export_form_writes_into_the_study(study, app, annotator, key_item):
    s = annotator(app, study.invite(["r"])["r"])
    for _ in range(8):
        nxt = s.next()
        s.vote(nxt["item"]["key"], study.gold.get(key_item(study, nxt["item"]["key"]), 1))
    c = TestClient(app)
    c.get(f"/admin/login/{study.admin}")
    import re

    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', c.get("/admin").text).group(1)
    r = c.post("/admin/export", data={"csrf_token": csrf})
    assert r.status_code == 200
    written = list((study.path / "exports").glob("votes-*.csv"))
    assert len(written) == 1
    assert written[0].name in r.text
    assert len(pd.read_csv(written[0])) == 4  # 8 answers: 4 quiz + 4 tasks


def test_consensus_of_an_empty_study(study):
    c = compute_consensus(study)
    assert len(c.items) == 0
    assert list(c.annotators.columns)[:3] == ["annotator", "status", "quiz_accuracy"]


def test_a_slow_consensus_never_holds_up_votes(study, app, annotator, monkeypatch):
    import threading

    import crowdmed.crowdsourcing.server.consensus as consensus_module

    started, release = threading.Event(), threading.Event()
    real = consensus_module.compute_consensus

    def slow(st):
        started.set()
        release.wait(30)
        return real(st)

    admin = TestClient(app)
    assert admin.get(f"/admin/login/{study.admin}", follow_redirects=False).status_code == 303
    monkeypatch.setattr(consensus_module, "compute_consensus", slow)
    page = {}
    thread = threading.Thread(target=lambda: page.setdefault("r", admin.get("/admin")))
    thread.start()
    assert started.wait(30)
    # The admin page is fitting the consensus; annotators carry on meanwhile.
    s = annotator(app, study.invite(["busy"])["busy"])
    for _ in range(3):
        nxt = s.next()
        assert s.vote(nxt["item"]["key"], 0).status_code == 200
    assert thread.is_alive()  # the fit had not finished while the votes went through
    release.set()
    thread.join(30)
    assert page["r"].status_code == 200
    assert len(study.storage.votes()) == 3


def test_progress_endpoint_for_the_page_refresh(study, app, annotator):
    admin = TestClient(app)
    admin.get(f"/admin/login/{study.admin}")
    assert admin.get("/admin/api/progress").json()["votes"] == 0
    s = annotator(app, study.invite(["p"])["p"])
    s.vote(s.next()["item"]["key"], 1)
    assert admin.get("/admin/api/progress").json()["votes"] == 1
    assert 'data-votes="1"' in admin.get("/admin").text
    assert s.get("/admin/api/progress").status_code == 401
