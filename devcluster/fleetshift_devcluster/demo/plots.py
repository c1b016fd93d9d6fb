"""One PNG timeline per scenario, from what Prometheus scraped off the runtimes.

Four panels share the time axis, like the seed walkthrough's graphs (the gates story adds
the share of answers saying "churn" per fleet and the drift alarm's index):
invocations and 5xx per second per fleet (the runtime's own counters), model
latency p50/p99 per fleet (its histogram), and the green traffic share the
operator reported, with the capacity gate's fit (the green replicas the full load
needs, and green's Ready ones) once it has one. Vertical lines mark each traffic
step, the alarm breach, the rollback and the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fleetshift_devcluster.demo.timeline import Marker, StatusSample

if TYPE_CHECKING:
    from fleetshift_devcluster.demo.story import ScenarioRecord

Series = dict[str, tuple[list[float], list[float]]]
MODEL_COLORS = {
    "baseline": "#1f77b4",
    "incompatible": "#d62728",
    "valid": "#2ca02c",
    "disagreeing": "#9467bd",
    "shifted": "#e377c2",
}
MARKER_STYLE = {
    "update": ("#555555", "--"),
    "step": ("#1f77b4", ":"),
    "breach": ("#d62728", "-"),
    "rollback": ("#ff7f0e", "-."),
    "done": ("#2ca02c", "--"),
    "gate": ("#8c564b", ":"),
}


def query_range(
    prometheus: str, query: str, start: float, end: float, key: str = "revision"
) -> Series:
    """``query`` over [start, end] at 1 s steps, as the ``key`` label -> (times, values)."""
    answer = httpx.get(
        f"{prometheus}/api/v1/query_range",
        params={"query": query, "start": start, "end": end, "step": "1"},
        timeout=30,
    )
    answer.raise_for_status()
    series: Series = {}
    for result in answer.json()["data"]["result"]:
        revision = result["metric"].get(key, "")
        times = [float(t) for t, _ in result["values"]]
        values = [float(v) for _, v in result["values"]]
        series[revision] = (times, values)
    return series


def fetch_series(
    prometheus: str, namespace: str, endpoint: str, start: float, end: float
) -> dict[str, Series]:
    """The four metric panels' data for one Endpoint."""
    where = f'namespace="{namespace}",endpoint="{endpoint}"'
    window = "5s"

    def quantile(q: float) -> str:
        return (
            f"1000 * histogram_quantile({q}, sum by (le, revision) "
            f"(rate(fleetshift_model_latency_seconds_bucket{{{where}}}[{window}])))"
        )

    queries = {
        "invocations": (
            f"sum by (revision) (rate(fleetshift_invocations_total{{{where}}}[{window}]))"
        ),
        "errors": (
            f"sum by (revision) (rate(fleetshift_invocation_5xx_errors_total{{{where}}}[{window}]))"
        ),
        "p50": quantile(0.5),
        "p99": quantile(0.99),
    }
    return {name: query_range(prometheus, q, start, end) for name, q in queries.items()}


def fetch_shadow_series(
    prometheus: str, namespace: str, endpoint: str, start: float, end: float
) -> dict[str, Series]:
    """The shadow story's panels, from what production's pods export about the copies
    they sent (by the shadow's revision) and the callers' traffic (by production's)."""
    where = f'namespace="{namespace}",endpoint="{endpoint}"'
    window = "5s"

    def difference(q: float) -> str:
        return (
            f"histogram_quantile({q}, sum by (le, shadow_revision) "
            f"(rate(fleetshift_shadow_abs_difference_bucket{{{where}}}[{window}])))"
        )

    shadow_queries = {
        "copies": (
            f"sum by (shadow_revision) (rate(fleetshift_shadow_copies_total"
            f'{{{where},outcome="answered"}}[{window}]))'
        ),
        "difference_p50": difference(0.5),
        "difference_p90": difference(0.9),
        "disagreement": (
            f"100 * sum by (shadow_revision) "
            f"(rate(fleetshift_shadow_disagreements_total{{{where}}}[{window}]))"
            f" / sum by (shadow_revision) "
            f"(rate(fleetshift_shadow_compared_rows_total{{{where}}}[{window}]))"
        ),
    }
    data = {
        name: query_range(prometheus, q, start, end, key="shadow_revision")
        for name, q in shadow_queries.items()
    }
    data["invocations"] = query_range(
        prometheus,
        f"sum by (revision) (rate(fleetshift_invocations_total{{{where}}}[{window}]))",
        start,
        end,
    )
    return data


def fetch_gates_series(
    prometheus: str, namespace: str, endpoint: str, start: float, end: float
) -> dict[str, Series]:
    """The gates story's panels: the four of :func:`fetch_series`, and the share of each
    revision's answers that call a customer a churner (a prediction above 0.5), from the
    runtime's prediction histogram that the drift alarm compares."""
    data = fetch_series(prometheus, namespace, endpoint, start, end)
    where = f'namespace="{namespace}",endpoint="{endpoint}"'
    data["churn_share"] = query_range(
        prometheus,
        f'100 * (1 - sum by (revision) (rate(fleetshift_prediction_bucket{{{where},le="0.5"}}'
        f"[10s])) / sum by (revision) (rate(fleetshift_prediction_count{{{where}}}[10s])))",
        start,
        end,
    )
    return data


def plot_gates_scenario(  # noqa: PLR0917 - one figure's inputs
    record: ScenarioRecord,
    data: dict[str, Series],
    path: Path,
    title: str,
    alarm: str,
    threshold: float,
) -> Path:
    """The gates story's timeline: invocations and 5xx per fleet, the share of each fleet's
    answers that say "churn", the drift alarm's index against its threshold (from the
    operator's status), and green's traffic share, with the approver's lines."""
    start = record.started - 8
    figure, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True)
    for axis, key, ylabel in (
        (axes[0], "invocations", "invocations / s"),
        (axes[1], "errors", "5xx errors / s"),
        (axes[2], "churn_share", "answers saying churn (%)"),
    ):
        _draw_series(axis, data[key], record.revisions, start)
        axis.set_ylabel(ylabel)
        axis.legend(loc="upper left", fontsize=8)
    axes[2].set_ylim(-5, 105)
    # From this deployment's first sample on: before it, status holds the last verdict of
    # the deployment before.
    begun = next(
        (i for i, s in enumerate(record.samples) if s.candidate == record.candidate),
        len(record.samples),
    )
    judged = [
        (sample.at - start, value)
        for sample in record.samples[begun:]
        for name, _, value in sample.alarms
        if name == alarm and value is not None
    ]
    axes[3].plot(
        [t for t, _ in judged],
        [v for _, v in judged],
        color="#e377c2",
        marker="o",
        markersize=3,
        label=f"{alarm} index (none while too few predictions)",
    )
    axes[3].axhline(threshold, color="#d62728", linestyle=":", linewidth=1, label="threshold")
    axes[3].set_ylim(bottom=0)
    axes[3].set_ylabel("population stability index")
    axes[3].legend(loc="upper left", fontsize=8)
    _plot_share(axes[4], record.samples, record.candidate, start)
    return _finish(figure, axes, record, start, title, path)


def plot_shadow_scenario(
    record: ScenarioRecord, data: dict[str, Series], path: Path, title: str, threshold: float
) -> Path:
    """The shadow story's timeline: callers' answers by revision, the copies each shadow
    revision answered, the paired absolute difference of its predictions from
    production's for the same requests (median and p90), and the share of rows whose
    predicted class differs, against the alarm's threshold."""
    start = record.started - 8

    def draw(axis: Axes, series: Series, prefix: str = "", style: str = "-") -> None:
        _draw_series(axis, series, record.revisions, start, prefix, style)

    figure, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    draw(axes[0], data["invocations"], "callers answered by ")
    axes[0].set_ylabel("invocations / s")
    draw(axes[1], data["copies"], "copies answered by shadow ")
    axes[1].set_ylabel("shadow copies / s")
    draw(axes[2], data["difference_p50"], "median ")
    draw(axes[2], data["difference_p90"], "p90 ", style="--")
    axes[2].set_ylabel("|shadow - production|")
    draw(axes[3], data["disagreement"], "class differs: ")
    axes[3].axhline(threshold, color="#d62728", linestyle=":", linewidth=1, label="alarm threshold")
    axes[3].set_ylim(-5, 105)
    axes[3].set_ylabel("disagreement (%)")
    for axis in axes:
        axis.legend(loc="upper left", fontsize=8)
    return _finish(figure, axes, record, start, title, path)


def plot_scenario(record: ScenarioRecord, data: dict[str, Series], path: Path, title: str) -> Path:
    """Draw the timeline of one scenario into ``path`` (PNG)."""
    start = record.started - 8
    figure, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    panels = [
        (axes[0], "invocations", "invocations / s"),
        (axes[1], "errors", "5xx errors / s"),
    ]
    for axis, key, ylabel in panels:
        _draw_series(axis, data[key], record.revisions, start)
        axis.set_ylabel(ylabel)
        axis.legend(loc="upper left", fontsize=8)
    for quantile, style in (("p50", "-"), ("p99", "--")):
        _draw_series(axes[2], data[quantile], record.revisions, start, f"{quantile} ", style)
    axes[2].set_ylabel("model latency (ms)")
    axes[2].legend(loc="upper left", fontsize=8)
    _plot_share(axes[3], record.samples, record.candidate, start)
    return _finish(figure, axes, record, start, title, path)


def _draw_series(  # noqa: PLR0917 - a line per revision, the same everywhere
    axis: Axes,
    series: Series,
    names: dict[str, str],
    start: float,
    prefix: str = "",
    style: str = "-",
) -> None:
    """One line per revision, coloured by the model it serves and labelled with it."""
    for revision, (times, values) in sorted(series.items()):
        model = names.get(revision, "")
        axis.plot(
            [t - start for t in times],
            values,
            linestyle=style,
            color=MODEL_COLORS.get(model, "#7f7f7f"),
            label=f"{prefix}{model or 'fleet'} ({revision[:6]})",
        )


def _finish(  # noqa: PLR0917 - one figure's last strokes
    figure: Figure,
    axes: Sequence[Axes],
    record: ScenarioRecord,
    start: float,
    title: str,
    path: Path,
) -> Path:
    """The markers on every panel, the title and the time axis, then the PNG."""
    for axis in axes:
        _draw_markers(axis, record.markers, start)
    axes[0].set_title(title)
    axes[-1].set_xlabel("seconds")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def calculate_new_model_share(sample: StatusSample, candidate: str) -> int:
    """The traffic share of the scenario's new model: green's share while the
    deployment runs, then 100 if it became the active revision, else 0.

    >>> s = StatusSample(0, "InService", None, 0, 0, 0, None, "new", False, ())
    >>> calculate_new_model_share(s, "new"), calculate_new_model_share(s, "other")
    (100, 0)
    """
    if sample.candidate == candidate:
        return sample.green_percent
    return 100 if sample.active == candidate and sample.candidate is None else 0


def _plot_share(axis: Axes, samples: Sequence[StatusSample], candidate: str, start: float) -> None:
    axis.step(
        [s.at - start for s in samples],
        [calculate_new_model_share(s, candidate) for s in samples],
        where="post",
        color="#2ca02c",
        label="traffic share of the new model (green)",
    )
    axis.set_ylim(-5, 105)
    axis.set_ylabel("green share (%)")
    axis.legend(loc="upper left", fontsize=8)
    fitted = [s for s in samples if s.candidate == candidate and s.capacity_needed is not None]
    if fitted:
        # The capacity gate: the replicas green needs for all of the traffic, and its Ready.
        replicas = axis.twinx()
        times = [s.at - start for s in fitted]
        replicas.step(
            times,
            [s.capacity_needed or 0 for s in fitted],
            where="post",
            color="#8c564b",
            linestyle="--",
            label="green replicas needed at 100% (capacity)",
        )
        replicas.step(
            times,
            [s.capacity_ready for s in fitted],
            where="post",
            color="#8c564b",
            label="green Ready",
        )
        replicas.set_ylim(0, max(s.capacity_needed or 0 for s in fitted) + 2)
        replicas.set_ylabel("green replicas")
        replicas.legend(loc="upper right", fontsize=8)


def _draw_markers(axis: Axes, markers: Sequence[Marker], start: float) -> None:
    bottom, top = axis.get_ylim()
    previous = None
    height = top
    for marker in sorted(markers, key=lambda m: m.at):
        color, style = MARKER_STYLE.get(marker.kind, ("#999999", ":"))
        axis.axvline(marker.at - start, color=color, linestyle=style, linewidth=1)
        # Labels of markers less than 2 s apart are stepped down, not drawn over each other.
        close = previous is not None and marker.at - previous < 2
        height = height - (top - bottom) * 0.3 if close else top
        previous = marker.at
        if axis is axis.figure.axes[0]:
            axis.text(
                marker.at - start,
                height,
                marker.label,
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=color,
            )
