"""Email for a failed run and for each promotion: :class:`RunNotifier`, an Airflow notifier sending through
the Connection ``dpo_notify`` (SMTP). No connection means no email, silently; a failed send is a warning
and never fails a task; a message holds ids, numbers and links, never secrets (docs/results.md#notifications).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

NOTIFY_CONN_ID = "dpo_notify"
Event = Literal["failure", "promotion"]
PROMOTIONS = ("promoted", "first")  # promotion.json decisions that put a new model in place


class RunNotifier(BaseNotifier):
    """Emails ``event`` (a failed run, or a promotion) through the SMTP connection ``conn_id``, if it exists."""

    def __init__(self, event: Event, *, conn_id: str = NOTIFY_CONN_ID) -> None:
        super().__init__()
        if event not in ("failure", "promotion"):
            raise ValueError(f"event must be 'failure' or 'promotion', not {event!r}")
        self.event = event
        self.conn_id = conn_id

    def render_template_fields(self, context: Mapping[str, Any], jinja_env: Any = None) -> None:
        """Nothing to render (no template fields). Skipping it also spares ``airflow dags test`` a failed
        callback: there the run's DAG is a SerializedDAG, which has no template environment."""

    def notify(self, context: Mapping[str, Any]) -> None:
        connection = configured_connection(self.conn_id)
        if connection is None:
            log.info("no Airflow Connection %r: %s notifications are off", self.conn_id, self.event)
            return
        recipients = (connection.extra_dejson or {}).get("to")
        if not recipients:
            log.warning("the Airflow Connection %r names no recipients (extra 'to'): nothing sent", self.conn_id)
            return
        message = failure_message(context) if self.event == "failure" else promotion_message(context)
        if message is None:
            log.info("%s: not a promotion, nothing to notify", context.get("run_id"))
            return
        subject, lines, links = message
        try:
            send(self.conn_id, recipients, subject, lines, links)
        except Exception as exc:  # a notification never fails the task or the run it is about
            log.warning("could not send the %s notification through %r (%s)", self.event, self.conn_id,
                        type(exc).__name__)  # fmt: skip
            return
        log.info("sent the %s notification for %s through %r", self.event, context.get("run_id"), self.conn_id)


def configured_connection(conn_id: str) -> Any | None:
    """The Airflow Connection ``conn_id``, or None when it is not defined anywhere Airflow looks."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def send(conn_id: str, to: str | list[str], subject: str, lines: list[str], links: list[tuple[str, str]]) -> None:
    """One email through the SMTP provider's hook: the lines as paragraphs, then the links."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    body += "".join(f'<p>{html.escape(label)}: <a href="{html.escape(url)}">{html.escape(url)}</a></p>'
                    for label, url in links)  # fmt: skip
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=to, subject=subject, html_content=body)


def failure_message(context: Mapping[str, Any]) -> tuple[str, list[str], list[tuple[str, str]]]:
    """Subject, lines and links saying which run failed, at which task, and where to look."""
    dag_id, run_id = _dag_id(context), str(context.get("run_id") or "")
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", None)
    subject = f"[DPO] {dag_id} run {run_id} failed" + (f" at {task_id}" if task_id else "")
    lines = [f"The {dag_id} run {run_id} failed" + (f": task {task_id} failed." if task_id else ".")]
    if reason := context.get("reason"):
        lines.append(f"Airflow's reason: {reason}.")
    lines.append("The task's log in the Airflow UI says why; the report shows what the run got to.")
    return subject, lines, _links(dag_id, run_id, task_id)


def promotion_message(context: Mapping[str, Any]) -> tuple[str, list[str], list[tuple[str, str]]] | None:
    """Subject, lines and links of a promotion (from the run's ``promotion.json``); None when the run
    promoted nothing (the champion was kept, or there is no decision)."""
    from dpo_lib.api.report_data import read_run_folder
    from dpo_lib.orchestration.runs import run_dir_of

    dag_id, run_id = _dag_id(context), str(context.get("run_id") or "")
    promotion = read_run_folder(run_dir_of(dag_id, run_id)).promotion or {}
    decision = promotion.get("decision")
    if decision not in PROMOTIONS:
        return None
    versions = promotion.get("versions") if isinstance(promotion.get("versions"), dict) else {}
    name = _text(promotion.get("registered_model_name") or promotion.get("model_name") or "the model")
    version = versions.get("challenger", promotion.get("version"))
    model = f"{name} version {_text(version)}" if version is not None else name
    metric = _text(promotion.get("metric") or "the metric")
    challenger = _number(_value(promotion.get("challenger"), metric))
    champion_value = _number(_value(promotion.get("champion"), metric))
    if decision == "first":
        subject = f"[DPO] first model registered: {model}"
        lines = [f"The {dag_id} run {run_id} registered {model}: there was no champion yet ({metric} {challenger})."]
    else:
        subject = f"[DPO] new champion: {model}"
        lines = [f"The {dag_id} run {run_id} promoted {model}: {metric} {challenger} against the champion's "
                 f"{champion_value}."]  # fmt: skip
    if reason := promotion.get("reason"):
        lines.append(f"Why: {_text(reason)}")
    return subject, lines, _links(dag_id, run_id, None)


def airflow_base_url() -> str:
    """The Airflow UI's address as users reach it (``[api] base_url``), for links in messages and files."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def _links(dag_id: str, run_id: str, task_id: str | None) -> list[tuple[str, str]]:
    base = airflow_base_url()
    run = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    links = [("Report", f"{base}/dpo/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"), ("Run in Airflow", run)]
    if task_id:
        links.append(("Task log", f"{run}/tasks/{quote(task_id, safe='')}"))
    return links


def _dag_id(context: Mapping[str, Any]) -> str:
    dag = context.get("dag")
    return str(getattr(dag, "dag_id", None) or getattr(context.get("dag_run"), "dag_id", None) or "?")


def _value(entry: Any, metric: str) -> Any:
    """A model's value of ``metric`` in promotion.json: a number, or a dict holding it (or its ``metrics``)."""
    if isinstance(entry, dict):
        metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else entry
        return metrics.get(metric, entry.get("value"))
    return entry


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value:.4g}"


def _text(value: Any, limit: int = 300) -> str:
    return str(value)[:limit]
