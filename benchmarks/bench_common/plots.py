"""A benchmark's figures: panels side by side saved as one PNG, curves against the teacher's
score, grouped bars."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 120


@contextmanager
def figure(
    path: Path, panels: int = 1, size: tuple[float, float] = (8, 5), **subplots: Any
) -> Iterator[list[Axes]]:
    """``panels`` axes side by side; on leaving the block the figure is laid out, saved to
    ``path`` and closed (closed too when the block fails)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=size, squeeze=False, **subplots)
    try:
        yield list(axes[0])
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


@dataclass(frozen=True)
class Series:
    """One line of a panel, with an optional band (``low`` to ``high``: the spread over seeds)
    and an optional teacher score drawn dotted in its colour."""

    label: str | None
    xs: Sequence[float]
    ys: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    style: str = "-"
    color: str | None = None
    alpha: float = 1.0
    marker_size: float = 3
    teacher: float | None = None


def plot_curves(
    ax: Axes,
    series: Iterable[Series],
    *,
    xlabel: str,
    ylabel: str,
    teacher: float | None = None,
    fractions: Sequence[float] = (),
    title: str | None = None,
    legend: dict[str, Any] | None = None,
) -> None:
    """Draw ``series`` into ``ax``; ``teacher``: the teacher's score dashed in black, with
    ``fractions`` of it dotted in grey (targets such as 90%); ``legend``: ``ax.legend``'s
    arguments (default: small type)."""
    for s in series:
        (line,) = ax.plot(
            s.xs,
            s.ys,
            s.style,
            marker="o",
            ms=s.marker_size,
            color=s.color,
            alpha=s.alpha,
            label=s.label,
        )
        if s.low is not None and s.high is not None:
            ax.fill_between(s.xs, s.low, s.high, color=line.get_color(), alpha=0.15)
        if s.teacher is not None:
            ax.axhline(s.teacher, color=line.get_color(), ls=":", lw=1)
    if teacher is not None:
        ax.axhline(teacher, color="black", ls="--", lw=1, label="teacher")
        for fraction in fractions:
            ax.axhline(
                fraction * teacher,
                color="gray",
                ls=":",
                lw=1,
                label=f"{fraction:.0%} of the teacher",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**(legend or {"fontsize": 7}))


@dataclass(frozen=True)
class Bars:
    """One bar per category (with error bars when ``errors`` is given)."""

    label: str
    values: Sequence[float]
    errors: Sequence[float] | None = None
    alpha: float = 1.0


def plot_bars(
    ax: Axes,
    categories: Sequence[str],
    groups: Sequence[Bars],
    *,
    ylabel: str,
    title: str | None = None,
    rotation: float = 0,
    legend: bool = True,
) -> None:
    """``groups`` side by side over each category."""
    width = 0.8 / len(groups)
    positions = range(len(categories))
    for index, bars in enumerate(groups):
        offset = (index - (len(groups) - 1) / 2) * width
        ax.bar(
            [p + offset for p in positions],
            bars.values,
            width,
            yerr=bars.errors,
            capsize=3 if bars.errors is not None else 0,
            alpha=bars.alpha,
            label=bars.label,
        )
    ax.set_xticks(list(positions), categories, rotation=rotation, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=7)
