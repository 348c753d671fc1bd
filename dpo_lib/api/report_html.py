"""The report's HTML: one self-contained page per run, and the runs list. Jinja2 with autoescape, inline CSS,
inline SVG plots, no script and nothing fetched from elsewhere (the page's Content-Security-Policy says so)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'"

_STYLE = """
:root { color-scheme: light dark; --fg: #1a1a1a; --muted: #666; --line: #d9d9d9; --bg: #fff; --card: #f7f7f8; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8e8; --muted: #a0a0a0; --line: #3a3a3a; --bg: #161616;
  --card: #1f1f1f; } svg { background: #fff; border-radius: 4px; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid
  var(--line); padding-bottom: 4px; }
.muted { color: var(--muted); } code, pre { font: 12px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; }
table { border-collapse: collapse; margin: 4px 0; } th, td { text-align: left; padding: 4px 10px 4px 0;
  border-bottom: 1px solid var(--line); vertical-align: top; } th { font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.warn { color: #664d03; background: #fff3cd; }
.state { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; background: var(--card);
  border: 1px solid var(--line); }
.state.success, .state.promoted, .state.first { background: #d8f5dc; color: #11501d; }
.state.failed, .state.upstream_failed { background: #fde0e0; color: #7a1010; }
.state.running, .state.queued, .state.up_for_retry { background: #fff3cd; color: #664d03; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure.plot { margin: 0; } figure.plot svg { display: block;
  width: 460px; height: auto; max-width: 100%; }
.note { background: var(--card); border: 1px solid var(--line); padding: 6px 10px; border-radius: 4px; }
.samples td { width: 25%; } .samples pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
details pre { background: var(--card); padding: 8px; overflow: auto; max-height: 480px; }
a { color: #1565c0; }
#runs { font-size: 13px; } #runs td { white-space: nowrap; } #runs td:first-child { white-space: normal;
  word-break: break-all; max-width: 22em; }
"""

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ style }}</style></head>
<body>{% block body %}{% endblock %}</body></html>
"""

_RUN = """{% extends "layout" %}{% block body %}
<h1>DPO run report</h1>
<div class="muted"><code>{{ dag_id }}</code> · <code>{{ run_id }}</code>
{% if state or not snapshot %} · run <span class="state {{ state }}" id="run-state">{{ state or "unknown" }}</span>{% endif %}
 {% if exp_name %} · experiment <code>{{ exp_name }}</code>{% endif %}
 · <a href="{{ runs_url }}">all runs</a>{% if not framed %} · <a href="{{ airflow_url }}">open in Airflow</a>{% endif %}</div>
{% if not is_dpo_dag %}<p class="note">{{ dag_id }} is not a DPO fine-tune DAG: there is no report for its runs.</p>
{% else %}
{% if missing %}<p class="note" id="missing">{{ "Not written (the run failed)" if state == "failed" else "Not there yet" }}: {% for name, writer in missing %}<code>{{ name }}</code>
 ({{ writer }}){{ ", " if not loop.last }}{% endfor %}.
{% if not run_dir %}The run folder has not been created yet: <code>validate</code> creates it.{% endif %}</p>{% endif %}

<h2>Tasks</h2>
{% if snapshot %}<p class="note" id="snapshot">This copy of the report was made by <code>{{ snapshot_by }}</code> at
{{ snapshot }}{% if tasks %}, with the task states as they stood then{% endif %}. The live report is on
<a href="{{ airflow_url }}">the run's page in Airflow</a>.</p>{% endif %}
{% if tasks %}<table id="tasks"><tr><th>task</th><th>state</th><th>try</th><th>started</th><th>duration</th></tr>
{% for t in tasks %}<tr><td><code>{{ t.task_id }}</code></td><td><span class="state {{ t.state }}">{{ t.state or "none" }}</span></td>
<td class="num">{{ t.try_number if t.try_number is not none else "" }}</td><td>{{ t.start or "" }}</td><td class="num">{{ t.duration or "" }}</td></tr>{% endfor %}
</table>{% elif not snapshot %}<p class="muted">No task instances yet.</p>{% endif %}

<h2>Training curves</h2>
{% if plots %}<div class="plots">{% for p in plots %}<figure class="plot" data-metric="{{ p.metric }}"
 aria-label="{{ p.title }} over steps">{{ p.svg | safe }}</figure>{% endfor %}</div>
{% else %}<p class="muted">No logged steps yet (<code>history.jsonl</code>).</p>{% endif %}

<h2>Evaluation (held-out pairs)</h2>
{% if eval_rows %}<table id="eval"><tr><th>metric</th>{% for c in eval_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, values in eval_rows %}<tr><td><code>{{ name }}</code></td>{% for v in values %}
<td class="num">{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="muted">No evaluation yet (<code>metrics.json</code>'s eval part is written by evaluate).</p>{% endif %}

<h2>Promotion</h2>
{% if promotion %}<p id="promotion">Decision: <span class="state {{ promotion.decision }}">{{ promotion.decision or "?" }}</span>
{% if promotion.reason %}: {{ promotion.reason }}{% endif %}</p>
<table>{% for key in ("metric", "min_delta", "challenger", "champion") if key in promotion %}
<tr><th>{{ key }}</th><td>{{ model_value(promotion[key]) }}</td></tr>{% endfor %}
{% for key, value in promotion.items() if key not in ("decision", "reason", "metric", "min_delta", "challenger",
 "champion", "versions") %}<tr><th>{{ key }}</th><td>{{ show(value) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No promotion decision (<code>promotion.json</code>) yet.</p>{% endif %}

<h2>Dataset</h2>
{% if manifest %}<table id="dataset"><tr><th>URI</th><td><code>{{ manifest.dataset_uri }}</code></td></tr>
<tr><th>sha256</th><td><code>{{ manifest.sha256 }}</code></td></tr>
<tr><th>format</th><td>{{ manifest.format }}</td></tr><tr><th>size</th><td>{{ manifest.size }} bytes</td></tr>
<tr><th>records</th><td>{{ manifest.record_count }}{% if stats %} ({{ stats.valid_count }} valid, {{ stats.invalid_count }}
 invalid, {{ stats.duplicate_count }} duplicates){% endif %}; {{ manifest.warning_count }} warnings</td></tr>
{% if truncation %}<tr><th>truncation</th><td id="truncation"{% if truncation.truncated_pairs %} class="warn"{% endif %}>
{{ truncation.summary() }}</td></tr>{% endif %}</table>
{% if stats and stats.lengths %}<table><tr><th>length (characters)</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>
{% for field, l in stats.lengths.items() %}<tr><td>{{ field }}</td><td class="num">{{ fmt(l.p50) }}</td>
<td class="num">{{ fmt(l.p90) }}</td><td class="num">{{ fmt(l.p99) }}</td><td class="num">{{ l.max }}</td></tr>{% endfor %}</table>{% endif %}
{% if truncation and truncation.lengths %}<table id="token-lengths"><tr><th>length (tokens, before truncation)</th>
<th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>{% for field, l in truncation.lengths.items() %}<tr><td>{{ field }}</td>
<td class="num">{{ fmt(l.p50) }}</td><td class="num">{{ fmt(l.p90) }}</td><td class="num">{{ fmt(l.p99) }}</td>
<td class="num">{{ l.max }}</td></tr>{% endfor %}</table>{% endif %}
{% elif request.dataset_uri %}<p class="muted"><code>{{ request.dataset_uri }}</code>: not staged yet.</p>
{% else %}<p class="muted">Not staged yet.</p>{% endif %}

<h2>Model and tracking</h2>
<table id="links">
<tr><th>run folder</th><td>{% if run_dir %}<code>{{ run_dir }}</code>{% else %}not created yet{% endif %}</td></tr>
<tr><th>final model</th><td>{% if final_files %}<code>{{ run_dir }}/final/</code> ({{ final_files | length }} files{% if
 "README.md" in final_files %}, model card <code>README.md</code>{% endif %}){% else %}not saved yet{% endif %}</td></tr>
<tr><th>stored model</th><td>{% if stored_uri %}<code>{{ stored_uri }}</code>{% else %}not uploaded yet{% endif %}</td></tr>
<tr><th>registered model</th><td>{% if registered %}<code>{{ registered }}</code>{% else %}not registered yet{% endif %}</td></tr>
<tr><th>MLflow run</th><td>{% if mlflow_url %}<a href="{{ mlflow_url }}"{% if not framed %} target="_blank"{% endif %}
 rel="noopener noreferrer">{{ mlflow_url }}</a>
{% elif tracking %}run <code>{{ tracking.run_id }}</code> in experiment <code>{{ tracking.experiment_name or
 tracking.experiment_id }}</code> at <code>{{ tracking_store }}</code>{% else %}not tracked{% endif %}</td></tr></table>

<h2>Generations on held-out prompts</h2>
{% if samples %}<table class="samples" id="samples"><tr><th>prompt</th><th>reference</th><th>champion</th><th>policy</th></tr>
{% for s in samples %}<tr>{% for key in ("prompt", "reference", "champion", "policy") %}<td><pre>{{ show(s.get(key))
 if s.get(key) is not none else "—" }}</pre></td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="muted">No generations yet (<code>samples.json</code>).</p>{% endif %}

<h2>Resolved config</h2>
{% if config %}<details><summary><code>config.json</code></summary><pre>{{ pretty(config) }}</pre></details>
{% else %}<p class="muted">Not written yet (<code>config.json</code>, by train).</p>{% endif %}
{% if request %}<details><summary>The request (conf)</summary><pre>{{ pretty(request) }}</pre></details>{% endif %}
{% endif %}
{% endblock %}"""

_RUNS = """{% extends "layout" %}{% block body %}
<h1>DPO runs</h1>
<p class="muted">The {{ rows | length }} most recent runs of {{ dag_ids | join(" and ") }}, newest first.
Eval numbers are on held-out pairs; "ref. acc." is the reference model's own preference accuracy;
"truncated" is the share of pairs that lost tokens to <code>max_length</code>.</p>
{% if rows %}<table id="runs"><tr><th>run</th><th>DAG</th><th>state</th><th>started</th><th>experiment</th><th>model</th>
<th>loss fn</th><th>steps</th><th>train loss</th><th>eval loss</th><th>eval acc.</th><th>eval margin</th><th>ref. acc.</th>
<th>truncated</th><th>promotion</th><th>dataset</th></tr>
{% for r in rows %}<tr><td><a href="{{ r.report_url }}">{{ r.run_id }}</a></td><td><code>{{ r.dag_id }}</code></td>
<td><span class="state {{ r.state }}">{{ r.state }}</span></td><td>{{ r.start or "" }}</td><td>{{ r.exp_name or "" }}</td>
<td>{{ r.model or "" }}</td><td>{{ r.loss_name or "" }}</td><td class="num">{{ fmt(r.steps) }}</td>
<td class="num">{{ fmt(r.train_loss) }}</td><td class="num">{{ fmt(r.eval_loss) }}</td>
<td class="num">{{ fmt(r.eval_accuracy) }}</td><td class="num">{{ fmt(r.eval_margin) }}</td>
<td class="num">{{ fmt(r.reference_accuracy) }}</td>
<td class="num{% if r.truncated_share %} warn{% endif %}">{% if r.truncated_share is not none %}{{ "%.1f" | format(100 * r.truncated_share) }} %{% endif %}</td>
<td>{% if r.decision %}<span class="state {{ r.decision }}">{{ r.decision
 }}</span>{% endif %}</td><td>{% if r.dataset_sha256 %}<code title="{{ r.dataset_sha256 }}">{{ r.dataset_sha256[:10] }}</code>{% endif %}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">No runs yet.</p>{% endif %}
{% endblock %}"""

_MESSAGE = """{% extends "layout" %}{% block body %}<h1>{{ title }}</h1><p id="message">{{ text }}</p>
{% if link %}<p><a href="{{ link[1] }}">{{ link[0] }}</a></p>{% endif %}{% endblock %}"""


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.DictLoader({"layout": _LAYOUT, "run": _RUN, "runs": _RUNS, "message": _MESSAGE}),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.globals.update(fmt=fmt, show=show, pretty=pretty, model_value=model_value, style=_STYLE)
    return env


def render(template: str, **values: Any) -> str:
    return _environment().get_template(template).render(**values)


def fmt(value: Any) -> str:
    """A number for a table cell: integers as they are, others to four significant digits; blank if none."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e9):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def show(value: Any) -> str:
    """Any JSON value as short text (strings as they are)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return fmt(value)
    return json.dumps(value, sort_keys=True, default=str)


def model_value(value: Any) -> str:
    """A promotion.json entry: a number, ``null`` (no champion yet), or ``{"version", "value", ...}``."""
    if value is None:
        return "none yet"
    if isinstance(value, dict) and "value" in value:
        version = f"version {value['version']}: " if value.get("version") is not None else ""
        return f"{version}{fmt(value['value'])}"
    return show(value)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
