"""The AggNet loop through the server: candidates -> task package -> crowdmed serve ->
simulated annotators over HTTP (spammers included) -> export -> refine."""

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
from fastapi.testclient import TestClient  # noqa: E402
from torch import nn  # noqa: E402

from crowdmed.crowdsourcing import read_votes  # noqa: E402
from crowdmed.crowdsourcing.server import create_app, export_votes, study_from_package  # noqa: E402
from crowdmed.crowdsourcing.tasks import export_tasks  # noqa: E402
from crowdmed.crowdsourcing.views import context_crops  # noqa: E402
from crowdmed.metrics import roc_auc  # noqa: E402
from crowdmed.pipelines.refine import model_inputs, predict_proba, refine  # noqa: E402

SIZE = 33


@pytest.fixture
def database_url():
    return None


def _field(rng, n_points, size=(160, 200)):
    """A light RGB field with ``n_points`` candidate points; half are dark blobs (mitoses)."""
    h, w = size
    img = rng.uniform(170, 230, size=(h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    xs = rng.integers(20, w - 20, n_points)
    ys = rng.integers(20, h - 20, n_points)
    truth = rng.integers(0, 2, n_points)
    for x, y, t in zip(xs, ys, truth, strict=True):
        if t:
            img[((yy - y) ** 2 + (xx - x) ** 2) <= 16] -= rng.uniform(80, 120)
        else:  # a decoy blob off the candidate's centre
            dy, dx = rng.integers(6, 12, 2) * rng.choice([-1, 1], 2)
            img[((yy - y - dy) ** 2 + (xx - x - dx) ** 2) <= 9] -= 90
    return np.clip(img, 0, 255).astype(np.uint8), xs, ys, truth


def _net(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 33 * 33, 2)
        )


@pytest.mark.slow
def test_aggnet_loop_through_the_server(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images, cands, truth_of, gold_rows = {}, [], {}, []
    for i in range(6):
        img, xs, ys, t = _field(rng, 14)
        images[f"f{i}"] = img
        rows = pd.DataFrame({"image": f"f{i}", "x": xs, "y": ys, "score": rng.uniform(0.2, 1, 14)})
        if i < 2:  # the gold pool: known mitoses and known negatives
            gold_rows.append(rows.assign(label=t)[["image", "x", "y", "label"]])
        else:
            cands.append(rows)
            truth_of.update({(f"f{i}", x, y): int(v) for x, y, v in zip(xs, ys, t, strict=True)})
    pkg = export_tasks(
        images,
        pd.concat(cands, ignore_index=True),
        tmp_path / "tasks",
        gold=pd.concat(gold_rows, ignore_index=True),
        gold_rate=0.25,
        patch_size=SIZE,
        random_state=0,
    )
    m = pkg.manifest
    truth = {
        t: int(g) if g >= 0 else truth_of[(im, x, y)]
        for t, im, x, y, g in zip(
            m["task"], m["image"], m["x"], m["y"], pkg.gold_labels(), strict=True
        )
    }

    # The crowd: 9 careful annotators, 3 spammers ("always mitosis" or coin flips).
    crowd = {f"w{i:02d}": ("good", 0.9) for i in range(9)}
    crowd.update({"w09": ("always", 1.0), "w10": ("coin", 0.5), "w11": ("coin", 0.5)})
    answers = {}
    for name, (kind, acc) in crowd.items():
        for t, y in truth.items():
            if kind == "always":
                answers[(name, t)] = 1
            elif kind == "coin":
                answers[(name, t)] = int(rng.integers(0, 2))
            else:
                answers[(name, t)] = y if rng.random() < acc else 1 - y

    study, _ = study_from_package(
        pkg.path,
        tmp_path / "study",
        labels_per_item=8,
        quiz_size=4,
        pass_mark=0.5,
        gold_share=0.1,
    )
    app = create_app(study)
    tokens = study.invite(list(crowd))
    keys = {r["key"]: r["item"] for r in study.storage.items()}
    clients = {
        name: TestClient(app, headers={"Authorization": f"Bearer {token}"})
        for name, token in tokens.items()
    }
    n = 0
    while clients:  # the annotators take turns, one vote each
        for name in list(clients):
            nxt = clients[name].get("/api/next").json()
            if nxt["item"] is None:
                del clients[name]
                continue
            label = answers[(name, keys[nxt["item"]["key"]])]
            n += 1
            r = clients[name].post(
                "/api/votes",
                json={"item": nxt["item"]["key"], "label": label, "vote_id": f"{name}-{n:05d}"},
            )
            assert r.status_code == 200
    out = export_votes(study, tmp_path / "votes.csv")
    served = read_votes(out, pkg)
    cl = served.labels
    assert set(served.quiz_source) <= {"given"}
    assert cl.n_labels == len(pd.read_csv(out))
    careful = {f"w{i:02d}" for i in range(9)}
    assert careful <= set(cl.annotator_ids)  # every careful annotator passed the quiz

    # The file-based loop on the same votes: the CSV without the server's quiz accuracy.
    plain = tmp_path / "plain.csv"
    pd.read_csv(out)[["item", "annotator", "label"]].rename(columns={"item": "task"}).to_csv(
        plain, index=False
    )
    filed = read_votes(plain, pkg).labels

    # Held-out patches with known truth.
    test_x, test_t = [], []
    for _ in range(4):
        img, xs, ys, t = _field(rng, 20)
        test_x.append(context_crops(img, xs, ys, SIZE))
        test_t.append(t)
    x_test = model_inputs(np.concatenate(test_x))
    t_test = np.concatenate(test_t)

    net = _net()
    before = roc_auc(predict_proba(net, x_test), t_test)
    aucs = {}
    for what, labels in (("server", cl), ("files", filed)):
        x = model_inputs(pkg.patches(list(labels.item_ids)))
        # Five full-batch rounds keep the test AUC below 1, so the comparison can fail
        # (measured: before 0.39, through the server 0.86, file-based 0.82).
        res = refine(net, x, labels, lr=1e-3, epochs=5, random_state=0)
        aucs[what] = roc_auc(predict_proba(res.model, x_test), t_test)
        if what == "server":
            inferred = dict(zip(res.truth["item"], res.truth["label"], strict=True))
            acc = np.mean([inferred[t] == truth[t] for t in inferred])
            people = res.annotators.set_index("annotator")
            spam = [a for a in ("w09", "w10", "w11") if a in people.index]
            good = [a for a in people.index if a not in ("w09", "w10", "w11")]
    assert acc > 0.9
    assert aucs["server"] > before + 0.3, (before, aucs)
    assert aucs["server"] < 0.99, aucs  # not at the ceiling
    assert aucs["server"] >= aucs["files"] - 0.02, aucs
    if spam:  # spammers who passed the quiz score far below the careful annotators
        assert (
            people.loc[spam, "spammer_score"].mean()
            < 0.5 * people.loc[good, "spammer_score"].mean()
        )
        assert people.loc[spam, "spammer_score"].max() < people.loc[good, "spammer_score"].median()
    print(
        f"AUC before {before:.3f}, refined via the server {aucs['server']:.3f}, files "
        f"{aucs['files']:.3f}; inferred truth accuracy {acc:.3f}"
    )
    study.close()
