"""What an annotator can see and do: no gold, no other votes, no consensus, no admin, no files."""

import re

import pytest
from fastapi.testclient import TestClient

from crowdmed.crowdsourcing.server import create_app


@pytest.fixture
def database_url():
    """These checks are about the web layer: SQLite only (the flow tests cover PostgreSQL)."""
    return None


def run_study(study, app, annotator, key_item):
    """Two annotators label everything; returns their sessions (with every response kept)."""
    tokens = study.invite(["reader-one", "reader-two"])
    sessions = []
    for name, token in tokens.items():
        s = annotator(app, token)
        s.get("/annotate")
        for _ in range(100):
            nxt = s.next()
            if nxt["item"] is None:
                break
            key = nxt["item"]["key"]
            s.get(nxt["item"]["image"])
            item = key_item(study, key)
            label = study.gold.get(item, 1) if name == "reader-one" else "unsure"
            assert s.vote(key, label).status_code == 200
        sessions.append(s)
    return sessions


def test_annotator_responses_never_carry_gold_votes_or_consensus(study, app, annotator, key_item):
    one, _two = run_study(study, app, annotator, key_item)
    admin = TestClient(app)
    admin.get(f"/admin/login/{study.admin}")
    assert admin.get("/admin").status_code == 200  # the consensus exists now
    forbidden = re.compile(
        r"gold|consensus|dawid|majority|posterior|quiz_accuracy|sensitivity|spammer"
        r"|case\d\d|reader-two|n_labels|\"label\"",
        re.IGNORECASE,
    )
    checked = 0
    for r in one.responses:
        body = r.content.decode("utf-8", errors="replace")
        text = body + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        assert not forbidden.search(text), (r.url, forbidden.search(text).group(0))
        checked += 1
    assert checked > 20
    # The JSON of the next item names nothing but an opaque key and its image route.
    nxt = one.next()
    assert set(nxt) == {"phase", "item", "progress", "message"}
    assert set(nxt["progress"]) == {"quiz_done", "quiz_total", "tasks_done"}


def test_admin_routes_refuse_annotator_tokens(study, app):
    token = study.invite(["mallory"])["mallory"]
    c = TestClient(app)
    c.get(f"/a/{token}")
    bearer = {"Authorization": f"Bearer {token}"}
    for url in ["/admin", "/admin/api/summary", "/admin/export/votes.csv"]:
        assert c.get(url).status_code == 401  # the annotator cookie is not an admin cookie
        r = c.get(url, headers=bearer)
        assert r.status_code == 403
        assert "admin token" in r.text
    c.cookies.set("crowdmed_admin", token)
    assert c.get("/admin").status_code == 403
    assert c.get(f"/admin/login/{token}").status_code == 404
    r = c.post("/admin/invite", data={"name": "x"}, headers=bearer)
    assert r.status_code == 403
    assert [a["name"] for a in study.storage.annotators()] == ["mallory"]
    # ... and annotator routes refuse the admin token.
    assert TestClient(app).get(f"/a/{study.admin}").status_code == 404
    assert c.get("/api/next", headers={"Authorization": f"Bearer {study.admin}"}).status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "/image/..%2F..%2Fstudy.json",
        "/image/../study.json",
        "/image/%2e%2e%2fstudy.sqlite",
        "/static/../study.py",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/0000000000000000",
    ],
)
def test_paths_cannot_leave_the_study(study, app, annotator, url):
    s = annotator(app, study.invite(["trent"])["trent"])
    r = s.get(url)
    assert r.status_code == 404
    assert b"study_id" not in r.content
    assert b"root:" not in r.content


def test_image_route_needs_an_assignment_and_a_safe_path(study, app, annotator, key_item):
    s = annotator(app, study.invite(["ivan"])["ivan"])
    given = s.next()["item"]["key"]
    other = next(r["key"] for r in study.storage.items() if r["gold"] is None)  # not in quiz
    assert s.get(f"/image/{given}").status_code == 200
    assert s.get(f"/image/{other}").status_code == 404  # not given to this annotator
    assert TestClient(app).get(f"/image/{given}").status_code == 401
    # A tampered image path in the database still cannot leave the image folder.
    import sqlalchemy as sa

    from crowdmed.crowdsourcing.server.storage import items_table

    with study.storage.write() as conn:
        conn.execute(
            items_table.update().where(items_table.c.key == given).values(image="../study.json")
        )
    assert s.get(f"/image/{given}").status_code == 404
    assert sa is not None


def test_form_posts_need_the_csrf_token_and_same_origin(study, app):
    c = TestClient(app)
    c.get(f"/admin/login/{study.admin}")
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', c.get("/admin").text).group(1)
    assert c.post("/admin/invite", data={"name": "no-token"}).status_code == 403
    bad = {"name": "bad-token", "csrf_token": "0" * 64}
    assert c.post("/admin/invite", data=bad).status_code == 403
    cross = {"Origin": "https://evil.example"}
    r = c.post("/admin/invite", data={"name": "cross", "csrf_token": csrf}, headers=cross)
    assert r.status_code == 403
    r = c.post(
        "/admin/invite",
        data={"name": "site", "csrf_token": csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    assert study.storage.annotators() == []
    r = c.post("/admin/invite", data={"name": "good", "csrf_token": csrf})
    assert r.status_code == 200
    assert re.search(r"/a/[A-Za-z0-9_-]{32}", r.text)
    assert [a["name"] for a in study.storage.annotators()] == ["good"]


def test_vote_posts_need_the_csrf_header(study, app, annotator):
    s = annotator(app, study.invite(["olga"])["olga"])
    key = s.next()["item"]["key"]
    body = {"item": key, "label": 1, "vote_id": "csrf-vote-1"}
    assert s.client.post("/api/votes", json=body).status_code == 403
    r = s.client.post(
        "/api/votes",
        json=body,
        headers={"X-CSRF-Token": s.csrf, "Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert study.storage.votes() == []
    assert s.vote(key, 1, vote_id="csrf-vote-1").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"item": "KEY", "label": 2, "vote_id": "vote-0001"}, 422, "class index 0-1"),
        ({"item": "KEY", "label": -1, "vote_id": "vote-0001"}, 422, "class index"),
        ({"item": "KEY", "label": "abnormal", "vote_id": "vote-0001"}, 422, "class index"),
        ({"item": "KEY", "label": True, "vote_id": "vote-0001"}, 422, "class index"),
        ({"item": "KEY", "label": 1.0, "vote_id": "vote-0001"}, 422, "class index"),
        ({"item": "KEY", "label": 1, "vote_id": "short"}, 422, "vote_id"),
        ({"item": "KEY", "label": 1}, 422, "vote_id"),
        ({"item": "../x", "label": 1, "vote_id": "vote-0001"}, 422, "item key"),
        ({"item": "0123456789abcdef", "label": 1, "vote_id": "vote-0001"}, 404, "Unknown item"),
        ({"item": "OTHER", "label": 1, "vote_id": "vote-0001"}, 409, "not given to you"),
        ({"item": "KEY", "label": 1, "vote_id": "vote-0001", "gold": 1}, 422, "Unknown fields"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_answers_get_a_4xx_and_change_nothing(study, app, annotator, body, status, message):
    s = annotator(app, study.invite(["pat"])["pat"])
    key = s.next()["item"]["key"]
    other = next(r["key"] for r in study.storage.items() if r["gold"] is None)  # not in quiz
    if isinstance(body, dict):
        body = {k: {"KEY": key, "OTHER": other}.get(v, v) for k, v in body.items()}
    before = study.storage.counts()
    r = s.client.post("/api/votes", json=body, headers={"X-CSRF-Token": s.csrf})
    assert r.status_code == status
    assert message in r.json()["detail"]
    assert study.storage.votes() == []
    assert study.storage.counts() == before
    assert s.next()["item"]["key"] == key  # the same item is still waiting


def test_tokens_are_stored_hashed(study):
    token = study.invite(["hashed"])["hashed"]
    study.storage.close()
    raw = b"".join(p.read_bytes() for p in study.path.glob("study.sqlite*"))
    assert token.encode() not in raw
    assert study.admin.encode() not in raw
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw


def test_unknown_invite_and_missing_session(study, app):
    c = TestClient(app)
    assert c.get("/a/not-a-token").status_code == 404
    assert c.get("/annotate").status_code == 401
    assert c.get("/api/next").status_code == 401
    assert create_app(study).title.startswith("crowdmed study")
