"""A bounded version of benchmarks/serve_load.py: concurrent votes, SIGKILL, restart."""

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("httpx", reason="the load test needs httpx")
pytest.importorskip("uvicorn", reason="the load test needs uvicorn")

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "serve_load.py"


@pytest.fixture(scope="module")
def serve_load():
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} is not in this checkout")
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def load_database(request):
    """SQLite in the default suite; PostgreSQL with ``-m slow`` (the flow tests cover it)."""
    if request.param == "sqlite":
        return None
    url = os.environ.get("CROWDMED_TEST_DATABASE_URL")
    if not url:
        pytest.skip("PostgreSQL tests need a database URL in CROWDMED_TEST_DATABASE_URL")
    return url


def test_every_acknowledged_vote_survives_a_sigkill(serve_load, load_database, tmp_path):
    res = serve_load.run(
        n_votes=240,
        n_annotators=12,
        labels_per_item=3,
        database_url=load_database,
        kill_after=100,
        duplicate_rate=0.1,
        workdir=tmp_path,
    )
    checks = res["checks"]
    assert checks["acknowledged"] == 240
    assert checks["stored"] == 240
    assert checks["missing"] == 0
    assert checks["unacknowledged_stored"] == 0
    assert checks["stored_twice"] == 0
    assert checks["item_twice_by_annotator"] == 0
    assert res["restart"]["acked_at_kill"] >= 100
    assert res["duplicates_sent"] > 0
    assert res["duplicates_sent"] == res["duplicates_answered_duplicate"]
    assert res["ok"]
