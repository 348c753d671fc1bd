"""The ``/dpo`` FastAPI app the Airflow plugin mounts: ``POST /dpo/trigger-finetune`` (authenticated and
authorized by Airflow's auth manager, the body resolved as ``validate`` would, then Airflow's
``trigger_dag``), ``GET /dpo/health`` and the run reports ``GET /dpo/runs…``. Statuses and limits:
docs/serving.md#the-webhook-and-health-check-dpo-an-airflow-plugin.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dpo_lib.orchestration.names import FINETUNE_DAG_ID, new_run_id
from dpo_lib.settings import Settings
from dpo_lib.spec import SpecError

MAX_BODY_BYTES = 64 * 1024


def create_app() -> FastAPI:
    """The app, with no Airflow import until a request arrives (plugins load in every component)."""
    app = FastAPI(
        title="DPO pipeline",
        description="Fine-tune webhook, health check and run reports of the DPO pipeline, served by Airflow's api-server.",
        version="1",
        # No unauthenticated pages beside the health check (the request schema is in the repository).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_api_route("/health", health, methods=["GET"], summary="Health of what a fine-tune needs")
    app.add_api_route(
        "/trigger-finetune", trigger_finetune, methods=["POST"], status_code=202, summary="Trigger dpo_finetune"
    )
    from dpo_lib.api.report import run_report, runs_list

    app.add_api_route("/runs", runs_list, methods=["GET"], summary="Recent runs and their metrics")
    app.add_api_route("/runs/{dag_id}/{run_id:path}", run_report, methods=["GET"], summary="A run's report")
    return app


async def health(request: Request) -> JSONResponse:
    """200 when the metadata database, the scheduler, storage (and Docker, if used) are up; 503 naming what is not.

    Public, with each component's status only; a valid bearer token adds the details.
    """
    from dpo_lib.api.health import public_view, report, run_checks

    user = None
    if request.headers.get("authorization"):
        user = await _authenticated_user(request)
        if isinstance(user, JSONResponse):
            return user
    status, body = report(await run_in_threadpool(run_checks))
    return JSONResponse(body if user is not None else public_view(body), status_code=status)


async def trigger_finetune(request: Request) -> JSONResponse:
    """Queue a ``dpo_finetune`` run with the request body as its conf."""
    user = await _authenticated_user(request)
    if isinstance(user, JSONResponse):
        return user
    if not await run_in_threadpool(_may_trigger, user):
        return _error(403, f"user {user.get_name()!r} may not trigger {FINETUNE_DAG_ID} runs")

    body = await _read_body(request)
    if isinstance(body, JSONResponse):
        return body
    if problems := await run_in_threadpool(_problems, body):
        detail = [{"loc": ["body", *field.split(".")], "msg": msg, "type": "request_schema"} for field, msg in problems]
        return JSONResponse({"detail": detail}, status_code=422)

    result = await run_in_threadpool(_trigger, body, user.get_name())
    if isinstance(result, JSONResponse):
        return result
    base = _base_url(request)
    run_id = result.run_id
    api_url = f"{base}/api/v2/dags/{FINETUNE_DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    return JSONResponse(
        {
            "dag_id": FINETUNE_DAG_ID,
            "dag_run_id": run_id,
            "state": str(getattr(result.state, "value", result.state)),
            "url": f"{base}/dags/{FINETUNE_DAG_ID}/runs/{quote(run_id, safe='')}",
            "api_url": api_url,
        },
        status_code=202,
        headers={"Location": api_url},
    )


async def _authenticated_user(request: Request) -> Any:
    """The user behind the bearer token, or a 401 response."""
    return await authenticated_user(request)


async def authenticated_user(request: Request, *, cookie: bool = False, html: bool = False) -> Any:
    """The user behind the bearer token (or, with ``cookie``, the Airflow UI's session cookie), or a response.

    The UI keeps its JWT in the ``_token`` cookie and the browser sends it with the report's requests
    (the UI shows the report in an iframe of the same origin): the same token, checked the same way.
    An explicit ``Authorization`` header wins over the cookie, as in Airflow's own API. Without a valid
    one: a 401, or with ``html`` for a browser (it accepts text/html), a redirect to Airflow's login.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from jwt import InvalidTokenError

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        token = request.cookies.get(COOKIE_NAME_JWT_TOKEN, "") if cookie and not scheme else ""
    reason = "a bearer token from Airflow's POST /auth/token is required" + (
        " (or an Airflow UI session)" if cookie else ""
    )
    if token.strip():
        try:
            return await get_auth_manager().get_user_from_token(token.strip())
        except InvalidTokenError as exc:  # also ExpiredSignatureError
            reason = f"the token is not valid: {exc}"
    if html:
        from dpo_lib.api.report import message

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        if "text/html" in request.headers.get("accept", ""):
            return message(303, "Log in first", reason, link=("Log in to Airflow", login), location=login)
        return message(401, "Log in first", reason, link=("Log in to Airflow", login), **{"WWW-Authenticate": "Bearer"})
    return _error(401, reason)


def _may_trigger(user: Any) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return get_auth_manager().is_authorized_dag(
        method="POST",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=FINETUNE_DAG_ID, team_name=DagModel.get_team_name(FINETUNE_DAG_ID)),
        user=user,
    )


async def _read_body(request: Request) -> Any:
    """The JSON body, read no further than :data:`MAX_BODY_BYTES`; a 413 or 422 response otherwise."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _error(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; RecursionError: nested too deeply
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:300]
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": f"not valid JSON: {reason}", "type": "json_invalid"}]},
            status_code=422,
        )


def _problems(body: Any) -> list[tuple[str, str]]:
    """What the ``validate`` task would refuse in ``body``, as ``(field, reason)`` pairs."""
    from dpo_lib.orchestration.plan import plan_run

    try:
        plan_run(body, dag_id=FINETUNE_DAG_ID, run_id=new_run_id(), settings=Settings.from_env())
    except SpecError as exc:
        return exc.problems
    return []


def _trigger(conf: dict[str, Any], user_name: str) -> Any:
    """Airflow's own trigger, as the REST API's trigger route would do it; errors mapped to HTTP."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.models.dag import DagModel
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy.exc import OperationalError

    model = DagModel.get_current(FINETUNE_DAG_ID)
    if model is None:
        return _error(404, f"{FINETUNE_DAG_ID} is not registered yet (the dag-processor has not parsed it)")
    if model.has_import_errors:
        return _error(400, f"{FINETUNE_DAG_ID} has import errors and cannot be triggered")
    try:
        return trigger_dag(
            FINETUNE_DAG_ID,
            triggered_by=DagRunTriggeredByType.REST_API,
            triggering_user_name=user_name,
            conf=conf,
            run_id=new_run_id(),  # Airflow's default is the time alone: same-microsecond requests would collide
        )
    except DagNotFound as exc:
        return _error(404, str(exc))
    except DagRunAlreadyExists as exc:
        return _error(409, str(exc))
    except ValueError as exc:  # e.g. Params Airflow refuses
        return _error(400, str(exc))
    except OperationalError:  # SQLite's "database is locked" under concurrent writers: try again
        return JSONResponse(
            {"detail": "the metadata database is busy; retry shortly"}, status_code=503, headers={"Retry-After": "5"}
        )


def _base_url(request: Request) -> str:
    """Airflow's ``[api] base_url`` when configured, else the address this request came to."""
    from airflow.configuration import conf

    configured = conf.get("api", "base_url", fallback="") or ""
    if configured:
        return configured.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


def _error(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
