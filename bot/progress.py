"""Progress over sessions: the numbers behind /progress, and the chart as PNG bytes.

matplotlib is imported lazily (it is slow to import) and always with the Agg backend: the bot
runs on servers with no display.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Progress:
    scores: tuple[int, ...]
    last5: float | None  # average of the last five sessions
    prev5: float | None  # average of the five before those
    slope: float | None  # trend: points per session (least squares)

    @property
    def change(self) -> float | None:
        if self.last5 is None or self.prev5 is None:
            return None
        return self.last5 - self.prev5


def summarise(scores: Sequence[int]) -> Progress:
    scores = tuple(int(s) for s in scores)
    last5 = _mean(scores[-5:])
    prev5 = _mean(scores[-10:-5])
    return Progress(scores, last5, prev5, _slope(scores))


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _slope(values: Sequence[int]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mx = (n - 1) / 2
    my = sum(values) / n
    num = sum((i - mx) * (v - my) for i, v in enumerate(values))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


def chart_png(progress: Progress, title: str = "Your focus score") -> bytes:
    """Focus score per session with its trend line and the verdict bands; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    scores = progress.scores
    xs = list(range(1, len(scores) + 1))
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot()
    ax.axhspan(70, 100, color="#2e7d32", alpha=0.08, label="connector (70+)")
    ax.axhspan(0, 35, color="#c62828", alpha=0.06, label="pitcher (<35)")
    ax.plot(xs, scores, marker="o", color="#1565c0", label="focus score")
    if progress.slope is not None:
        mean_x = (len(scores) + 1) / 2
        mean_y = sum(scores) / len(scores)
        trend = [mean_y + progress.slope * (x - mean_x) for x in xs]
        ax.plot(xs, trend, linestyle="--", color="#555555", label="trend")
    if progress.last5 is not None:
        lo = max(1, len(scores) - 4)
        ax.hlines(progress.last5, lo, len(scores), colors="#ef6c00", label=f"last 5 avg {progress.last5:.0f}")
    if progress.prev5 is not None:
        hi = len(scores) - 5
        ax.hlines(progress.prev5, max(1, hi - 4), hi, colors="#8e24aa", label=f"previous 5 avg {progress.prev5:.0f}")
    ax.set_ylim(0, 100)
    ax.set_xlim(0.5, len(scores) + 0.5)
    ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)])
    ax.set_xlabel("session")
    ax.set_ylabel("focus score")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def roster_chart_png(rows: Sequence[tuple[str, float | None, int | None]], target: int | None = None) -> bytes:
    """Average and last focus score per trainee, side by side; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [name[:18] for name, _, _ in rows]
    averages = [avg or 0 for _, avg, _ in rows]
    lasts = [last or 0 for _, _, last in rows]
    fig = Figure(figsize=(max(5, 1.1 * len(rows) + 2), 4), dpi=110)
    ax = fig.add_subplot()
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], averages, width=0.4, label="average", color="#1565c0")
    ax.bar([x + 0.2 for x in xs], lasts, width=0.4, label="last", color="#ef6c00")
    ax.axhline(70, color="#2e7d32", linestyle="--", linewidth=1, label="connector (70)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("focus score")
    ax.set_title("Your trainees")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
