"""The chart: time to first response per model and contender, on a log scale, with the disk limit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

from thawllm.bench.summary import ContenderSummary  # noqa: E402

PANEL_HEIGHT_IN = 4.0
TITLE_HEIGHT_IN = 0.8
PANEL_WIDTH_PER_MODEL_IN = 2.6
MIN_PANEL_WIDTH_IN = 5.0
LEGEND_WIDTH_IN = 3.4
GROUP_WIDTH = 0.8
DPI = 120


def write_chart(report, path: Path) -> None:
    """Draw one panel per page cache state, one above the other, with bars grouped by model; save it as PNG."""
    models = [model for model in report.models if not model.get("skip_reason")]
    caches = list(report.settings["caches"])
    contenders = list(report.contender_labels)
    by_key = {(summary.model, summary.contender, summary.cache): summary for summary in report.summaries()}

    panel_width = max(MIN_PANEL_WIDTH_IN, PANEL_WIDTH_PER_MODEL_IN * max(1, len(models)))
    width = panel_width + LEGEND_WIDTH_IN
    height = PANEL_HEIGHT_IN * len(caches) + TITLE_HEIGHT_IN
    figure, axes = plt.subplots(len(caches), 1, figsize=(width, height), sharex=True, squeeze=False)
    for axis, cache in zip(axes[:, 0], caches):
        _draw_panel(axis, models, contenders, report.contender_labels, by_key, cache)
        axis.set_ylabel("seconds (log scale)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize="small", frameon=False)
    figure.suptitle("Time to first response of a 16-token completion, from process launch\n"
                    "(for the gateway: from the request that reaches it with no instance running)",
                    fontsize="medium")
    figure.tight_layout(rect=(0, 0, panel_width / width, 1 - TITLE_HEIGHT_IN / height))
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _draw_panel(axis, models, contenders, labels, by_key, cache: str) -> None:
    bar_width = GROUP_WIDTH / max(1, len(contenders))
    colors = plt.get_cmap("tab10").colors
    axis.set_yscale("log")
    for index, contender in enumerate(contenders):
        for position, model in enumerate(models):
            x = position - GROUP_WIDTH / 2 + bar_width * (index + 0.5)
            summary: ContenderSummary | None = by_key.get((model["key"], contender, cache))
            spread = summary.figures.get("first_response_s") if summary else None
            if spread is None:
                axis.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                              textcoords="offset points", ha="center", fontsize="x-small", rotation=90)
                continue
            error = [[spread.median - spread.minimum], [spread.maximum - spread.median]]
            axis.bar(x, spread.median, bar_width, yerr=error, capsize=2, color=colors[index % len(colors)],
                     label=labels[contender] if position == 0 else None)
    _draw_disk_limits(axis, models)
    axis.set_xticks(range(len(models)), [model["label"] for model in models], fontsize="small")
    axis.set_title(f"{cache} page cache", fontsize="medium")
    axis.grid(axis="y", which="both", alpha=0.3)


def _draw_disk_limits(axis, models) -> None:
    labelled = False
    for position, model in enumerate(models):
        limit = model.get("disk_limit_s")
        if not limit:
            continue
        axis.hlines(limit, position - GROUP_WIDTH / 2, position + GROUP_WIDTH / 2, colors="black",
                    linestyles="dashed", label=None if labelled else "disk limit: model size / read bandwidth")
        labelled = True
