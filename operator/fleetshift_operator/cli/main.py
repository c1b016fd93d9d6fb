"""``kubectl fleetshift``: the command line. See docs/cli.md.

Exit codes: 0 success; 1 the rollout was rolled back or failed (``watch``), some
test requests failed (``invoke``), or a control had nothing to act on; 2 bad
flags; 3 the cluster, the Endpoint or the kubeconfig could not be used; 4 a
wait ran out of time (``watch --timeout``, a control the operator did not
acknowledge).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleetshift_operator.cli import view
from fleetshift_operator.cli.access import CliError, Cluster
from fleetshift_operator.cli.invoke import proxy_path, read_rows, send_invocations
from fleetshift_operator.cli.promotion import PromotionError, promoted_spec
from fleetshift_operator.controls import ABORT, PAUSED, PROMOTE, RETRY

EXIT_ROLLED_BACK = 1
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 4


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _use_color(args: argparse.Namespace) -> bool:
    return not args.no_color and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def _connect(args: argparse.Namespace) -> Cluster:
    return Cluster.connect(args.kubeconfig, args.context, args.namespace)


# -- read commands ------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    endpoints = cluster.list_endpoints(all_namespaces=args.all_namespaces)
    if not endpoints:
        where = "any namespace" if args.all_namespaces else f'namespace "{cluster.namespace}"'
        print(f"No Endpoints found in {where}.", file=sys.stderr)
        return 0
    print(view.render_table(endpoints, now=_now(), all_namespaces=args.all_namespaces), end="")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    endpoint = cluster.get_endpoint(args.name)
    events = cluster.events_for(endpoint)
    text = view.render_status(
        endpoint, now=_now(), events=events, width=_width(), color=_use_color(args)
    )
    print(text, end="")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    endpoint = _connect(args).get_endpoint(args.name)
    print(view.render_history(endpoint), end="")
    return 0


def _frame_key(endpoint: dict[str, Any], events: list[dict[str, Any]]) -> tuple[object, ...]:
    """What must change for a non-terminal watch to print a new frame."""
    return (
        endpoint["metadata"].get("resourceVersion"),
        tuple(sorted((e["metadata"].get("name"), e.get("count")) for e in events)),
    )


def cmd_watch(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    color, tty = _use_color(args), sys.stdout.isatty()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    last_key: tuple[object, ...] | None = None
    while True:
        endpoint = cluster.get_endpoint(args.name)
        events = cluster.events_for(endpoint)
        frame = view.render_watch(endpoint, now=_now(), events=events, width=_width(), color=color)
        if tty:
            # Redraw in place: home, each line cleared to its end, the rest cleared.
            lines = frame.rstrip("\n").split("\n")
            sys.stdout.write("\x1b[H" + "\x1b[K\n".join(lines) + "\x1b[K\n\x1b[J")
        elif _frame_key(endpoint, events) != last_key:
            # Not a terminal (a log, a pipe): a new frame only when something changed.
            last_key = _frame_key(endpoint, events)
            sys.stdout.write(f"--- {_now().strftime('%H:%M:%S')}\n{frame}")
        sys.stdout.flush()
        if not view.rollout_in_flight(endpoint):
            code = view.watch_exit_code(endpoint)
            status = endpoint.get("status") or {}
            verdict = "succeeded" if code == 0 else "did not succeed"
            print(
                f"rollout {verdict}: {status.get('phase')} on {status.get('activeRevision')}",
                file=sys.stderr,
            )
            return code
        if deadline is not None and time.monotonic() >= deadline:
            print(f"watch: still in flight after {args.timeout}s", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(args.interval)


# -- controls -----------------------------------------------------------------------------------


def _request_id() -> str:
    return _now().strftime("%Y%m%dT%H%M%S.%fZ")


def _await(
    cluster: Cluster,
    args: argparse.Namespace,
    done: Callable[[dict[str, Any]], bool],
    what: str,
) -> int:
    """Poll until ``done`` holds for the Endpoint, then print where the rollout is."""
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        endpoint = cluster.get_endpoint(args.name)
        if done(endpoint):
            status = endpoint.get("status") or {}
            step = status.get("step") or {}
            where = f", step {step.get('stage')} {step.get('index')}/{step.get('total')}"
            print(
                f"{what}: {status.get('phase')}, green {status.get('greenTrafficPercent', 0)}%"
                + (where if status.get("candidateRevision") and step else "")
            )
            return 0
        if time.monotonic() >= deadline:
            print(
                f"error: the operator did not acknowledge within {args.timeout}s; is it"
                " running and watching this namespace?",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        time.sleep(0.5)


def _in_flight_deployment(endpoint: dict[str, Any], action: str) -> str | None:
    """Why ``action`` has nothing to act on, or None when a deployment is in flight."""
    status = endpoint.get("status") or {}
    name = endpoint["metadata"]["name"]
    if not status.get("candidateRevision") or status.get("phase") not in ("Updating",):
        return (
            f"nothing to {action}: {name} is {status.get('phase', 'not yet reconciled')}"
            f" on {status.get('activeRevision')} with no deployment in progress"
            " (a request left on the Endpoint would act on the next deployment)"
        )
    return None


def _request(args: argparse.Namespace, action: str, annotation: str) -> int:
    cluster = _connect(args)
    endpoint = cluster.get_endpoint(args.name)
    refusal = _in_flight_deployment(endpoint, action)
    spec = endpoint.get("spec") or {}
    if (
        refusal is None
        and action == "promote"
        and (spec.get("deploymentConfig") or {}).get("rolling")
    ):
        refusal = "a rolling deployment does not skip batches: capacity must move batch by batch"
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    request = _request_id()
    cluster.annotate(args.name, {annotation: request})
    print(f"{action} requested: {annotation}={request}")
    return _await(
        cluster,
        args,
        lambda e: ((e.get("status") or {}).get("handledActions") or {}).get(action) == request,
        f"{action} acknowledged",
    )


def cmd_abort(args: argparse.Namespace) -> int:
    return _request(args, "abort", ABORT)


def cmd_promote(args: argparse.Namespace) -> int:
    return _request(args, "promote", PROMOTE)


def cmd_retry(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    endpoint = cluster.get_endpoint(args.name)
    status = endpoint.get("status") or {}
    if not status.get("rolledBackRevision"):
        print(f"error: nothing to retry: {args.name} has no rolled-back revision", file=sys.stderr)
        return EXIT_REFUSED
    request = _request_id()
    cluster.annotate(args.name, {RETRY: request})
    print(f"retry requested: {RETRY}={request} (revision {status['rolledBackRevision']})")
    return _await(
        cluster,
        args,
        lambda e: ((e.get("status") or {}).get("handledActions") or {}).get("retry") == request,
        "retry acknowledged",
    )


def cmd_pause(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    cluster.annotate(args.name, {PAUSED: "true"})
    print(f"pause requested: {PAUSED}=true")
    return _await(cluster, args, lambda e: (e.get("status") or {}).get("paused") is True, "paused")


def cmd_resume(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    endpoint = cluster.get_endpoint(args.name)
    annotations = endpoint["metadata"].get("annotations") or {}
    if PAUSED not in annotations and not (endpoint.get("status") or {}).get("paused"):
        print(f"{args.name} is not paused")
        return 0
    cluster.annotate(args.name, {PAUSED: None})
    print(f"resume requested: {PAUSED} removed")
    return _await(cluster, args, lambda e: not (e.get("status") or {}).get("paused"), "resumed")


def cmd_promote_shadow(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    endpoint = cluster.get_endpoint(args.name)
    try:
        spec = promoted_spec(endpoint.get("spec") or {}, args.shadow, args.into, args.keep_shadow)
    except PromotionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    statuses = {v.get("name"): v for v in (endpoint.get("status") or {}).get("variants") or []}
    phase = (statuses.get(args.shadow) or {}).get("phase")
    if phase != "InService" and not args.force:
        print(
            f"error: shadow {args.shadow!r} is {phase or 'not yet deployed'}, not InService: "
            "its answers have not been compared on a settled revision (--force to promote "
            "anyway)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    patch = {"spec": {"variants": spec["variants"]}}
    if not args.apply:
        print(json.dumps(patch, indent=2))
        print(
            f"# the change to {args.name}'s spec; commit it where Git owns the Endpoint, or "
            "run again with --apply (kubectl patch --type merge -p ... works too)",
            file=sys.stderr,
        )
        return 0
    cluster.set_variants(args.name, spec["variants"])
    print(
        f"promoted: shadow {args.shadow!r} into the production variant; "
        f"`kubectl fleetshift watch {args.name}` follows its deployment"
    )
    return 0


# -- invoke -------------------------------------------------------------------------------------


def cmd_invoke(args: argparse.Namespace) -> int:
    path = Path(args.csv)
    if not path.is_file():
        raise CliError(f"--csv {path}: no such file", exit_code=EXIT_USAGE)
    rows = read_rows(path, skip_header=args.header)
    if not rows:
        raise CliError(f"--csv {path}: no rows to send", exit_code=EXIT_USAGE)
    if args.url:
        import httpx2  # noqa: PLC0415 - only this mode needs a plain client

        client = httpx2.Client(base_url=args.url.rstrip("/") + "/", timeout=args.timeout)
        target, where = "invocations", f"{args.url.rstrip('/')}/invocations"
    else:
        cluster = _connect(args)
        service = args.service or args.name
        cluster.get_endpoint(args.name)
        port = cluster.service_port(service)
        client = cluster.http_client(args.timeout)
        target = proxy_path(cluster.namespace, service, port)
        where = f"{cluster.server}{target}"
    print(f"sending {args.requests} requests to {where}", file=sys.stderr)
    written = 0

    def show(ok: bool) -> None:
        nonlocal written
        written += 1
        sys.stdout.write("." if ok else "E")
        if written % 50 == 0:
            sys.stdout.write("\n")
        sys.stdout.flush()

    with client:
        summary = send_invocations(
            client, target, rows, args.requests, content_type=args.content_type, on_result=show
        )
    if written % 50:
        sys.stdout.write("\n")
    print(summary.render())
    if summary.first_error:
        print(f"first error: {summary.first_error}", file=sys.stderr)
    return 1 if summary.errors else 0


# -- parser -------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number (for invoke, -n is the number of requests;"
            " give the namespace as --namespace)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    connection.add_argument("--context", help="kubeconfig context (default: the current one)")
    namespaced = argparse.ArgumentParser(add_help=False, parents=[connection])
    namespaced.add_argument(
        "-n", "--namespace", help="namespace (default: the context's, else default)"
    )
    named = argparse.ArgumentParser(add_help=False, parents=[namespaced])
    named.add_argument("name", help="the Endpoint's name")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--no-wait", action="store_true", help="do not wait for the operator to acknowledge"
    )
    waiting.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds to wait (default 30)"
    )

    parser = argparse.ArgumentParser(
        prog="kubectl fleetshift",
        description="Watch and steer Fleetshift Endpoint rollouts.",
        epilog="Exit codes: 0 ok; 1 rolled back/failed, request errors or nothing to act on;"
        " 2 bad flags; 3 cluster, Endpoint or kubeconfig unusable; 4 timed out.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    get = commands.add_parser("get", parents=[namespaced], help="list Endpoints")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    get.set_defaults(run=cmd_get)

    status = commands.add_parser("status", parents=[named], help="one Endpoint, in full")
    status.add_argument("--no-color", action="store_true", help="no ANSI colours")
    status.set_defaults(run=cmd_status)

    watch = commands.add_parser(
        "watch",
        parents=[named],
        help="follow a rollout live until it ends",
        description="Follow a rollout until it ends. Exits 0 when the Endpoint is InService"
        " on the revision its spec asks for, 1 when it was rolled back or failed.",
    )
    watch.add_argument("--interval", type=_seconds, default=1.0, help="refresh every N seconds")
    watch.add_argument("--timeout", type=_seconds, help="give up (exit 4) after N seconds")
    watch.add_argument("--no-color", action="store_true", help="no ANSI colours")
    watch.set_defaults(run=cmd_watch)

    history = commands.add_parser("history", parents=[named], help="finished deployments")
    history.set_defaults(run=cmd_history)

    for action, run, text in (
        ("pause", cmd_pause, "hold the rollout at its current step"),
        ("resume", cmd_resume, "lift a pause (waits and the deadline extend by it)"),
        ("promote", cmd_promote, "skip the remaining waits of the deployment"),
        ("abort", cmd_abort, "roll the deployment back now"),
        ("retry", cmd_retry, "deploy a rolled-back revision again"),
    ):
        command = commands.add_parser(action, parents=[named, waiting], help=text)
        command.set_defaults(run=run)

    promote_shadow = commands.add_parser(
        "promote-shadow",
        parents=[named],
        help="make a shadow's model a production variant's next revision",
        description="Print (or --apply) the spec change that gives a production variant the"
        " shadow's model, image and env; the variant deploys it with its own policy and"
        " alarms. Refused unless the shadow is InService (--force).",
    )
    promote_shadow.add_argument("shadow", help="the shadow variant's name")
    promote_shadow.add_argument(
        "--into", help="the production variant (default: the only one that is not a shadow)"
    )
    promote_shadow.add_argument(
        "--keep-shadow", action="store_true", help="keep the shadow variant (default: removed)"
    )
    promote_shadow.add_argument(
        "--apply", action="store_true", help="write the change (default: print it)"
    )
    promote_shadow.add_argument(
        "--force", action="store_true", help="promote a shadow not InService"
    )
    promote_shadow.set_defaults(run=cmd_promote_shadow)

    invoke = commands.add_parser(
        "invoke",
        parents=[connection],
        help="send test requests from a CSV",
        description="POST one CSV row per request to the runtime's /invocations, through the"
        " API server's service proxy (default) or --url. Prints . per success, E per error.",
    )
    invoke.add_argument("name", help="the Endpoint's name")
    invoke.add_argument("--namespace", help="namespace (-n is the request count here)")
    invoke.add_argument("--csv", required=True, help="file with one request body per line")
    invoke.add_argument(
        "-n", "--requests", type=_positive, default=10, help="how many requests (default 10)"
    )
    invoke.add_argument("--url", help="base URL of the runtime instead of the service proxy")
    invoke.add_argument("--service", help="Service to proxy to (default: the Endpoint's name)")
    invoke.add_argument("--content-type", default="text/csv", help="default text/csv")
    invoke.add_argument("--header", action="store_true", help="skip the CSV's first line")
    invoke.add_argument(
        "--timeout", type=_seconds, default=10.0, help="per-request timeout (default 10 s)"
    )
    invoke.set_defaults(run=cmd_invoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
