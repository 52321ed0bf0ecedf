"""A real browser (Playwright driving Debian's chromium): invite, quiz, keyboard labels, admin.

Set ``CROWDMED_SCREENSHOTS=docs/img`` to save the README screenshots of both pages.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (test extra)")
uvicorn = pytest.importorskip("uvicorn")

from crowdmed.crowdsourcing.server import create_app, study_from_images  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def database_url():
    return None


@pytest.fixture
def served(tmp_path):
    """A served reader study: 2-question quiz, 6 cases, 3 readers wanted per case."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder = tmp_path / "cases"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        img = Image.fromarray(rng.integers(150, 230, (96, 96, 3), dtype=np.uint8))
        if i % 2:
            ImageDraw.Draw(img).ellipse((30, 30, 66, 66), fill=(90, 40, 120))
        img.save(folder / f"case{i}.png")
    gold = pd.DataFrame({"item": ["case0", "case1"], "label": ["no lesion", "lesion"]})
    study, admin = study_from_images(
        folder,
        tmp_path / "study",
        classes=["no lesion", "lesion"],
        kind="binary",
        gold=gold,
        name="Lesion reader study",
        question="Is there a lesion in this image?",
        quiz_size=2,
        pass_mark=0.5,
        gold_share=0.0,
        labels_per_item=3,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(study), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield study, admin, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    study.close()


def test_annotator_and_admin_in_chromium(served, tmp_path):
    study, admin, base = served
    token = study.invite(["Dr. Reader"])["Dr. Reader"]
    shots = Path(os.environ.get("CROWDMED_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{base}/a/{token}")
            assert page.url == f"{base}/annotate"
            status = page.locator("#status")
            sync_api.expect(status).to_contain_text("question 1 of 2")
            answers = []
            for _ in range(12):
                text = status.inner_text()
                if "no more items" in text:
                    break
                page.wait_for_function("document.getElementById('image').complete")
                key = page.get_attribute("#image", "src").rsplit("/", 1)[1]
                item = study.storage.item_by_key(key)["item"]
                if text.startswith("Task 2"):
                    page.keyboard.press("+")  # zoom once, then take the README screenshot
                    sync_api.expect(page.locator("#zoom-level")).to_have_text("150%")
                    page.keyboard.press("r")
                    page.screenshot(path=str(shots / "serve-annotate.png"))
                truth = int(item[-1]) % 2
                # Keys: 1 = "no lesion", 2 = "lesion", u = unsure (the last case).
                key_name = "u" if item == "case7" else str(truth + 1)
                page.keyboard.press(key_name)
                answers.append((item, key_name))
                sync_api.expect(status).not_to_have_text(text)
            sync_api.expect(status).to_contain_text("no more items")
        finally:
            page.close()
        votes = study.storage.votes()
        assert len(votes) == len(answers) == 8  # 2 quiz + 6 tasks
        assert {v["item"]: v["label"] for v in votes} == {
            item: None if k == "u" else int(k) - 1 for item, k in answers
        }
        row = study.storage.annotators()[0]
        assert row["status"] == "active"
        assert row["quiz_accuracy"] == 1.0

        # Two more readers over HTTP: a careful one and one who always answers "lesion".
        import httpx

        for name, always in (("Dr. Second", None), ("Dr. Third", 1)):
            other = study.invite([name])[name]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {other}"}) as c:
                for n in range(8):
                    nxt = c.get("/api/next").json()
                    if nxt["item"] is None:
                        break
                    item = study.storage.item_by_key(nxt["item"]["key"])["item"]
                    truth = int(item[-1]) % 2
                    label = truth if nxt["phase"] == "quiz" or always is None else always
                    vote = {
                        "item": nxt["item"]["key"],
                        "label": label,
                        "vote_id": f"{name[4:]}-vote-{n}",
                    }
                    assert c.post("/api/votes", json=vote).status_code == 200
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        try:
            page.goto(f"{base}/admin/login/{admin}")
            assert page.url == f"{base}/admin"
            rows = page.locator("#annotators tbody tr")
            sync_api.expect(rows).to_have_count(3)
            sync_api.expect(rows.nth(2)).to_contain_text("spammer?")
            sync_api.expect(rows.first).to_contain_text("Dr. Reader")
            n_votes = len(study.storage.votes())
            sync_api.expect(page.locator("#n-votes")).to_have_text(str(n_votes))
            consensus = page.locator("#consensus tbody tr")
            assert consensus.count() == 6
            sync_api.expect(page.locator("#consensus")).to_contain_text("case3")
            page.screenshot(path=str(shots / "serve-admin.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "serve-annotate.png").stat().st_size > 1000
    assert (shots / "serve-admin.png").stat().st_size > 1000
