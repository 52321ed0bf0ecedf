"""Fixtures of the annotation-server tests: studies on SQLite and on PostgreSQL."""

import os
import re
import uuid

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the annotation server needs crowdmed[serve]")
pytest.importorskip("sqlalchemy", reason="the annotation server needs crowdmed[serve]")
PIL = pytest.importorskip("PIL.Image", reason="the study images need Pillow")

from fastapi.testclient import TestClient  # noqa: E402

from crowdmed.crowdsourcing.server import create_app, study_from_images  # noqa: E402
from crowdmed.crowdsourcing.server.storage import Storage  # noqa: E402

#: Environment variable with a PostgreSQL URL for the storage tests (``.ci/run`` sets it).
PG_ENV = "CROWDMED_TEST_DATABASE_URL"
CLASSES = ("normal", "abnormal")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """``None`` (SQLite in the study folder) or a PostgreSQL URL with empty crowdmed tables."""
    if request.param == "sqlite":
        yield None
        return
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need a database URL in {PG_ENV} (.ci/run sets one)")
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")
    storage = Storage(url)
    storage.drop_schema()
    storage.close()
    yield url
    storage = Storage(url)
    storage.drop_schema()
    storage.close()


def make_images(folder, n, *, seed=0):
    """``n`` small PNGs named case00.. in ``folder``; returns the item ids."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        item = f"case{i:02d}"
        arr = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
        PIL.fromarray(arr).save(folder / f"{item}.png")
        ids.append(item)
    return ids


def make_study(tmp_path, database_url, *, n_items=12, n_gold=6, **kw):
    """A binary study of ``n_items`` images, the first ``n_gold`` with gold answers.

    Gold item ``i`` has class ``i % 2``. Returns ``(study, admin_token, gold)`` where ``gold``
    maps item id -> class index.
    """
    ids = make_images(tmp_path / "images", n_items)
    gold = {ids[i]: i % 2 for i in range(n_gold)}
    table = pd.DataFrame({"item": list(gold), "label": [CLASSES[g] for g in gold.values()]})
    settings = {"quiz_size": 4, "gold_share": 0.2, "labels_per_item": 3, **kw}
    study, token = study_from_images(
        tmp_path / "images",
        tmp_path / f"study-{uuid.uuid4().hex[:6]}",
        classes=CLASSES,
        kind="binary",
        gold=table if n_gold else None,
        database_url=database_url,
        **settings,
    )
    return study, token, gold


@pytest.fixture
def study(tmp_path, database_url):
    st, token, gold = make_study(tmp_path, database_url)
    st.admin = token
    st.gold = gold
    yield st
    st.close()


class Annotator:
    """An annotator's browser session against the test client (cookie + CSRF token)."""

    def __init__(self, app, token):
        self.client = TestClient(app)
        self.responses = []
        r = self.client.get(f"/a/{token}")
        assert r.status_code == 200, r.text
        self.responses.append(r)
        self.csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', r.text).group(1)
        self.n = 0

    def get(self, url, **kw):
        r = self.client.get(url, **kw)
        self.responses.append(r)
        return r

    def next(self):
        r = self.get("/api/next")
        assert r.status_code == 200, r.text
        return r.json()

    def vote(self, key, label, vote_id=None, **kw):
        self.n += 1
        vote_id = vote_id or f"vote-{uuid.uuid4().hex}"
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        r = self.client.post(
            "/api/votes",
            json={"item": key, "label": label, "vote_id": vote_id},
            headers=headers,
            **kw,
        )
        self.responses.append(r)
        return r


@pytest.fixture
def app(study):
    return create_app(study)


def item_of(study, key):
    """Item id of an opaque key (test helper; reads the database)."""
    return study.storage.item_by_key(key)["item"]


@pytest.fixture
def study_factory(tmp_path, database_url):
    """``factory(**settings) -> study`` (closed at the end); at most one per PostgreSQL test."""
    made = []

    def factory(**kw):
        folder = tmp_path / f"s{len(made)}"
        folder.mkdir()
        st, token, gold = make_study(folder, database_url, **kw)
        st.admin = token
        st.gold = gold
        made.append(st)
        return st

    yield factory
    for st in made:
        st.close()


@pytest.fixture
def annotator():
    """``annotator(app, token)``: a browser-like session of an invited annotator."""
    return Annotator


@pytest.fixture
def key_item():
    """``key_item(study, key)``: the item id of an opaque item key."""
    return item_of
