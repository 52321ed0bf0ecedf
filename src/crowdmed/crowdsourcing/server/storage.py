"""Storage of a study: items, annotators, assignments and votes in SQLite or PostgreSQL.

Everything the server writes goes through :class:`Storage`, one short transaction per request.
SQLite runs in WAL mode with ``synchronous=NORMAL`` (a vote acknowledged to the browser is in
the database file's write-ahead log, so it survives the server being killed; a power cut may
lose the last moments, set ``CROWDMED_SQLITE_SYNC=FULL`` to sync every vote to disk) and
``BEGIN IMMEDIATE`` write transactions, serialised in the process by a lock; PostgreSQL locks
the annotator's row instead, picks the next item with ``FOR UPDATE SKIP LOCKED`` (concurrent
requests get different items) and runs at most :data:`PG_WRITERS` write transactions at once.
The tables carry a ``crowdmed_`` prefix, so a study can live in a shared PostgreSQL database.

Tokens are stored as their SHA-256 digest only: they are 192-bit random strings, so the digest
cannot be reversed, and a copy of the database does not give access to the study.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "SCHEMA_VERSION",
    "Assignment",
    "Storage",
    "VoteConflict",
    "hash_token",
    "new_token",
]

SCHEMA_VERSION = 1

metadata = sa.MetaData()

meta_table = sa.Table(
    "crowdmed_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

items_table = sa.Table(
    "crowdmed_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(32), nullable=False, unique=True),  # opaque id shown to browsers
    sa.Column("item", sa.Text, nullable=False, unique=True),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("gold", sa.Integer, nullable=True),  # class index of a gold item, else NULL
    sa.Column("is_gold", sa.Boolean, nullable=False),
    sa.Column("priority", sa.Float, nullable=False, default=0.0),  # "which case next"; high first
    sa.Column("n_assigned", sa.Integer, nullable=False, default=0),
    sa.Column("n_labels", sa.Integer, nullable=False, default=0),
)
sa.Index(
    "crowdmed_items_next",
    items_table.c.is_gold,
    items_table.c.priority.desc(),
    items_table.c.n_assigned,
    items_table.c.id,
)

annotators_table = sa.Table(
    "crowdmed_annotators",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),  # "annotator" or "admin"
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # quiz, active, failed (annotators)
    sa.Column("quiz_correct", sa.Integer, nullable=False, default=0),
    sa.Column("quiz_total", sa.Integer, nullable=False, default=0),
    sa.Column("quiz_accuracy", sa.Float, nullable=True),
    sa.Column("n_tasks", sa.Integer, nullable=False, default=0),  # task assignments made
    sa.Column("quiz_done", sa.Integer, nullable=False, default=0),  # quiz answers given
    sa.Column("tasks_done", sa.Integer, nullable=False, default=0),  # task answers given
)

assignments_table = sa.Table(
    "crowdmed_assignments",
    metadata,
    sa.Column(
        "annotator_id", sa.Integer, sa.ForeignKey("crowdmed_annotators.id"), primary_key=True
    ),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("crowdmed_items.id"), primary_key=True),
    sa.Column("phase", sa.String(8), nullable=False),  # quiz or task
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("served", sa.Float, nullable=False),
)
sa.Index(
    "crowdmed_assignments_open",
    assignments_table.c.annotator_id,
    assignments_table.c.done,
    assignments_table.c.seq,
)

votes_table = sa.Table(
    "crowdmed_votes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("vote_id", sa.String(64), nullable=False, unique=True),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("crowdmed_annotators.id"), nullable=False),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("crowdmed_items.id"), nullable=False),
    sa.Column("phase", sa.String(8), nullable=False),
    sa.Column("label", sa.Integer, nullable=True),  # NULL: "unsure" (a missing label)
    sa.Column("created", sa.Float, nullable=False),
    sa.UniqueConstraint("annotator_id", "item_id", name="crowdmed_votes_once"),
)

TABLES = (meta_table, items_table, annotators_table, assignments_table, votes_table)

# The statements of the two hot paths (next item, vote), built once: building a statement costs
# more than running it on SQLite. Bind parameter names differ from column names on purpose.
_A, _I, _N, _V = assignments_table, items_table, annotators_table, votes_table
_bind = sa.bindparam
_SEEN = sa.select(_A.c.item_id).where(_A.c.annotator_id == _bind("aid"))
_SQL_ANNOTATOR = sa.select(_N).where(_N.c.id == _bind("aid"))
_SQL_ANNOTATOR_LOCKED = _SQL_ANNOTATOR.with_for_update()
_SQL_OPEN = (
    sa.select(_A.c.item_id, _A.c.phase, _I.c.key)
    .join(_I, _I.c.id == _A.c.item_id)
    .where(_A.c.annotator_id == _bind("aid"), _A.c.done.is_(False))
    .order_by(_A.c.seq)
    .limit(1)
)
_SQL_UNSEEN_GOLD = sa.select(_I.c.id, _I.c.key).where(_I.c.is_gold.is_(True), _I.c.id.not_in(_SEEN))
_SQL_PICK = (
    sa.select(_I.c.id, _I.c.key)
    .where(_I.c.is_gold.is_(False), _I.c.n_assigned < _bind("cap"), _I.c.id.not_in(_SEEN))
    .order_by(_I.c.priority.desc(), _I.c.n_assigned, _I.c.id)
    .limit(1)
)
# PostgreSQL: concurrent requests would all pick the same best item, queue on its row lock and
# each assign it from a stale snapshot (beyond ``labels_per_item``). Locking the pick with SKIP
# LOCKED gives each request the best item nobody else is assigning, re-checked on its latest
# version; SQLite serialises writers, so it needs no row lock.
_SQL_PICK_LOCKED = _SQL_PICK.with_for_update(skip_locked=True, of=_I)
_SQL_ASSIGN = _A.insert()
_SQL_ITEM_ASSIGNED = (
    _I.update().where(_I.c.id == _bind("iid")).values(n_assigned=_I.c.n_assigned + 1)
)
_SQL_TASK_ASSIGNED = _N.update().where(_N.c.id == _bind("aid")).values(n_tasks=_N.c.n_tasks + 1)
_SQL_PRIOR_VOTE = (
    sa.select(_V.c.annotator_id, _V.c.label, _I.c.key)
    .join(_I, _I.c.id == _V.c.item_id)
    .where(_V.c.vote_id == _bind("vid"))
)
_SQL_ITEM_AND_ASSIGNMENT = (
    sa.select(_I.c.id, _I.c.gold, _A.c.phase, _A.c.done)
    .select_from(
        _I.outerjoin(_A, sa.and_(_A.c.item_id == _I.c.id, _A.c.annotator_id == _bind("aid")))
    )
    .where(_I.c.key == _bind("k"))
)
_SQL_VOTE = _V.insert()
_SQL_ANSWERED = (
    _A.update()
    .where(_A.c.annotator_id == _bind("aid"), _A.c.item_id == _bind("iid"))
    .values(done=True)
)
_SQL_LABELLED = _I.update().where(_I.c.id == _bind("iid")).values(n_labels=_I.c.n_labels + 1)
_SQL_TASK_ANSWERED = (
    _N.update()
    .where(_N.c.id == _bind("aid"))
    .values(tasks_done=_N.c.tasks_done + 1)
    .returning(*_N.c)
)
#: Write transactions open at once on PostgreSQL (the others wait their turn in the process).
PG_WRITERS = 2 * (os.cpu_count() or 1)
#: Seconds a token lookup is cached (a rotated token stops working after at most this long in
#: other server processes; at once in the process that rotated it).
TOKEN_CACHE_SECONDS = 30.0


def new_token() -> str:
    """A new random token: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class VoteConflict(ValueError):
    """A vote that cannot be stored; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Assignment:
    """What an annotator is asked to do next.

    Attributes:
        phase: ``"quiz"``, ``"task"``, ``"failed"`` (quiz below the pass mark) or ``"done"``.
        key: Opaque key of the item (``None`` when there is no item).
        quiz_done: Quiz questions answered.
        quiz_total: Quiz questions in all.
        tasks_done: Tasks answered (hidden gold included).
    """

    phase: str
    key: str | None
    quiz_done: int
    quiz_total: int
    tasks_done: int


@dataclass(frozen=True)
class Principal:
    """An authenticated token: an annotator or an administrator."""

    id: int
    name: str
    role: str
    token_hash: str


def _sqlite_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30.0}, pool_size=20
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN (pysqlite's own handling defers it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        sync = os.environ.get("CROWDMED_SQLITE_SYNC", "NORMAL").upper()
        cur.execute(f"PRAGMA synchronous={'FULL' if sync == 'FULL' else 'NORMAL'}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at once: no lock upgrade, so no SQLITE_BUSY deadlock
        # between two writers that both read first.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

    return engine


class Storage:
    """The database of one study.

    Args:
        url: SQLAlchemy database URL, e.g. ``sqlite:///study/study.sqlite`` or
            ``postgresql+psycopg://user:password@host/db``.
    """

    def __init__(self, url: str | sa.URL) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = sa.create_engine(self.url, pool_size=20, max_overflow=20)
        # SQLite has one writer at a time. PostgreSQL takes several, but the server's threads
        # share one interpreter lock: with dozens of transactions open, each of their ~15 round
        # trips waits for the lock, and the row locks are held that much longer.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else threading.BoundedSemaphore(PG_WRITERS)
        )
        self._principals: dict[str, tuple[float, Principal]] = {}

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (committed on success, rolled back on error)."""
        with self._write_lock, self.engine.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["write"] = False

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def create_schema(self, study_id: str, *, settings_json: str) -> str:
        """Create the tables of a new study and return a new administrator token.

        Raises:
            ValueError: If the database already holds a crowdmed study.
        """
        inspector = sa.inspect(self.engine)
        if inspector.has_table(meta_table.name):
            raise ValueError(
                f"The database '{self.url.render_as_string(hide_password=True)}' already holds "
                "a crowdmed study; use an empty database or another study folder."
            )
        metadata.create_all(self.engine)
        secret = secrets.token_hex(32)
        with self.write() as conn:
            conn.execute(
                meta_table.insert(),
                [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "study_id", "value": study_id},
                    {"key": "secret", "value": secret},
                    {"key": "settings", "value": settings_json},
                ],
            )
        return self.add_principal("admin", role="admin")

    def drop_schema(self) -> None:
        """Drop the study's tables (used by tests on a shared PostgreSQL database)."""
        metadata.drop_all(self.engine)

    def meta(self, key: str) -> str | None:
        """A value of the ``crowdmed_meta`` table (``None`` when missing or no schema)."""
        try:
            with self.read() as conn:
                row = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == key)
                ).first()
        except sa.exc.OperationalError:
            return None
        except sa.exc.ProgrammingError:
            return None
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ items
    def add_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the items (``item, image, gold``; ``gold`` is a class index or ``None``)."""
        keys: set[str] = set()
        records = []
        for i, r in enumerate(rows):
            key = secrets.token_hex(8)
            while key in keys:  # pragma: no cover - 64-bit keys practically never collide
                key = secrets.token_hex(8)
            keys.add(key)
            records.append(
                {
                    "id": i,
                    "key": key,
                    "item": str(r["item"]),
                    "image": str(r["image"]),
                    "gold": None if r.get("gold") is None else int(r["gold"]),
                    "is_gold": r.get("gold") is not None,
                    "priority": float(r.get("priority") or 0.0),
                    "n_assigned": 0,
                    "n_labels": 0,
                }
            )
        with self.write() as conn:
            if records:
                conn.execute(items_table.insert(), records)

    def set_priorities(self, scores: dict[str, float]) -> int:
        """Set the "which case next" score of items by item id; returns how many were set."""
        with self.write() as conn:
            n = 0
            for item, score in scores.items():
                res = conn.execute(
                    items_table.update()
                    .where(items_table.c.item == str(item))
                    .values(priority=float(score))
                )
                n += res.rowcount or 0
        return n

    def item_by_key(self, key: str) -> dict[str, Any] | None:
        """The item row with this opaque key, or ``None``."""
        with self.read() as conn:
            row = conn.execute(sa.select(items_table).where(items_table.c.key == key)).first()
        return None if row is None else dict(row._mapping)

    def items(self) -> list[dict[str, Any]]:
        """Every item row, in item order."""
        with self.read() as conn:
            rows = conn.execute(sa.select(items_table).order_by(items_table.c.id)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ principals
    def add_principal(self, name: str, *, role: str = "annotator") -> str:
        """Add an annotator (or administrator) and return their new token.

        Raises:
            ValueError: If the name is empty, too long or taken.
        """
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError(f"`name` must be 1 to 200 characters; got {name!r}.")
        token = new_token()
        try:
            with self.write() as conn:
                conn.execute(
                    annotators_table.insert().values(
                        name=name,
                        token_hash=hash_token(token),
                        role=role,
                        created=time.time(),
                        status="quiz" if role == "annotator" else "admin",
                        quiz_correct=0,
                        quiz_total=0,
                        quiz_accuracy=None,
                        n_tasks=0,
                        quiz_done=0,
                        tasks_done=0,
                    )
                )
        except sa.exc.IntegrityError:
            raise ValueError(
                f"The name {name!r} is taken in this study; choose another name."
            ) from None
        return token

    def rotate_token(self, name: str) -> str:
        """Give a principal a new token (the old link stops working)."""
        token = new_token()
        with self.write() as conn:
            res = conn.execute(
                annotators_table.update()
                .where(annotators_table.c.name == name)
                .values(token_hash=hash_token(token))
            )
            if not res.rowcount:
                raise ValueError(f"No annotator or administrator is named {name!r}.")
        self._principals.clear()
        return token

    def principal(self, token: str) -> Principal | None:
        """The annotator or administrator holding ``token``, or ``None``."""
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)
        cached = self._principals.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with self.read() as conn:
            row = conn.execute(
                sa.select(
                    annotators_table.c.id,
                    annotators_table.c.name,
                    annotators_table.c.role,
                    annotators_table.c.token_hash,
                ).where(annotators_table.c.token_hash == digest)
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        p = Principal(id=row.id, name=row.name, role=row.role, token_hash=row.token_hash)
        self._principals[digest] = (time.monotonic() + TOKEN_CACHE_SECONDS, p)
        return p

    def annotators(self) -> list[dict[str, Any]]:
        """Every annotator row (administrators excluded), in creation order."""
        with self.read() as conn:
            rows = conn.execute(
                sa.select(annotators_table)
                .where(annotators_table.c.role == "annotator")
                .order_by(annotators_table.c.id)
            ).all()
        return [{k: v for k, v in r._mapping.items() if k != "token_hash"} for r in rows]

    # ------------------------------------------------------------------ the annotator flow
    def _lock_annotator(self, conn: Connection, annotator_id: int) -> Any:
        q = _SQL_ANNOTATOR if self.is_sqlite else _SQL_ANNOTATOR_LOCKED
        return conn.execute(q, {"aid": annotator_id}).one()

    def next_assignment(
        self,
        annotator_id: int,
        *,
        quiz_size: int,
        pass_mark: float,
        labels_per_item: int,
        gold_share: float,
        seed: int,
    ) -> Assignment:
        """The item an annotator answers next (the open one, else a new assignment).

        The quiz comes first (``quiz_size`` gold items drawn per annotator). After the quiz,
        with probability ``gold_share`` a gold item the annotator has not seen is served
        (hidden gold); otherwise the real item with the best priority, then the fewest
        assignments, that has fewer than ``labels_per_item`` and that the annotator has not
        seen. An annotator never gets an item twice.
        """
        with self.write() as conn:
            return self._next(
                conn,
                annotator_id,
                quiz_size=quiz_size,
                pass_mark=pass_mark,
                labels_per_item=labels_per_item,
                gold_share=gold_share,
                seed=seed,
            )

    def _next(
        self,
        conn: Connection,
        annotator_id: int,
        *,
        quiz_size: int,
        pass_mark: float,
        labels_per_item: int,
        gold_share: float,
        seed: int,
        ann: Any = None,
    ) -> Assignment:
        if ann is None:
            ann = self._lock_annotator(conn, annotator_id)
        if ann.status == "quiz" and ann.quiz_total == 0:
            ann = self._start_quiz(conn, ann, quiz_size, pass_mark, seed)
        open_row = conn.execute(_SQL_OPEN, {"aid": annotator_id}).first()
        quiz_done, tasks_done = int(ann.quiz_done), int(ann.tasks_done)

        def answer(phase: str, key: str | None) -> Assignment:
            return Assignment(phase, key, quiz_done, ann.quiz_total, tasks_done)

        if open_row is not None:
            return answer(open_row.phase, open_row.key)
        if ann.status == "failed":
            return answer("failed", None)
        if ann.status != "active":  # pragma: no cover - the quiz rows are open above
            return answer("done", None)
        rng = random.Random(f"{seed}:task:{annotator_id}:{ann.n_tasks}")
        pick = None
        if gold_share > 0 and rng.random() < gold_share:
            golds = conn.execute(_SQL_UNSEEN_GOLD, {"aid": annotator_id}).all()
            if golds:
                pick = golds[rng.randrange(len(golds))]
        if pick is None:
            q = _SQL_PICK if self.is_sqlite else _SQL_PICK_LOCKED
            pick = conn.execute(q, {"aid": annotator_id, "cap": labels_per_item}).first()
        if pick is None:
            return answer("done", None)
        conn.execute(
            _SQL_ASSIGN,
            {
                "annotator_id": annotator_id,
                "item_id": pick.id,
                "phase": "task",
                "seq": quiz_size + ann.n_tasks,
                "done": False,
                "served": time.time(),
            },
        )
        conn.execute(_SQL_ITEM_ASSIGNED, {"iid": pick.id})
        conn.execute(_SQL_TASK_ASSIGNED, {"aid": annotator_id})
        return answer("task", pick.key)

    def _start_quiz(
        self, conn: Connection, ann: Any, quiz_size: int, pass_mark: float, seed: int
    ) -> Any:
        if quiz_size == 0:
            conn.execute(
                annotators_table.update()
                .where(annotators_table.c.id == ann.id)
                .values(status="active")
            )
        else:
            gold_ids = (
                conn.execute(
                    sa.select(items_table.c.id)
                    .where(items_table.c.gold.is_not(None))
                    .order_by(items_table.c.id)
                )
                .scalars()
                .all()
            )
            chosen = random.Random(f"{seed}:quiz:{ann.id}").sample(list(gold_ids), quiz_size)
            now = time.time()
            conn.execute(
                assignments_table.insert(),
                [
                    {
                        "annotator_id": ann.id,
                        "item_id": item_id,
                        "phase": "quiz",
                        "seq": i,
                        "done": False,
                        "served": now,
                    }
                    for i, item_id in enumerate(chosen)
                ],
            )
            conn.execute(
                annotators_table.update()
                .where(annotators_table.c.id == ann.id)
                .values(quiz_total=quiz_size)
            )
        return self._lock_annotator(conn, ann.id)

    def submit_vote(
        self,
        annotator_id: int,
        *,
        key: str,
        label: int | None,
        vote_id: str,
        pass_mark: float,
    ) -> bool:
        """Store one vote; returns ``False`` when this ``vote_id`` was already stored.

        A retried submission (same ``vote_id``, item and label) is acknowledged again and
        counts once. ``label=None`` records "unsure".

        Raises:
            VoteConflict: If the item is unknown, was not given to this annotator or was
                already answered, or ``vote_id`` was used for another vote.
        """
        for attempt in range(2):
            try:
                return self._submit(annotator_id, key, label, vote_id, pass_mark)
            except sa.exc.IntegrityError:
                # A concurrent retry of the same vote won the race; answer as for a retry.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _submit(
        self, annotator_id: int, key: str, label: int | None, vote_id: str, pass_mark: float
    ) -> bool:
        with self.write() as conn:
            return self._store(conn, annotator_id, key, label, vote_id, pass_mark)

    def submit_and_next(
        self,
        annotator_id: int,
        *,
        key: str,
        label: int | None,
        vote_id: str,
        quiz_size: int,
        pass_mark: float,
        labels_per_item: int,
        gold_share: float,
        seed: int,
    ) -> tuple[bool, Assignment]:
        """:meth:`submit_vote` and :meth:`next_assignment` in one transaction.

        Returns:
            Whether the vote was new, and the annotator's next assignment.
        """
        for attempt in range(2):
            try:
                with self.write() as conn:
                    stored, ann = self._store_row(
                        conn, annotator_id, key, label, vote_id, pass_mark
                    )
                    nxt = self._next(
                        conn,
                        annotator_id,
                        quiz_size=quiz_size,
                        pass_mark=pass_mark,
                        labels_per_item=labels_per_item,
                        gold_share=gold_share,
                        seed=seed,
                        ann=ann,
                    )
                return stored, nxt
            except sa.exc.IntegrityError:
                # A concurrent retry of the same vote won the race; answer as for a retry.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _store(
        self,
        conn: Connection,
        annotator_id: int,
        key: str,
        label: int | None,
        vote_id: str,
        pass_mark: float,
    ) -> bool:
        return self._store_row(conn, annotator_id, key, label, vote_id, pass_mark)[0]

    def _store_row(
        self,
        conn: Connection,
        annotator_id: int,
        key: str,
        label: int | None,
        vote_id: str,
        pass_mark: float,
    ) -> tuple[bool, Any]:
        # Also returns the annotator's (locked) row as the vote leaves it, so that the next
        # assignment in the same transaction need not read it again.
        ann = self._lock_annotator(conn, annotator_id)
        prior = conn.execute(_SQL_PRIOR_VOTE, {"vid": vote_id}).first()
        if prior is not None:
            if (prior.annotator_id, prior.key, prior.label) == (annotator_id, key, label):
                return False, ann
            raise VoteConflict(
                f"Vote id {vote_id!r} was already used for another vote; generate a new id "
                "for every new answer."
            )
        asg = conn.execute(_SQL_ITEM_AND_ASSIGNMENT, {"aid": annotator_id, "k": key}).first()
        if asg is None:
            raise VoteConflict(f"Unknown item {key!r}.", status=404)
        if asg.phase is None:
            raise VoteConflict(
                f"Item {key!r} was not given to you; answer the item shown on the page."
            )
        if asg.done:
            raise VoteConflict(f"Item {key!r} is already answered; each item counts once.")
        item = asg
        conn.execute(
            _SQL_VOTE,
            {
                "vote_id": vote_id,
                "annotator_id": annotator_id,
                "item_id": item.id,
                "phase": asg.phase,
                "label": label,
                "created": time.time(),
            },
        )
        conn.execute(_SQL_ANSWERED, {"aid": annotator_id, "iid": item.id})
        if label is not None:
            conn.execute(_SQL_LABELLED, {"iid": item.id})
        if asg.phase == "task":
            return True, conn.execute(_SQL_TASK_ANSWERED, {"aid": annotator_id}).one()
        # A quiz answer; the last one decides (a tiny tolerance: 7/10 passes a mark of 0.7).
        correct = ann.quiz_correct + int(label is not None and label == item.gold)
        values: dict[str, Any] = {"quiz_correct": correct, "quiz_done": ann.quiz_done + 1}
        if ann.quiz_done + 1 >= ann.quiz_total:
            gamma = correct / ann.quiz_total
            values["quiz_accuracy"] = gamma
            values["status"] = "active" if gamma >= pass_mark - 1e-9 else "failed"
        row = conn.execute(
            annotators_table.update()
            .where(annotators_table.c.id == annotator_id)
            .values(**values)
            .returning(*annotators_table.c)
        ).one()
        return True, row

    def was_assigned(self, annotator_id: int, item_id: int) -> bool:
        """Whether the item was given to the annotator (quiz or task)."""
        a = assignments_table
        with self.read() as conn:
            row = conn.execute(
                sa.select(a.c.item_id).where(
                    a.c.annotator_id == annotator_id, a.c.item_id == item_id
                )
            ).first()
        return row is not None

    # ------------------------------------------------------------------ reading votes
    def votes(self) -> list[dict[str, Any]]:
        """Every vote with its item id, annotator name and gold answer, in vote order."""
        v = votes_table
        with self.read() as conn:
            rows = conn.execute(
                sa.select(
                    v.c.id,
                    v.c.vote_id,
                    v.c.phase,
                    v.c.label,
                    v.c.created,
                    items_table.c.item,
                    items_table.c.gold,
                    annotators_table.c.name.label("annotator"),
                )
                .join(items_table, items_table.c.id == v.c.item_id)
                .join(annotators_table, annotators_table.c.id == v.c.annotator_id)
                .order_by(v.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def version(self) -> tuple[int, int]:
        """``(number of votes, largest vote row id)``: changes whenever a vote is stored."""
        with self.read() as conn:
            n, last = conn.execute(sa.select(sa.func.count(), sa.func.max(votes_table.c.id))).one()
        return int(n), int(last or 0)

    def counts(self) -> dict[str, int]:
        """Study progress: items, gold items, votes, unsure votes, annotators by status."""
        with self.read() as conn:
            n_items, n_gold = conn.execute(
                sa.select(sa.func.count(), sa.func.count(items_table.c.gold))
            ).one()
            n_votes, n_labelled = conn.execute(
                sa.select(sa.func.count(), sa.func.count(votes_table.c.label))
            ).one()
            status: dict[str, int] = dict(
                conn.execute(
                    sa.select(annotators_table.c.status, sa.func.count())
                    .where(annotators_table.c.role == "annotator")
                    .group_by(annotators_table.c.status)
                ).all()
            )
        return {
            "items": int(n_items),
            "gold_items": int(n_gold),
            "votes": int(n_votes),
            "unsure": int(n_votes - n_labelled),
            "annotators_quiz": int(status.get("quiz", 0)),
            "annotators_active": int(status.get("active", 0)),
            "annotators_failed": int(status.get("failed", 0)),
        }
