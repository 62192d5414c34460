"""Figures: exposure-bias ratios per step, generic curves, score against context length.

matplotlib is optional (``pip install memdlm[plot]``) and imported inside each
function; figures are drawn with the Agg canvas directly (no pyplot, no global
backend switch), so plotting works headless and leaves an interactive session alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def _figure(width: float = 6.4, height: float = 4.2):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'memdlm[plot]'") from err
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _nan(values: Sequence[float | None]) -> list[float]:
    """None (no value, e.g. a step with nothing masked) becomes a gap in the line."""
    return [math.nan if v is None else float(v) for v in values]


def _finish(ax, xlabel: str, ylabel: str, title: str | None, legend: bool) -> None:
    """Labels, optional title and legend, and a light grid: the same on every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def plot_curves(xs: Sequence[float], series: Mapping[str, Sequence[float | None]], path,
                xlabel: str, ylabel: str, title: str | None = None,
                styles: Mapping[str, dict] | None = None, hline: float | None = None) -> Path:
    """One line per entry of ``series`` (name -> y values over ``xs``); writes ``path``.

    ``styles`` maps a series name to extra ``Axes.plot`` keywords (``linestyle``,
    ``color``, ...); ``hline`` draws a dotted horizontal reference line.
    """
    fig, ax = _figure()
    for name, ys in series.items():
        if len(ys) != len(xs):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(xs)} x values")
        ax.plot(list(xs), _nan(ys), marker=".", label=name, **dict((styles or {}).get(name, {})))
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle=":", linewidth=1)
    _finish(ax, xlabel, ylabel, title, legend=bool(series))
    return _save(fig, path)


def plot_exposure_bias(results: Mapping[str, object], path, title: str | None = None,
                       random_order: bool = False) -> Path:
    """R_EB per denoising step for each run (paper Fig. 3), its controlled ratio dashed.

    ``results`` maps a run name to an :class:`~memdlm.eval.exposure_bias.ExposureBiasResult`
    or its ``to_dict()``. With ``random_order``, the random-order trajectory's R_EB
    is added dotted. Shaded bands are the bootstrap intervals when present.
    """
    fig, ax = _figure()
    colors = [f"C{i}" for i in range(10)]
    for i, (name, result) in enumerate(results.items()):
        d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        color = colors[i % len(colors)]
        lines = [("r_eb", "-", "R_EB"), ("r_ctrl", "--", "R_ctrl (same positions)")]
        if random_order:
            lines.append(("r_eb_random", ":", "R_EB (random order)"))
        for key, style, label in lines:
            ax.plot(d["step"], _nan(d[key]), linestyle=style, color=color, marker=".",
                    label=f"{name}: {label}")
            if f"{key}_ci" in d and key == "r_eb":
                lo, hi = zip(*d[f"{key}_ci"])
                ax.fill_between(d["step"], _nan(lo), _nan(hi), color=color, alpha=0.15, linewidth=0)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("denoising step (state before the step)")
    ax.set_ylabel("L_seq / L_static")
    ax.set_title(title or "Exposure-bias ratio per denoising step")
    if results:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _score_table(table) -> dict[str, dict[float, float]]:
    """``{run: {length: score}}`` from that mapping or from rows ``{"run", "length", "score"}``."""
    if isinstance(table, Mapping):
        return {str(run): {float(k): float(v) for k, v in scores.items()} for run, scores in table.items()}
    out: dict[str, dict[float, float]] = {}
    for i, row in enumerate(table):
        missing = {"run", "length", "score"} - set(row)
        if missing:
            raise ValueError(f"row {i} lacks {sorted(missing)} (has {sorted(row)})")
        out.setdefault(str(row["run"]), {})[float(row["length"])] = float(row["score"])
    return out


def plot_score_vs_length(table, path, ylabel: str = "score", title: str | None = None,
                         trained_length: int | None = None) -> Path:
    """Score against context length, one line per run; log2 length axis.

    ``table``: ``{run: {length: score}}`` or rows with ``run``, ``length`` and
    ``score``. ``trained_length`` marks the longest training length (extrapolation
    lies to its right).
    """
    runs = _score_table(table)
    fig, ax = _figure()
    lengths = sorted({n for scores in runs.values() for n in scores})
    for name, scores in runs.items():
        xs = sorted(scores)
        ax.plot(xs, [scores[x] for x in xs], marker="o", label=name)
    if lengths:
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{int(n)}" for n in lengths])
    if trained_length is not None:
        ax.axvline(trained_length, color="grey", linestyle=":", linewidth=1, label="trained length")
    _finish(ax, "context length (tokens)", ylabel, title, legend=bool(runs))
    return _save(fig, path)


def plot_panels(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float | None]]]], path,
                xlabel: str, title: str | None = None,
                bands: Mapping[str, tuple[float, float]] | None = None,
                groups: Callable[[str], tuple[str, str]] | None = None) -> Path:
    """One panel per entry of ``panels`` (panel y label -> {line name: (xs, ys)}), stacked,
    sharing the x axis; ``bands`` shades a (low, high) range on the panels it names.

    ``groups`` maps a line name to (colour group, style group), e.g. (arm, seed): each colour
    group gets one colour and each style group one line style, and the legend, beside the
    panels, lists each group once -- twenty lines of seven arms and three seeds stay readable
    where one legend entry per line would cover the plot."""
    fig, ax = _figure(6.4 + (2.4 if groups else 0), 2.4 * len(panels))
    fig.delaxes(ax)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    names = list(dict.fromkeys(name for lines in panels.values() for name in lines))
    looks = _group_looks(names, groups) if groups else {}
    for ax, (ylabel, lines) in zip(axes, panels.items()):
        for name, (xs, ys) in lines.items():
            ax.plot(list(xs), _nan(ys), marker=".", label=name, **looks.get(name, {}))
        if bands and ylabel in bands:
            ax.axhspan(*bands[ylabel], color="grey", alpha=0.15, lw=0)
        _finish(ax, "", ylabel, None, legend=ax is axes[0] and not groups)
    if groups:
        fig.legend(handles=_group_handles(names, groups, looks), loc="outside right center", fontsize="small")
    axes[-1].set_xlabel(xlabel)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


LINE_STYLES = ("-", "--", ":", "-.")


def _group_looks(names: Sequence[str], groups: Callable[[str], tuple[str, str]]) -> dict[str, dict]:
    """Line name -> colour and line style, from its (colour group, style group), in order of
    first appearance (matplotlib's default colour cycle, then the styles of LINE_STYLES)."""
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    colours = list(dict.fromkeys(groups(n)[0] for n in names))
    styles = list(dict.fromkeys(groups(n)[1] for n in names))
    return {n: {"color": cycle[colours.index(groups(n)[0]) % len(cycle)],
                "linestyle": LINE_STYLES[styles.index(groups(n)[1]) % len(LINE_STYLES)], "linewidth": 1.2}
            for n in names}


def _group_handles(names, groups, looks) -> list:
    """Legend entries: one per colour group (solid), then one per style group (grey)."""
    from matplotlib.lines import Line2D

    handles, seen = [], set()
    for n in names:
        colour, _ = groups(n)
        if colour not in seen:
            seen.add(colour)
            handles.append(Line2D([], [], color=looks[n]["color"], marker=".", label=colour))
    for i, style in enumerate(dict.fromkeys(groups(n)[1] for n in names)):
        handles.append(Line2D([], [], color="grey", linestyle=LINE_STYLES[i % len(LINE_STYLES)], label=style))
    return handles
