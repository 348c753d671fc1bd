"""Airflow's own services under faults (issue 6): the scheduler and the api-server killed with a run in flight,
twenty runs at once (ten through the REST API, ten through the webhook), the live webhook fuzzed, every ``/dpo``
route called without a valid token, and credentials planted in the services' environment looked for in everything
Airflow keeps of the runs: task logs, rendered templates, XComs and files.

One service group for the module, started by the project's launcher (``python -m dpo_lib services``, as ``make api``
does) on PostgreSQL, the production metadata database (SQLite lets one writer in at a time and stalls under concurrent
REST writes: ``dpo_lib/airflow_local/sqlite_args.py``). The tests run in file order; the secrets test, last, checks every
run the module made. ``DPO_FAULTS_RUNS_PER_CHANNEL=2`` makes the load test quick while working on this file.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy
from hypothesis import HealthCheck, assume, given, settings

from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.api.client import AirflowAPI
from dpo_lib.settings import path_safe
from dpo_lib.spec import SPEC_FILE
from tests.faults.airflow_retry import describe
from tests.faults.planted_secrets import CREDENTIALS, MARKER
from tests.faults.processes import component_pid, newest_step, trainers_of, wait_for
from tests.faults.webhook_bodies import bodies, check_refusal, expected_status
from tests.support.airflow_services import make_workdir, max_overlap, running_services, state, tail
from tests.support.postgres_server import postgres_server

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DAG_ID = "dpo_finetune"
GPU_SLOTS = 2
# Runs through each of the REST API and the webhook in the load test (DPO_FAULTS_RUNS_PER_CHANNEL to change it).
N_REST = N_WEBHOOK = int(os.environ.get("DPO_FAULTS_RUNS_PER_CHANNEL") or 10)
TASKS = ("validate", "stage", "train", "evaluate", "publish", "compare", "promote", "cleanup")
RESUMED = re.compile(r"resuming from checkpoint (\S+)/step-(\d+) at step (\d+)")

SECRETS = {**CREDENTIALS, "AIRFLOW_VAR_DPO_SECRET": MARKER}
# A request that tries to pull them in: OmegaConf interpolation, and Jinja that would render if Airflow templated
# what a request carries. No override takes free text, so it rides in the dataset's path (a folder of the work
# folder, created by the load fixture): it reaches the run spec, the validate and stage logs and stage's XCom.
PULLS_SECRETS = "${oc.env:FIREBASE_CREDENTIALS_JSON} {{ conn.dpo_firebase.password }} {{ var.value.dpo_secret }}"
PULLING_DATASET = f"data/pulls {PULLS_SECRETS}/small.json"
QUICK = {
    "max_steps": 1, "warmup_steps": 0, "batch_size": 4, "log_every": 1, "eval_every": 0, "checkpoint_every": 0,
    "n_eval_examples": 4, "eval_batch_size": 4,
}  # fmt: skip
# Runs long enough to be in flight across a restart, checkpointing every step: 100 steps outlast the scheduler's
# kill (the check is that the next try resumes exactly where the killed one stopped), 200 the api-server's restart.
LONG = {
    "warmup_steps": 0, "batch_size": 4, "log_every": 1, "eval_every": 0, "checkpoint_every": 1,
    "keep_checkpoints": 2, "n_eval_examples": 8, "eval_batch_size": 8,
}  # fmt: skip


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("service-faults")
    work = make_workdir(root / "work")
    with postgres_server() as database:  # Debian's postgresql, installed by tests/provision-host.sh
        extra = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.url,
            "DPO_GPU_SLOTS": str(GPU_SLOTS),
            "DPO_TRAIN_RETRY_DELAY_S": "1",  # a failed train is retried at once (dag_factory.task_options)
            # The tasks a dead scheduler ran are reset by the next one once the dead one's heartbeat is
            # [scheduler] scheduler_health_check_threshold (30 s) old; it looks every 300 s by default.
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            # Airflow keeps the rendered fields of a task's newest 30 runs; the secrets test reads every run's.
            "AIRFLOW__CORE__NUM_DAG_RUNS_TO_RETAIN_RENDERED_FIELDS": "0",
            **SECRETS,
        }
        with running_services(root, work, extra) as running:
            yield running


# ---- helpers ----------------------------------------------------------------------------------------------------


def http_call(method: str, url: str, *, token: str | None = None, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def trigger_webhook(url: str, token: str, conf: dict) -> tuple[str, int]:
    """POST the request to the webhook; retried on 503 (the database busy) as its answer asks. (run id, 503s)."""
    busy = 0
    while True:
        status, answer = http_call("POST", f"{url}/dpo/trigger-finetune", token=token, body=json.dumps(conf).encode())
        if status != 503 or busy >= 10:
            assert status == 202, (status, answer)
            return answer["dag_run_id"], busy
        busy += 1
        time.sleep(5)


def wait_all(api: AirflowAPI, run_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Poll (one request for all of them: the api-server shares the two cores) until every run has finished;
    returns each run as it ended."""
    runs_api = api._client_module.DagRunApi(api.api_client)
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {run.dag_run_id: run for run in runs_api.get_dag_runs(DAG_ID, limit=1000).dag_runs}
        finals = {run_id: runs[run_id] for run_id in run_ids if state(runs[run_id]) in ("success", "failed")}
        if len(finals) == len(run_ids):
            return finals
        assert time.monotonic() < deadline, f"{len(run_ids) - len(finals)} runs unfinished after {timeout_s:.0f}s"
        time.sleep(5)


def wait_until(condition: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    assert wait_for(condition, timeout, interval=0.1), message()


def api_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def files_under(*roots: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}


# ---- authentication ---------------------------------------------------------------------------------------------


def forged(token: str, secret: str, **claims: Any) -> str:
    """``token`` with some claims changed, signed again with ``secret``."""
    header = jwt.get_unverified_header(token)
    payload = {**jwt.decode(token, options={"verify_signature": False}), **claims}
    return jwt.encode(
        payload, secret, algorithm=header["alg"], headers={"kid": header["kid"]} if "kid" in header else None
    )


def test_every_dpo_route_but_the_health_check_refuses_callers_without_a_valid_token(services):
    from dpo_lib.api.webhook import create_app

    token = services.token()
    secret = AirflowHome(services.home).secrets()["jwt_secret"]
    now = int(time.time())
    invalid = {
        "none": None,
        "garbage": "not-a-jwt",
        "tampered": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "expired": forged(token, secret, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "another secret": forged(token, "x" * 64),
    }
    routes = {(route.path, method) for route in create_app().routes for method in route.methods}
    # Each route but the health check wants a valid token; an example path of each.
    callers_need_a_token = {
        ("/trigger-finetune", "POST"): "/trigger-finetune",
        ("/runs", "GET"): "/runs",
        ("/runs/{dag_id}/{run_id:path}", "GET"): f"/runs/{DAG_ID}/manual__2026-01-01",
    }
    assert routes == {("/health", "GET"), *callers_need_a_token}, "a new /dpo route: say here who may call it"
    for (_, method), path in callers_need_a_token.items():
        body = b'{"exp_name": "x"}' if method == "POST" else None
        for name, bad in invalid.items():
            status, answer = http_call(method, f"{services.url}/dpo{path}", token=bad, body=body)
            assert status == 401, (path, name, status, answer)
    # With a valid token the same call gets past authentication (here to the request's own check).
    status, answer = http_call("POST", f"{services.url}/dpo/trigger-finetune", token=token, body=b'{"exp_name": 1}')
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "exp_name"]

    # The health check is for load balancers: no token needed, and without one it gives no details.
    status, public = http_call("GET", f"{services.url}/dpo/health")
    assert status in (200, 503)
    assert set(public) == {"status", "unhealthy", "components"}
    assert all(component == {"status": component["status"]} for component in public["components"].values())
    status, detailed = http_call("GET", f"{services.url}/dpo/health", token=token)
    assert detailed["components"]["storage"]["uri"]  # details for a caller with a token
    for name, bad in invalid.items():
        if bad is not None:
            assert http_call("GET", f"{services.url}/dpo/health", token=bad)[0] == 401, name

    # No documentation pages or other paths under /dpo; Airflow's own API wants a token too.
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/nothing"):
        assert http_call("GET", f"{services.url}/dpo{path}")[0] == 404, path
    assert http_call("GET", f"{services.url}/api/v2/dags")[0] == 401


# ---- the webhook, fuzzed live -----------------------------------------------------------------------------------

LIVE_FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def test_the_live_webhook_refuses_hostile_bodies_with_a_4xx_naming_the_field_and_leaves_nothing(services):
    """The bodies of ``test_webhook_fuzz.py`` (only those to refuse: a valid one would start a run) sent to the
    real api-server, plus bodies of megabytes with and without a Content-Length."""
    api, token = services.api(), services.token()
    root = Path(services.env["DPO_WORKDIR"])  # the local storage root of these services
    runs_before = api.dag_runs(DAG_ID)
    files_before = files_under(services.staging_root, services.artifacts_root)
    statuses: list[int] = []

    @LIVE_FUZZ
    @given(bodies())
    def fuzz(body: bytes) -> None:
        expected = expected_status(body, root)
        assume(expected != 202)
        status, answer = http_call("POST", f"{services.url}/dpo/trigger-finetune", token=token, body=body)
        assert status == expected, (status, expected, str(answer)[:500], body[:300])
        check_refusal(status, answer, body, root)
        statuses.append(status)

    fuzz()
    big = b'{"exp_name": "' + b"x" * 10_000_000 + b'"}'
    for chunked in (False, True):  # chunked: no Content-Length, so it is cut off while streaming
        statuses.append(post_raw(services.url, token, big, chunked=chunked))
        assert statuses[-1] == 413, chunked
    assert api_answers(services.url)

    assert api.dag_runs(DAG_ID) == runs_before, "a refused request created a run"
    assert files_under(services.staging_root, services.artifacts_root) == files_before, "a refused request wrote"
    assert set(statuses) >= {413, 422} and len(statuses) >= 30, statuses


def post_raw(url: str, token: str, body: bytes, *, chunked: bool) -> int | None:
    """POST ``body`` to the webhook; the status, even when the server answers and closes before the upload ends."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        try:
            if chunked:
                chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
                connection.request("POST", "/dpo/trigger-finetune", body=chunks, headers=headers, encode_chunked=True)
            else:
                connection.request("POST", "/dpo/trigger-finetune", body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer may be waiting all the same
        try:
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
    finally:
        connection.close()


# ---- twenty runs at once -----------------------------------------------------------------------------------------


@dataclass
class Load:
    rest: list[str]
    webhook: list[str]
    finals: dict[str, Any]
    seconds: float
    busy: int  # webhook answers 503 (database busy), retried


@pytest.fixture(scope="module")
def load(services) -> Load:
    """Ten runs triggered through the REST API and ten through the webhook, all at once, waited for.

    Files that belong to no run are planted where the runs write, to show that cleanup removes only its own.
    """
    for planted in (services.staging_root / DAG_ID / "not-a-run", services.artifacts_root / "load-rest" / "not-a-run"):
        planted.mkdir(parents=True, exist_ok=True)
        (planted / "keep.json").write_text("{}")
    pulling = services.work / PULLING_DATASET
    pulling.parent.mkdir(parents=True, exist_ok=True)
    pulling.write_bytes((services.work / "data" / "small.json").read_bytes())
    api, token = services.api(), services.token()
    rest_confs = [{"dataset_uri": PULLING_DATASET, "exp_name": "load-rest", "overrides": QUICK}] * N_REST
    hook_confs = [{"dataset_uri": PULLING_DATASET, "exp_name": "load-hook", "overrides": QUICK}] * N_WEBHOOK
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=N_REST + N_WEBHOOK) as pool:
        rest = [pool.submit(api.trigger, DAG_ID, conf) for conf in rest_confs]
        hook = [pool.submit(trigger_webhook, services.url, token, conf) for conf in hook_confs]
        rest_ids = [future.result().dag_run_id for future in rest]
        hook_answers = [future.result() for future in hook]
    hook_ids = [run_id for run_id, _ in hook_answers]
    finals = wait_all(api, rest_ids + hook_ids, timeout_s=1500)
    seconds = time.monotonic() - started
    print(f"\n{N_REST + N_WEBHOOK} runs: {seconds:.0f} s from the first trigger to the last run's end")
    return Load(rest_ids, hook_ids, finals, seconds, sum(busy for _, busy in hook_answers))


def test_twenty_runs_at_once_all_succeed_within_the_gpu_pool_each_in_its_own_folders(services, load):
    """Ten through the REST API and ten through the webhook (the ``load`` fixture), on a pool of two GPUs."""
    api = services.api()
    run_ids = load.rest + load.webhook
    assert len(set(run_ids)) == N_REST + N_WEBHOOK
    failed = [run_id for run_id, run in load.finals.items() if state(run) != "success"]
    assert not failed, describe(services, failed[0])

    intervals, durations, retried = [], [], {}
    for run_id in run_ids:
        tis = {ti.task_id: ti for ti in api.task_instances(DAG_ID, run_id)}
        assert {task: state(ti) for task, ti in tis.items()} == dict.fromkeys(TASKS, "success")
        for task, ti in tis.items():
            if ti.try_number > 1:  # allowed (retries are what they are for), but shown with the reason
                retried[f"{run_id} {task}"] = failure_lines(api.task_log(DAG_ID, run_id, task, 1))
        train = tis["train"]
        assert train.pool == "gpu"
        intervals.append((train.start_date, train.end_date))
        durations.append((load.finals[run_id].end_date - load.finals[run_id].start_date).total_seconds())

        # Its own staging folder and run folder, decided once by validate (its spec) and used by every task.
        exp_name = "load-rest" if run_id in load.rest else "load-hook"
        staging_dir = services.staging_root / DAG_ID / path_safe(run_id)
        run_dir = services.artifacts_root / exp_name / path_safe(run_id)
        assert api.xcom(DAG_ID, run_id, "validate") == str(staging_dir / SPEC_FILE)
        manifest = api.xcom(DAG_ID, run_id, "stage")
        assert manifest["run_id"] == run_id and manifest["dataset_uri"] == PULLING_DATASET
        assert Path(manifest["staged_path"]).parent == staging_dir
        config = json.loads((run_dir / "config.json").read_text())  # what the trainer itself read (the spec's)
        assert config["exp_name"] == exp_name and config["run_dir"] == str(run_dir)
        staged = config["datasets"]["from_uri"]
        assert staged["uri"] == manifest["staged_path"] and staged["sha256"] == manifest["sha256"]
        assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == QUICK["max_steps"]
        # Cleanup removed its own staging folder, and named no other.
        cleanup_log = api.task_log(DAG_ID, run_id, "cleanup", 1)
        assert f"removed {staging_dir}" in cleanup_log
        assert not (set(re.findall(r"removed (\S+)", cleanup_log)) - {str(staging_dir)}), cleanup_log
        assert not staging_dir.exists()

    peak = max_overlap(intervals)
    assert peak <= GPU_SLOTS, f"{peak} train tasks ran at once in a pool of {GPU_SLOTS}"
    # Nothing but what belongs to no run is left in staging, and that is untouched.
    assert [p.name for p in (services.staging_root / DAG_ID).iterdir()] == ["not-a-run"]
    assert (services.staging_root / DAG_ID / "not-a-run" / "keep.json").read_text() == "{}"
    assert (services.artifacts_root / "load-rest" / "not-a-run" / "keep.json").read_text() == "{}"
    assert len(list(services.artifacts_root.glob("load-rest/manual__*/metrics.json"))) == N_REST
    assert len(list(services.artifacts_root.glob("load-hook/manual__*/metrics.json"))) == N_WEBHOOK
    # The runs really went through PostgreSQL: their rows are there, and no SQLite file was made.
    assert dag_run_states(services, run_ids) == dict.fromkeys(run_ids, "success")
    assert not (services.home / "airflow.db").exists()
    durations.sort()
    print(
        f"\n{len(run_ids)} runs in {load.seconds:.0f} s; per run {durations[0]:.0f}-{durations[-1]:.0f} s "
        f"(median {durations[len(durations) // 2]:.0f} s); peak train overlap {peak}; webhook 503s retried {load.busy}; "
        f"tasks retried {len(retried)}" + "".join(f"\n  {task}: {why}" for task, why in retried.items())
    )


def dag_run_states(services, run_ids: list[str]) -> dict[str, str]:
    """The runs' states as the metadata database itself holds them."""
    engine = sqlalchemy.create_engine(services.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT run_id, state FROM dag_run WHERE dag_id = :dag_id")
            rows = connection.execute(query, {"dag_id": DAG_ID}).all()
    finally:
        engine.dispose()
    return {run_id: state for run_id, state in rows if run_id in run_ids}


def failure_lines(log: str) -> str:
    """The lines of a failed try's log that say why."""
    return " | ".join(line.strip() for line in log.splitlines() if re.search(r"Error|error|exited with|failed", line))[
        -1500:
    ]


# ---- restarts ---------------------------------------------------------------------------------------------------


def start_long_run(services, exp_name: str, steps: int) -> tuple[str, Path, Path]:
    """The run's id, its run folder, and its run spec (which its trainer's command line names)."""
    conf = {"dataset_uri": "data/dataset.json", "exp_name": exp_name, "overrides": {**LONG, "max_steps": steps}}
    run_id = services.api().trigger(DAG_ID, conf).dag_run_id
    run_key = path_safe(run_id)
    return run_id, services.artifacts_root / exp_name / run_key, services.staging_root / DAG_ID / run_key / SPEC_FILE


def test_scheduler_killed_mid_training_the_trainer_stops_and_the_next_try_resumes_from_its_checkpoint(services):
    """SIGKILL to the scheduler: its LocalExecutor and the supervisors of the tasks it ran die with it; the launcher
    starts a new scheduler, which resets the orphaned train task, and the new try resumes from the newest checkpoint.

    Before the fix the trainer outlived its task process (Airflow starts it in a session of its own), trained on
    unseen (its log ends at the kill) and finished the run's steps while Airflow counted the task as gone: on a real
    run the retry trains in the same folder at the same time, and the GPU pool is short of the GPU it still holds.
    """
    api, steps = services.api(), 100
    run_id, run_dir, spec_path = start_long_run(services, "scheduler-killed", steps)
    wait_until(
        lambda: newest_step(run_dir) >= 2, 600, lambda: "train never checkpointed\n" + describe(services, run_id)
    )
    assert len(trainers_of(spec_path)) == 1
    scheduler = component_pid(services.launcher_pid, "scheduler")
    os.kill(scheduler, signal.SIGKILL)
    killed = time.monotonic()

    # The trainer goes with the task process that started it (DPO_EXIT_WITH_PARENT, set by the local runner).
    wait_until(lambda: not trainers_of(spec_path), 15, lambda: f"a trainer outlived its task: {trainers_of(spec_path)}")
    trainer_gone_s = time.monotonic() - killed
    step_at_kill = newest_step(run_dir)
    wait_until(
        lambda: component_pid(services.launcher_pid, "scheduler") not in (None, scheduler),
        60,
        lambda: tail(services.log),
    )

    final = api.wait(DAG_ID, run_id, timeout_s=900, poll_s=2)
    recovered_s = time.monotonic() - killed
    assert state(final) == "success", describe(services, run_id)
    tis = {ti.task_id: ti for ti in api.task_instances(DAG_ID, run_id)}
    assert tis["train"].try_number == 2, describe(services, run_id)  # the orphaned try was reset: a second try
    assert all(state(ti) == "success" for ti in tis.values())
    retry_log = api.task_log(DAG_ID, run_id, "train", 2)
    resumed = RESUMED.search(retry_log)
    assert resumed, retry_log[-3000:]
    # It resumed where the killed try stopped: nothing trained on after the kill.
    assert int(resumed.group(3)) == step_at_kill < steps, (resumed.group(0), step_at_kill)
    assert f"step {steps}/{steps}" in retry_log
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == steps
    assert "== scheduler exited (-9): restarting it" in tail(services.log, 10**8)
    print(
        f"\nscheduler killed at step {step_at_kill}: trainer gone after {trainer_gone_s:.1f} s, "
        f"try 2 resumed at step {resumed.group(3)}, run success {recovered_s:.0f} s after the kill"
    )


def test_api_server_killed_mid_training_the_run_carries_on_and_old_tokens_still_work(services):
    """SIGKILL to the api-server (which also serves the execution API the tasks report to): the launcher starts
    it again; the running train task rides out the outage (its heartbeats are retried) and the run succeeds."""
    token, steps = services.token(), 200  # the token is issued before the restart
    run_id, run_dir, spec_path = start_long_run(services, "api-server-killed", steps)
    wait_until(
        lambda: newest_step(run_dir) >= 1, 600, lambda: "train never checkpointed\n" + describe(services, run_id)
    )
    api_server = component_pid(services.launcher_pid, "api-server")
    os.kill(api_server, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not api_answers(services.url), 10, lambda: "the api-server still answers")
    wait_until(
        lambda: api_answers(services.url), 180, lambda: "the api-server did not come back\n" + tail(services.log)
    )
    outage_s = time.monotonic() - killed
    still_training = bool(trainers_of(spec_path)) and newest_step(run_dir) < steps
    assert still_training, "train ended before the api-server was back: the test did not span the outage"

    api = AirflowAPI(services.url, token)  # the old token: every api-server signs with the same secret
    final = api.wait(DAG_ID, run_id, timeout_s=900, poll_s=2)
    assert state(final) == "success", describe(services, run_id)
    tis = {ti.task_id: ti for ti in api.task_instances(DAG_ID, run_id)}
    assert all(state(ti) == "success" for ti in tis.values())
    tries = tis["train"].try_number
    if tries > 1:  # the outage cost the try: the next one must have resumed
        assert RESUMED.search(api.task_log(DAG_ID, run_id, "train", tries)), describe(services, run_id)
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == steps
    log = tail(services.log, 10**8)
    assert "== api-server exited (-9): restarting it" in log
    failed_heartbeats = log.count("Failed to send heartbeat")
    print(f"\napi-server down {outage_s:.0f} s; train tries {tries}; failed heartbeats {failed_heartbeats}")


# ---- planted secrets --------------------------------------------------------------------------------------------


def test_planted_secrets_appear_in_no_task_log_rendered_template_xcom_or_file(services, load):
    """Runs last: every run this module made (the twenty, the restarted ones), every task, every try."""
    # The secrets really are in the services' environment: the launcher's, and the scheduler's, which every task
    # process inherits. (The api-server's /proc environ reads as NULs: setting its process title overwrote it.)
    for pid in (services.launcher_pid, component_pid(services.launcher_pid, "scheduler")):
        assert MARKER.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    api = services.api()
    c = api._client_module
    xcom_api = c.XComApi(api.api_client)
    run_ids = api.dag_runs(DAG_ID)
    assert set(load.rest + load.webhook) <= set(run_ids)
    logs = rendered = literal = xcoms = 0
    for run_id in run_ids:
        for ti in api.task_instances(DAG_ID, run_id):
            fields = json.dumps(ti.rendered_fields, default=str)
            assert MARKER not in fields, (run_id, ti.task_id)
            rendered += bool(ti.rendered_fields)
            if ti.task_id == "train":  # the command names the run spec; nothing of the request is templated into it
                assert "--spec" in fields and "conn.dpo_firebase" not in fields, (run_id, fields[:1000])
            for try_number in range(1, (ti.try_number or 0) + 1):
                assert MARKER not in api.task_log(DAG_ID, run_id, ti.task_id, try_number), (run_id, ti.task_id)
                logs += 1
        for entry in xcom_api.get_xcom_entries(DAG_ID, run_id, "~", limit=100).xcom_entries:
            value = json.dumps(api.xcom(DAG_ID, run_id, entry.task_id, entry.key), default=str)
            assert MARKER not in value, (run_id, entry.task_id, entry.key)
            if (entry.task_id, entry.key) == ("stage", "return_value") and run_id in load.finals:
                literal += PULLS_SECRETS in json.loads(value)["dataset_uri"]  # the request's text, not the values
            xcoms += 1
    roots = (services.artifacts_root, services.staging_root, services.home / "logs")
    holding = [str(path) for path in files_under(*roots) if MARKER.encode() in path.read_bytes()]
    assert holding == []
    assert MARKER not in services.log.read_text(errors="replace")  # every component's own output
    assert logs >= 5 * len(run_ids) and xcoms >= 3 * len(load.finals)
    assert literal == len(load.finals), literal  # as text, in each load run's staging manifest
    assert rendered >= 5 * len(run_ids) - 5, rendered  # (cleanup, a teardown, may render nothing)
    print(f"\n{len(run_ids)} runs: {logs} task logs, {rendered} task instances' rendered fields, {xcoms} XComs, "
          f"{len(files_under(*roots))} files: no secret")  # fmt: skip
