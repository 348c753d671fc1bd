"""The report's curves as inline SVG, drawn by matplotlib (Agg, no display, no font or script from anywhere).

Text is drawn as paths (``svg.fonttype = "path"``), so the page looks the same offline on any browser,
and each figure's ids are salted with its metric, so several SVGs can share one HTML page.
"""

from __future__ import annotations

import io
import threading

# One figure at a time: matplotlib's rcParams and font cache are process-wide, and the report's
# handlers run in a thread pool.
_LOCK = threading.Lock()
STYLE = {"train": ("#1f77b4", "-"), "eval": ("#d62728", "-")}


def curve_svg(title: str, by_split: dict[str, list[tuple[float, float]]], *, salt: str) -> str:
    """An SVG plot of one metric over steps, one line per split (train, eval); the ``<svg>`` element alone."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with _LOCK, matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": salt, "font.size": 9}):
        figure = Figure(figsize=(4.6, 2.9), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        for split, points in sorted(by_split.items()):
            color, line = STYLE.get(split, ("#555555", "--"))
            steps, values = [p[0] for p in points], [p[1] for p in points]
            axes.plot(steps, values, line, color=color, label=split, marker="o" if len(points) < 30 else None,
                      markersize=3, linewidth=1.5)  # fmt: skip
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
