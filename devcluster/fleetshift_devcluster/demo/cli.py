"""``fleetshift-demo`` (``make demo``): the guardrail walkthrough on this machine.

Exit status: 0 when every scenario ended as the story expects and each blast
radius stayed within its bound; 1 when one did not; 2 for a demo that could not
run (the message says why); 130 on Ctrl-C. Whatever happens, every process the
demo started is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from fleetshift_devcluster.cluster import ClusterError, running_cluster
from fleetshift_devcluster.demo.plots import (
    fetch_gates_series,
    fetch_series,
    fetch_shadow_series,
    plot_gates_scenario,
    plot_scenario,
    plot_shadow_scenario,
)
from fleetshift_devcluster.demo.progress import Progress
from fleetshift_devcluster.demo.stopping import StopRequest
from fleetshift_devcluster.demo.story import (
    DRIFT_ALARM,
    NAMESPACE,
    Demo,
    DemoError,
    DemoOptions,
    ScenarioRecord,
)
from fleetshift_devcluster.demo.timeline import ScenarioSummary, summary_table


def _positive(value: str) -> int:
    number = int(value)
    if number < 0 or number > 3600:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 3600 seconds")
    return number


def _rate(value: str) -> float:
    number = float(value)
    if not 1 <= number <= 500:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 500 requests/s")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fleetshift-demo",
        description="The guardrail walkthrough: canary and linear updates of an XGBoost "
        "churn endpoint, with real runtimes, real Prometheus alarms and automatic rollback, "
        "then a drift rollback and a promotion held for approval (the gates story).",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="where the PNG timelines, the summary and the logs go",
    )
    parser.add_argument(
        "--canary-wait",
        type=_positive,
        default=30,
        help="seconds the canary step bakes (default 30)",
    )
    parser.add_argument(
        "--linear-wait",
        type=_positive,
        default=20,
        help="seconds each linear step bakes (default 20)",
    )
    parser.add_argument(
        "--termination-wait",
        type=_positive,
        default=15,
        help="seconds blue is kept after green has all traffic (default 15)",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=40.0,
        help="requests per second the load generator sends (default 40)",
    )
    parser.add_argument(
        "--node",
        choices=("kwok", "real"),
        default="kwok",
        help="kwok: the pods are runtime processes the demo starts (default); real: the "
        "runtime image on a real node, inside a network namespace (root, `make images`, "
        "the real node's binaries; docs/real-node.md)",
    )
    parser.add_argument(
        "--policies",
        default=None,
        help="which stories to tell, comma-separated: canary, linear, gates, shadow (the "
        "shadow story runs on the real node only; default: canary,linear,gates, and shadow "
        "too with --node real)",
    )
    args = parser.parse_args(argv)
    if args.policies is None:
        args.policies = "canary,linear,gates" + (",shadow" if args.node == "real" else "")
    policies = [p.strip().capitalize() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - {"Canary", "Linear", "Gates", "Shadow"})
    if unknown or not policies:
        parser.error(f"--policies takes canary, linear, gates and/or shadow, not {args.policies!r}")
    if "Shadow" in policies and args.node != "real":
        parser.error(
            "the shadow story needs --node real: production pods read the shadows ConfigMap "
            "from a mounted volume and reach the shadow by its Service's DNS name, which the "
            "kwok launcher's processes cannot"
        )
    args.policies = tuple(policies)
    return args


def reap_leftovers(work: Path) -> list[int]:
    """Stop processes a previous run left behind (a killed demo cannot clean up):
    every process whose working directory is inside ``work``."""
    found = []
    root = str(work.resolve())
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = process.info.get("cwd") or ""
        if cwd == root or cwd.startswith(root + "/"):
            found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return [p.pid for p in found]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = DemoOptions(
        output=args.output.resolve(),
        canary_wait=args.canary_wait,
        linear_wait=args.linear_wait,
        termination_wait=args.termination_wait,
        rate=args.rate,
        policies=args.policies,
    )
    stop = StopRequest()
    stop.install()
    progress = Progress()
    work = options.output / "work"
    began = time.monotonic()
    try:
        if work.exists():
            stale = reap_leftovers(work)
            if stale:
                progress.say(f"stopped {len(stale)} processes left by an earlier run")
            shutil.rmtree(work)
        work.mkdir(parents=True)
        if args.node == "real":
            progress.say(f"starting the control plane and a real node in {work / 'cluster'}")
            summaries = _on_real_node(options, work, progress, stop)
        else:
            progress.say(f"starting the local control plane in {work / 'cluster'}")
            with running_cluster(work / "cluster") as cluster:
                demo = Demo(options, cluster, progress, stop)
                with demo.running():
                    demo.run(lambda summary, record: _after_scenario(demo, summary, record))
                    summaries = demo.summaries
    except KeyboardInterrupt:
        progress.say("interrupted: everything the demo started has been stopped")
        return 130
    except (DemoError, ClusterError) as error:
        progress.say(f"the demo could not finish: {error}")
        return 2
    table = summary_table(summaries)
    wall = time.monotonic() - began
    (options.output / "summary.md").write_text(table + f"\nwall time: {wall:.0f} s\n")
    (options.output / "summary.json").write_text(
        json.dumps(
            {"wall_seconds": round(wall, 1), "scenarios": [s.__dict__ for s in summaries]},
            indent=2,
        )
    )
    print("\n" + table)
    print(f"wall time {wall:.0f} s; timelines and logs in {options.output}/")
    good = all(s.as_expected and s.within_bound for s in summaries)
    return 0 if good else 1


def _on_real_node(
    options: DemoOptions, work: Path, progress: Progress, stop: StopRequest
) -> list[ScenarioSummary]:
    """The story on a real node; this thread (and all it starts) inside its namespace."""
    from fleetshift_devcluster import netns  # noqa: PLC0415 - only for --node real
    from fleetshift_devcluster.demo.realnode import RealNodeDemo  # noqa: PLC0415
    from fleetshift_devcluster.realnode import running_real_node  # noqa: PLC0415

    with running_real_node(work / "cluster") as cluster, netns.entered(cluster.netns):
        demo = RealNodeDemo(options, cluster, progress, stop)
        with demo.running():
            demo.run(lambda summary, record: _after_scenario(demo, summary, record))
            return demo.summaries


def _after_scenario(demo: Demo, summary: ScenarioSummary, record: ScenarioRecord) -> None:
    """Report the scenario and draw its timeline from Prometheus's data."""
    demo.progress.done(summary)
    scenario = record.scenario
    window = (record.started - 8, record.finished + demo.options.settle_seconds)
    title = f"{summary.name}: {summary.outcome} ({scenario.policy}, {scenario.model} model)"
    path = demo.options.output / f"{summary.name}.png"
    if scenario.policy == "Shadow":
        shadow = fetch_shadow_series(demo.prometheus.url, NAMESPACE, scenario.endpoint, *window)
        plot_shadow_scenario(record, shadow, path, title, demo.options.shadow_threshold)
    elif scenario.policy == "Gates":
        data = fetch_gates_series(demo.prometheus.url, NAMESPACE, scenario.endpoint, *window)
        plot_gates_scenario(record, data, path, title, DRIFT_ALARM, demo.options.drift_threshold)
    else:
        data = fetch_series(demo.prometheus.url, NAMESPACE, scenario.endpoint, *window)
        plot_scenario(record, data, path, title)
    demo.progress.say(f"   timeline: {path}")


if __name__ == "__main__":
    sys.exit(main())
