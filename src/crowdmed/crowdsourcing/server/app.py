"""The web application of a study (FastAPI): annotator pages, admin page, JSON API.

Routes (``A`` = annotator token, ``M`` = administrator token)::

    GET  /a/{token}              invite link: sets the annotator cookie, redirects to /annotate
    GET  /annotate           A   the annotator page (quiz, then tasks)
    GET  /api/next           A   the next item: {"phase", "item", "progress"}
    POST /api/votes          A   one vote {"item", "label", "vote_id"}; idempotent on vote_id;
                                 the answer carries the next item as /api/next does
    GET  /image/{key}        A,M an item's image (annotators: only items given to them)
    GET  /admin/login/{token}    sets the administrator cookie, redirects to /admin
    GET  /admin              M   progress, consensus, annotators, export and invite forms
    GET  /admin/api/summary  M   the same as JSON
    GET  /admin/api/progress M   the progress counts only (the page polls it to refresh)
    GET  /admin/export/{votes,consensus,annotators}.csv   M   downloads
    POST /admin/export       M   form: write the votes CSV into the study's exports/ folder
    POST /admin/invite       M   form: add an annotator and show their invite link

Authentication is a token in an HttpOnly, SameSite=Lax cookie (set by the invite link) or an
``Authorization: Bearer`` header (scripts). A state-changing request authenticated by cookie
must carry the page's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field) and must
not come from another origin. Annotator responses carry only what the annotator needs: an
opaque item key, the image and their own progress — never item ids, gold answers, other
annotators' votes or the consensus.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Body, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from crowdmed._version import __version__
from crowdmed.crowdsourcing.server.consensus import ConsensusCache
from crowdmed.crowdsourcing.server.storage import Assignment, Principal, VoteConflict
from crowdmed.crowdsourcing.server.study import Study, export_votes

__all__ = ["ADMIN_COOKIE", "ANNOTATOR_COOKIE", "create_app"]

ANNOTATOR_COOKIE = "crowdmed_annotator"
ADMIN_COOKIE = "crowdmed_admin"
_HERE = Path(__file__).resolve().parent
_VOTE_ID = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
_KEY = re.compile(r"[0-9a-f]{16}")


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def create_app(study: Study) -> FastAPI:
    """Build the web application of an open study.

    Args:
        study: The study (see :func:`crowdmed.crowdsourcing.server.open_study`).

    Returns:
        The FastAPI application; serve it with uvicorn or test it with a ``TestClient``.
    """
    settings = study.settings
    storage = study.storage
    secret = (storage.meta("secret") or "").encode("ascii")
    consensus = ConsensusCache(study)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["fmt"] = _fmt
    app = FastAPI(
        title=f"crowdmed study: {settings.name}",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.study = study
    app.state.consensus = consensus
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    def csrf_for(p: Principal) -> str:
        return hmac.new(secret, f"csrf:{p.token_hash}".encode(), hashlib.sha256).hexdigest()

    def authenticate(request: Request, role: str) -> tuple[Principal, bool]:
        """The principal of the request and whether a cookie (not a header) authenticated it."""
        auth = request.headers.get("authorization", "")
        from_cookie = False
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        else:
            token = request.cookies.get(ADMIN_COOKIE if role == "admin" else ANNOTATOR_COOKIE, "")
            from_cookie = True
        p = storage.principal(token) if token else None
        if p is None:
            raise _HTTPError(401, "Open your invite link first (unknown or missing token).")
        if p.role != role:
            raise _HTTPError(403, f"This page needs an {role} token.")
        return p, from_cookie

    def check_origin(request: Request) -> None:
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise _HTTPError(403, "Cross-site requests are refused.")
        origin = request.headers.get("origin")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise _HTTPError(403, "Cross-site requests are refused.")
        elif origin == "null":
            raise _HTTPError(403, "Cross-site requests are refused.")

    def check_csrf(request: Request, p: Principal, given: str | None) -> None:
        check_origin(request)
        token = given or request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(token.encode(), csrf_for(p).encode()):
            raise _HTTPError(403, "Missing or wrong CSRF token; reload the page.")

    @app.exception_handler(_HTTPError)
    async def _on_error(request: Request, exc: _HTTPError) -> Response:
        if request.url.path.startswith(("/api/", "/admin/api/", "/image/")) or (
            "application/json" in request.headers.get("accept", "")
        ):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return templates.TemplateResponse(
            request,
            "message.html",
            {"title": "Not available", "message": exc.message, "settings": settings},
            status_code=exc.status,
        )

    def set_cookie(response: Response, name: str, token: str, request: Request) -> None:
        response.set_cookie(
            name,
            token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            max_age=60 * 60 * 24 * 90,
        )

    # ------------------------------------------------------------------ annotator
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            "message.html",
            {
                "title": settings.name,
                "message": "Open the invite link you were given to take part.",
                "settings": settings,
            },
        )

    @app.get("/a/{token}")
    def invite(request: Request, token: str) -> Response:
        p = storage.principal(token)
        if p is None or p.role != "annotator":
            raise _HTTPError(404, "This invite link is not valid; ask the study team for yours.")
        response = RedirectResponse("/annotate", status_code=303)
        set_cookie(response, ANNOTATOR_COOKIE, token, request)
        return response

    @app.get("/annotate", response_class=HTMLResponse)
    def annotate(request: Request) -> Response:
        p, _ = authenticate(request, "annotator")
        return templates.TemplateResponse(
            request,
            "annotate.html",
            {
                "settings": settings,
                "name": p.name,
                "csrf": csrf_for(p),
                "classes": list(enumerate(settings.classes, start=1)),
            },
            headers={"Cache-Control": "no-store"},
        )

    serving: dict[str, Any] = {
        "quiz_size": settings.quiz_size,
        "pass_mark": settings.pass_mark,
        "labels_per_item": settings.labels_per_item,
        "gold_share": settings.gold_share,
        "seed": settings.seed,
    }

    def next_payload(p: Principal) -> dict[str, Any]:
        return payload(storage.next_assignment(p.id, **serving))

    def payload(a: Assignment) -> dict[str, Any]:
        messages = {
            "quiz": f"Qualification quiz: question {a.quiz_done + 1} of {a.quiz_total}.",
            "task": f"Task {a.tasks_done + 1}.",
            "failed": "Your quiz result is below the pass mark of this study, so there are no "
            "tasks for you. Thank you for your time.",
            "done": "There are no more items for you. Thank you!",
        }
        return {
            "phase": a.phase,
            "item": None if a.key is None else {"key": a.key, "image": f"/image/{a.key}"},
            "progress": {
                "quiz_done": a.quiz_done,
                "quiz_total": a.quiz_total,
                "tasks_done": a.tasks_done,
            },
            "message": messages[a.phase],
        }

    @app.get("/api/next")
    def api_next(request: Request) -> JSONResponse:
        p, _ = authenticate(request, "annotator")
        return JSONResponse(next_payload(p), headers={"Cache-Control": "no-store"})

    # Endpoints are plain functions: FastAPI runs them in its thread pool, so a database
    # transaction (or the consensus fit on the admin page) never blocks the event loop.
    @app.post("/api/votes")
    def api_vote(request: Request, body: Annotated[Any, Body()] = None) -> JSONResponse:
        p, from_cookie = authenticate(request, "annotator")
        if from_cookie:
            check_csrf(request, p, None)
        if not isinstance(body, dict):
            raise _HTTPError(400, "The body must be a JSON object: {item, label, vote_id}.")
        unknown = sorted(set(body) - {"item", "label", "vote_id"})
        if unknown:
            raise _HTTPError(422, f"Unknown fields {unknown}; send item, label and vote_id.")
        key, label, vote_id = body.get("item"), body.get("label"), body.get("vote_id")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise _HTTPError(422, f"`item` must be the item key shown to you; got {key!r}.")
        if not isinstance(vote_id, str) or not _VOTE_ID.fullmatch(vote_id):
            raise _HTTPError(
                422, "`vote_id` must be 8-64 characters of letters, digits, '_', '.', ':', '-'."
            )
        if label == "unsure":
            code = None
        elif (
            isinstance(label, int)
            and not isinstance(label, bool)
            and 0 <= label < settings.n_classes
        ):
            code = int(label)
        else:
            raise _HTTPError(
                422,
                f"`label` must be a class index 0-{settings.n_classes - 1} or 'unsure'; got "
                f"{label!r}.",
            )
        try:
            # The vote and the next item in one transaction and one round trip.
            stored, nxt = storage.submit_and_next(
                p.id, key=key, label=code, vote_id=vote_id, **serving
            )
        except VoteConflict as exc:
            raise _HTTPError(exc.status, str(exc)) from None
        return JSONResponse(
            {
                "status": "stored" if stored else "duplicate",
                "vote_id": vote_id,
                "next": payload(nxt),
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/image/{key}")
    def image(request: Request, key: str) -> Response:
        token_admin = request.cookies.get(ADMIN_COOKIE)
        is_admin = False
        if token_admin:
            q = storage.principal(token_admin)
            is_admin = q is not None and q.role == "admin"
        if not is_admin:
            p, _ = authenticate(request, "annotator")
        if not _KEY.fullmatch(key):
            raise _HTTPError(404, "Unknown image.")
        row = storage.item_by_key(key)
        if row is None:
            raise _HTTPError(404, "Unknown image.")
        if not is_admin and not storage.was_assigned(p.id, row["id"]):
            raise _HTTPError(404, "Unknown image.")
        root = study.images.resolve()
        path = (root / row["image"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise _HTTPError(404, "Unknown image.")
        # No file name in the response: it could name the item.
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------------ admin
    @app.get("/admin/login/{token}")
    def admin_login(request: Request, token: str) -> Response:
        p = storage.principal(token)
        if p is None or p.role != "admin":
            raise _HTTPError(404, "This administrator link is not valid.")
        response = RedirectResponse("/admin", status_code=303)
        set_cookie(response, ADMIN_COOKIE, token, request)
        return response

    def summary() -> dict[str, Any]:
        c = consensus.get()
        return {
            "study": {
                "name": settings.name,
                "classes": list(settings.classes),
                "kind": settings.kind,
                "labels_per_item": settings.labels_per_item,
                "quiz_size": settings.quiz_size,
                "pass_mark": settings.pass_mark,
                "gold_share": settings.gold_share,
            },
            "progress": storage.counts(),
            "items_complete": int(
                sum(
                    1
                    for r in storage.items()
                    if r["gold"] is None and r["n_labels"] >= settings.labels_per_item
                )
            ),
            "consensus": c.items.to_dict(orient="records"),
            "annotators": c.annotators.to_dict(orient="records"),
            "consensus_seconds": c.seconds,
        }

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> Response:
        p, _ = authenticate(request, "admin")
        data = summary()
        n_real = data["progress"]["items"] - data["progress"]["gold_items"]
        return templates.TemplateResponse(
            request,
            "admin.html",
            {
                "settings": settings,
                "data": data,
                "n_real": n_real,
                "csrf": csrf_for(p),
                "study_path": str(study.path),
                "new_invite": None,
                "exported": None,
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/admin/api/summary")
    def admin_summary(request: Request) -> JSONResponse:
        authenticate(request, "admin")
        from crowdmed._io import to_jsonable

        return JSONResponse(to_jsonable(summary()), headers={"Cache-Control": "no-store"})

    @app.get("/admin/api/progress")
    def admin_progress(request: Request) -> JSONResponse:
        authenticate(request, "admin")
        return JSONResponse(storage.counts(), headers={"Cache-Control": "no-store"})

    @app.get("/admin/export/{what}.csv")
    def admin_download(request: Request, what: str) -> Response:
        authenticate(request, "admin")
        from crowdmed.crowdsourcing.server.study import votes_frame

        if what == "votes":
            df = votes_frame(study, phase="task")
            df = df[df["label"].notna()].drop(columns="phase")
        elif what == "consensus":
            df = consensus.get().items
        elif what == "annotators":
            df = consensus.get().annotators
        else:
            raise _HTTPError(404, "Exports are votes.csv, consensus.csv and annotators.csv.")
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{what}.csv"'},
        )

    @app.post("/admin/invite", response_class=HTMLResponse)
    def admin_invite(
        request: Request,
        name: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Response:
        p, from_cookie = authenticate(request, "admin")
        if from_cookie:
            check_csrf(request, p, csrf_token)
        name = name.strip()
        try:
            token = storage.add_principal(name)
        except ValueError as exc:
            raise _HTTPError(422, str(exc)) from None
        link = str(request.base_url).rstrip("/") + f"/a/{token}"
        data = summary()
        return templates.TemplateResponse(
            request,
            "admin.html",
            {
                "settings": settings,
                "data": data,
                "n_real": data["progress"]["items"] - data["progress"]["gold_items"],
                "csrf": csrf_for(p),
                "study_path": str(study.path),
                "new_invite": {"name": name, "link": link},
                "exported": None,
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/admin/export", response_class=HTMLResponse)
    def admin_export(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        p, from_cookie = authenticate(request, "admin")
        if from_cookie:
            check_csrf(request, p, csrf_token)
        path = export_votes(study)
        data = summary()
        return templates.TemplateResponse(
            request,
            "admin.html",
            {
                "settings": settings,
                "data": data,
                "n_real": data["progress"]["items"] - data["progress"]["gold_items"],
                "csrf": csrf_for(p),
                "study_path": str(study.path),
                "new_invite": None,
                "exported": str(path.relative_to(study.path)),
            },
            headers={"Cache-Control": "no-store"},
        )

    return app
