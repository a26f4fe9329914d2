"""Learning curves for papers, from the per-epoch history in results.json (or W&B history).

One figure per (data, model) and x axis (epoch, wall-clock seconds since fit start, and the training
forward-pass equivalents where the history counts them: metric against compute), one line per
method (and per other setting that splits groups, e.g. the learning rate), the mean over seeds with
a band (min-max, or mean ± sample std). Gradient-alignment curves (align/cos/all, the cosine between
the rule's gradient estimate and backprop's) get their own figure when the history has them, and so does each
parameter group's (align/cos/<group>: per layer, e.g. an e-prop run's input, recurrent and readout weights).
Figures are a paper column wide (3.4 in) and saved as PNG (200 dpi) and PDF.
Diverged and failed runs are left out of the curves, as from the tables, and counted in the legend.

Curves that span decades (alignment cosines: about 1 for bp, 0.1 for fg_a, 0.002 for fg_w) get a log
y axis when their positive values span more than two decades (values <= 0 then drop below the axis);
otherwise the axis is linear. Curves that lie on top of each other stay visible: each method has its
own marker (open, staggered along the curve), each setting of a method its own line style, and
earlier curves are drawn wider and underneath the later ones. A figure of one method's settings alone
(K, noise, lr, budget) gives each setting its own colour and marker too.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from learnbench.tools.report.grouping import Group, group_records, grouping_keys  # noqa: E402

COLUMN_WIDTH_IN = 3.4
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by most venues
    "savefig.dpi": 200,
}
ALIGNMENT_KEY = "align/cos/all"
LABELS = {
    "val/acc": "validation accuracy",
    "val/loss": "validation loss",
    "val/mse": "validation MSE",
    "train/loss": "training loss",
    ALIGNMENT_KEY: "cosine to backprop gradient",
    "epoch": "epoch",
    "time": "wall-clock time (s)",
    "train_forward_equivalents": "training forward-pass equivalents",
}
COMPUTE_AXIS = "train_forward_equivalents"  # the history's running total of work (learnbench.callbacks.ComputeMeter)
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">"]
MAX_MARKERS = 12  # markers per curve; longer curves mark every k-th point, staggered between curves
LOG_SCALE_DECADES = 2  # a log y axis when the plotted positive values span more than this


def _slug(text) -> str:
    """A file-name part; dots become '_' too (a '.1' would read as a file suffix: blocks.1 and blocks.2 collided)."""
    return re.sub(r"[^A-Za-z0-9=-]+", "_", str(text).replace("/", "-")).strip("_")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def curve(runs: list[dict], key: str, x: str) -> tuple[list, list]:
    """(x per epoch, [values of `key` over the runs] per epoch) from the runs' histories."""
    by_epoch: dict[int, list[tuple]] = {}
    for run in runs:
        for entry in run.get("history") or []:
            if _finite(entry.get(key)) and _finite(entry.get(x)) and "epoch" in entry:
                by_epoch.setdefault(int(entry["epoch"]), []).append((float(entry[x]), float(entry[key])))
    xs, values = [], []
    for epoch in sorted(by_epoch):
        pairs = by_epoch[epoch]
        xs.append(statistics.fmean(p[0] for p in pairs))  # seeds differ in seconds per epoch: mean
        values.append([p[1] for p in pairs])
    return xs, values


def _band(values: list[list[float]], band: str) -> tuple[list, list, list]:
    means = [statistics.fmean(v) for v in values]
    if band == "std":
        spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        return means, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)]
    return means, [min(v) for v in values], [max(v) for v in values]


def _short_names(keys: list[str]) -> dict[str, str]:
    """optimizer.lr -> lr, unless two keys end the same way."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _label(group: Group, keys: list[str], names: dict[str, str], shown: set[str]) -> str:
    """'wp, lr=0.1 (n=3, 1 diverged/failed)': the method and the settings that differ in this figure."""
    parts = [str(v) for k, v in zip(keys, group.key) if k == "method"]
    parts += [f"{names[k]}={v:g}" if isinstance(v, float) else f"{names[k]}={v}"
              for k, v in zip(keys, group.key) if k in shown and v is not None]  # None: a key this run's config lacks
    dropped = len(group.runs) - len(group.ok)
    counts = f"n={len(group.ok)}" + (f", {dropped} diverged/failed" if dropped else "")
    return f"{', '.join(parts) or 'runs'} ({counts})"


def log_scale_needed(curves: list[list[float]], decades: float = LOG_SCALE_DECADES) -> bool:
    """True when the positive values of the plotted curves span more than `decades` decades."""
    positive = [v for values in curves for v in values if _finite(v) and v > 0]
    return bool(positive) and max(positive) / min(positive) > 10**decades


def draw_curves(lines: list[tuple], ylabel: str, xlabel: str, title: str, band: str):
    """The figure of `lines` [(label, color, linestyle, marker, xs, values per x)]: (Figure, Axes)."""
    with plt.rc_context(STYLE):
        # Few short labels fit inside the axes; otherwise they go below, one per row, and the figure grows.
        below = len(lines) > 3 or max(len(line[0]) for line in lines) > 30
        height = 2.3 + (0.14 * len(lines) + 0.1 if below else 0.0)
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, height), layout="constrained")
        if xlabel == LABELS["epoch"]:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        bands = [_band(values, band) for *_, values in lines]
        if log_scale_needed([mean for mean, _, _ in bands]):
            ax.set_yscale("log")  # nonpositive="clip": a value <= 0 (a band's low end) runs off the bottom
        if xlabel == LABELS[COMPUTE_AXIS] and log_scale_needed([line[4] for line in lines]):
            ax.set_xscale("log")  # rules whose steps cost 3 and 100 forward passes: both curves readable
        last = max(1, len(lines) - 1)
        for i, ((label, color, style, marker, xs, _), (mean, low, high)) in enumerate(zip(lines, bands)):
            # A marker every `step` points (at most MAX_MARKERS, at least 3 per curve where the curves can
            # take turns), starting at a different point on each curve: overlapping markers do not coincide.
            step = max(1, math.ceil(len(xs) / MAX_MARKERS), min(len(lines), len(xs) // 3))
            # Earlier curves wider and below, later ones narrower and on top: both show where they overlap.
            width = STYLE["lines.linewidth"] * (1.0 + (len(lines) - 1 - i) / last)
            ax.plot(xs, mean, color=color, linestyle=style, linewidth=width, zorder=3 + i, label=label,
                    marker=marker, markersize=3, markerfacecolor="none", markeredgewidth=0.8, markevery=(i % step, step))
            ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0, zorder=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if below:
            fig.legend(frameon=False, loc="outside lower center", ncols=1)
        else:
            ax.legend(frameon=False, loc="best")
    return fig, ax


def save_figure(fig, path: Path) -> list[Path]:
    """Save as PNG and PDF; close the figure; return the files."""
    written = []
    with plt.rc_context(STYLE):
        for suffix in (".png", ".pdf"):
            target = path.with_suffix(suffix)
            fig.savefig(target, dpi=200)
            written.append(target)
    plt.close(fig)
    return written


def _figure(lines: list[tuple], ylabel: str, xlabel: str, title: str, band: str, path: Path) -> list[Path]:
    fig, _ = draw_curves(lines, ylabel, xlabel, title, band)
    return save_figure(fig, path)


def _val_metric(runs: list[dict]) -> str | None:
    keys = {k for r in runs for e in r.get("history") or [] for k in e}
    return next((k for k in ("val/acc", "val/mse", "val/loss") if k in keys), None)


def setting_palette(n: int):
    """The colour map for n lines: tab10 up to 10, tab20 beyond (no colour twice up to 20)."""
    return plt.get_cmap("tab10" if n <= 10 else "tab20")


def plot_learning_curves(records: list[dict], out_dir: str | Path, band: str = "minmax", metric: str | None = None) -> list[Path]:
    """Draw every figure; return the files written (PNG and PDF of each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = grouping_keys(records)
    names = _short_names(keys)
    methods = sorted({r.get("method") for r in records}, key=lambda m: (m != "bp", str(m)))
    palette = setting_palette(len(methods))  # 11+ methods: no colour twice
    color_of = {m: palette(i % palette.N) for i, m in enumerate(methods)}
    marker_of = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    # One figure per data x model, and per experiment when several are mixed (Ren's S/1/1 and M/1/16
    # are both model=mlp: one figure each, not 22 lines in one).
    split = [k for k in ("data", "model", "experiment") if k in keys]
    blocks: dict[tuple, list[Group]] = {}
    for group in group_records(records, keys):
        block = tuple(group.key[keys.index(k)] for k in split)
        blocks.setdefault(block, []).append(group)

    written = []
    for block, groups in blocks.items():
        style_of: dict[tuple, int] = {}  # settings of one method: solid, dashed, ... in a fixed order
        shown = {k for i, k in enumerate(keys)
                 if k not in ("method", *split) and len({g.key[i] for g in groups}) > 1}
        runs = [r for g in groups for r in g.ok]
        # (colour, marker) of each group: its method's, or, in a figure of one method's settings (K, noise,
        # budget, ...), one per setting, instead of one colour told apart by line style alone.
        m = keys.index("method")
        if len({g.key[m] for g in groups}) == 1:
            colours = setting_palette(len(groups))
            look = {g.key: (colours(n % colours.N), MARKERS[n % len(MARKERS)]) for n, g in enumerate(groups)}
        else:
            look = {g.key: (color_of[g.key[m]], marker_of[g.key[m]]) for g in groups}
        # A rule's own diagnostics (rule/angle_BW/<block>, rule/angle_delta/<block>, ...) and the alignment of each
        # parameter group (align/cos/<group>: per layer, e.g. e-prop's input, recurrent and readout weights): one figure each.
        rule_keys = sorted({k for r in runs for entry in r.get("history", []) for k in entry
                            if k.startswith("rule/") or (k.startswith("align/cos/") and k != ALIGNMENT_KEY)})
        for key, xlabel_key in [(metric or _val_metric(runs), "epoch"), (metric or _val_metric(runs), "time"),
                                (metric or _val_metric(runs), COMPUTE_AXIS),
                                (ALIGNMENT_KEY, "epoch"), *((k, "epoch") for k in rule_keys)]:
            if key is None:
                continue
            lines = []
            for group in groups:
                xs, values = curve(group.ok, key, xlabel_key)
                if not xs:
                    continue
                method = group.key[keys.index("method")]
                if group.key not in style_of:
                    style_of[group.key] = sum(k[keys.index("method")] == method for k in style_of)
                style = LINESTYLES[style_of[group.key] % len(LINESTYLES)]
                color, marker = look[group.key]
                lines.append((_label(group, keys, names, shown), color, style, marker, xs, values))
            if not lines:
                continue
            stem = "_".join(_slug(v) for v in block)
            path = out_dir / f"{stem}_{_slug(key)}_vs_{xlabel_key}"
            ylabel = LABELS.get(key, f"cosine to backprop, {key.removeprefix('align/cos/')}" if key.startswith("align/cos/") else key)
            written += _figure(lines, ylabel, LABELS[xlabel_key], " / ".join(str(v) for v in block), band, path)
    return written
