"""Errors a person can act on: no kubeconfig, bad flags, an Endpoint that is not there."""

from __future__ import annotations

from pathlib import Path

from cli.helpers import run_plugin


def test_no_kubeconfig_says_how_to_give_one(tmp_path: Path) -> None:
    done = run_plugin(None, "get", HOME=str(tmp_path))

    assert done.returncode == 3
    assert "no kubeconfig: set KUBECONFIG or pass --kubeconfig" in done.stderr


def test_a_kubeconfig_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.kubeconfig"

    done = run_plugin(missing, "status", "churn")

    assert done.returncode == 3
    assert f"no kubeconfig: KUBECONFIG names {missing}, which does not exist" in done.stderr


def test_an_unreachable_api_server_is_named(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )

    done = run_plugin(kubeconfig, "get")

    assert done.returncode == 3
    assert "cannot reach the API server at https://127.0.0.1:9 to list Endpoints" in done.stderr


def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    done = run_plugin(None, "rollout", "churn")

    assert done.returncode == 2
    assert "invalid choice: 'rollout'" in done.stderr


def test_a_namespace_given_as_invoke_count_is_explained(tmp_path: Path) -> None:
    done = run_plugin(None, "invoke", "churn", "--csv", "x.csv", "-n", "prod")

    assert done.returncode == 2
    assert "-n is the number of requests; give the namespace as --namespace" in done.stderr


def test_a_missing_csv_file_is_named(tmp_path: Path) -> None:
    done = run_plugin(
        None, "invoke", "churn", "--csv", str(tmp_path / "no.csv"), "--url", "http://x"
    )

    assert done.returncode == 2
    assert "no.csv: no such file" in done.stderr


def test_watch_rejects_a_negative_interval() -> None:
    done = run_plugin(None, "watch", "churn", "--interval", "-1")

    assert done.returncode == 2
    assert "must be more than 0 seconds" in done.stderr
