"""The champion gate's rule, on numbers alone: does the challenger beat the champion on the metric?

``rewards/accuracies`` is better higher, ``loss`` lower. The challenger is promoted when its gain (in the
better direction) is positive and at least ``min_delta``; a tie is no win. With no champion the challenger
is the first. A challenger whose value is not a number never wins; a champion whose value is not one
always loses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LOWER_IS_BETTER = {"loss"}

Verdict = Literal["promoted", "kept", "first"]


@dataclass(frozen=True)
class Decision:
    decision: Verdict
    reason: str


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def decide(metric: str, min_delta: float, challenger: float, champion: float | None) -> Decision:
    """The verdict on ``challenger``'s value of ``metric`` against ``champion``'s (None: there is no champion)."""
    if champion is None:
        return Decision("first", f"no champion yet: the first model becomes champion ({metric} {challenger:.4f})")
    if not math.isfinite(challenger):
        return Decision("kept", f"the challenger's {metric} is {challenger}: not a number, it cannot win")
    if not math.isfinite(champion):
        return Decision("promoted", f"the champion's {metric} is {champion}: any number beats it")
    gain = challenger - champion if higher_is_better(metric) else champion - challenger
    direction = "higher" if higher_is_better(metric) else "lower"
    compared = f"{metric} {challenger:.4f} against the champion's {champion:.4f} ({direction} is better)"
    if gain > 0 and gain >= min_delta - 1e-12:  # 0.85 - 0.80 is 0.04999... in floating point
        return Decision("promoted", f"{compared}: better by {gain:.4f}, at least min_delta {min_delta:g}")
    if gain > 0:
        return Decision("kept", f"{compared}: better by only {gain:.4f}, less than min_delta {min_delta:g}")
    return Decision("kept", f"{compared}: not better" + (" (a tie)" if gain == 0 else f" (worse by {-gain:.4f})"))
