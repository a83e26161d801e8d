"""Secured clusters from the CLI, against a real broker of the test's own with a SASL
(PLAIN) listener: `topology apply` and a `streams worker` with credentials from
--client-config (or STREAMS_KAFKA_* variables) run and process a record; with a wrong
password or none they fail within seconds with one line saying what to check; and no
password shows anywhere in what those processes wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from streams.events import TaskEvent
from streams.kafka.client_config import ClientConfig
from streams.testing import publish, read_events
from tests.integration.secured_broker import USER, SecuredBroker, secured_broker
from tests.integration.workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    with secured_broker(tmp_path_factory.mktemp("secured-broker")) as running:
        yield running


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STREAMS_KAFKA_"))}
    env.pop("STREAMS_CLIENT_CONFIG", None)
    env.update(extra)
    return env


def _properties(path: Path, broker: SecuredBroker, password: str | None) -> Path:
    lines = [f"bootstrap.servers={broker.sasl_bootstrap}"]
    if password is not None:
        lines += [
            "security.protocol=SASL_PLAINTEXT",
            "sasl.mechanism=PLAIN",
            f"sasl.username={USER}",
            f"sasl.password={password}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _workflow(directory: Path) -> tuple[str, Path]:
    name = f"s{os.urandom(5).hex()}"
    data = {
        "workflow": name,
        "lanes": ["standard"],
        "topic_defaults": {"partitions": 1, "retention_ms": 3_600_000},
        "stages": {"work": {"handler": "tests.integration.proc_handlers:sleep_then_emit"}},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return name, path


def _streams(
    *args: str, env: dict[str, str], timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip


def _apply(topology: Path, config: Path) -> subprocess.CompletedProcess[str]:
    applied = _streams("topology", "apply", str(topology), "--client-config", str(config),
                       env=_env())  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    return applied


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_with_credentials_from_the_cli_apply_and_a_worker_run_and_without_them_fail_clearly(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    written: list[str] = []  # everything the processes printed, to grep for secrets
    name, topology = _workflow(tmp_path)
    good = _properties(tmp_path / "client.properties", broker, broker.password)

    applied = _streams("topology", "apply", str(topology), "--client-config", str(good),
                       env=_env())  # fmt: skip
    written += [applied.stdout, applied.stderr]
    assert applied.returncode == 0, applied.stderr
    assert f"{name}.work.standard" in applied.stdout

    # The worker, with the same credentials from STREAMS_KAFKA_* and the cluster from the file.
    bare = _properties(tmp_path / "bare.properties", broker, None)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", str(topology), "--stage", "work",
             "--client-config", str(bare)],
            env=_env(STREAMS_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                     STREAMS_KAFKA_SASL_MECHANISM="PLAIN", STREAMS_KAFKA_SASL_USERNAME=USER,
                     STREAMS_KAFKA_SASL_PASSWORD=broker.password),
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
        )  # fmt: skip
    try:
        plain = ClientConfig(broker.plain_bootstrap, client_id="secured-test")
        sent = events_for(name)
        publish(plain, f"{name}.work.standard", sent)
        done = read_events(plain, f"{name}.completed", 1, expect=1, timeout_s=90)
        assert [e.run_id for e in done] == [e.run_id for e in sent]
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    written.append(log_path.read_text())
    assert code == 0, written[-1]

    # A wrong password, and none at all: one line, within seconds, saying what to check.
    wrong = _properties(tmp_path / "wrong.properties", broker, "not-" + broker.password)
    for config, expected in ((wrong, "sasl.username and sasl.password"),
                             (bare, "security.protocol")):  # fmt: skip
        started = time.monotonic()
        failed = _streams("worker", str(topology), "--stage", "work", "--client-config",
                          str(config), env=_env(), timeout_s=60)  # fmt: skip
        took = time.monotonic() - started
        written += [failed.stdout, failed.stderr]
        assert failed.returncode == 1, failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, failed.stderr
        assert expected in errors[0], errors[0]
        assert "Traceback" not in failed.stderr
        assert took < 40, took
    everything = "\n".join(written) + broker.log_file.read_text(errors="replace")
    assert broker.password not in "\n".join(written)
    assert ("not-" + broker.password) not in everything


def events_for(workflow: str) -> list[TaskEvent]:
    from streams.topology import parse_topology

    topology = parse_topology(
        {"workflow": workflow, "lanes": ["standard"],
         "stages": {"work": {"handler": "tests.integration.proc_handlers:sleep_then_emit"}}},
        "inline", validate_handlers=False,
    )  # fmt: skip
    return list(events(topology, "work", 1))


def test_broker_start_secure_serves_sasl_ssl_and_a_worker_connects_with_the_written_config(
    tmp_path: Path,
) -> None:
    # A broker of this test's own (own STREAMS_HOME and ports), never the shared one.
    from streams.config import load_settings

    home = tmp_path / "home"
    env = _env(STREAMS_HOME=str(home), STREAMS_CACHE_DIR=str(load_settings().jar_cache.parent))
    started = _streams("broker", "start", "--secure", env=env, timeout_s=200)
    try:
        assert started.returncode == 0, started.stderr
        secure_line = next(line for line in started.stdout.splitlines() if "SASL_SSL" in line)
        config = Path(secure_line.rsplit("--client-config ", 1)[1].strip())
        assert config.is_file() and config.stat().st_mode & 0o077 == 0  # owner-only
        secret = next(
            line.split("=", 1)[1] for line in config.read_text().splitlines()
            if line.startswith("sasl.password=")
        )  # fmt: skip
        assert secret not in started.stdout + started.stderr
        status = _streams("broker", "status", env=env)
        assert "SASL_SSL" in status.stdout and secret not in status.stdout

        name, topology = _workflow(tmp_path)
        applied = _streams("topology", "apply", str(topology), "--client-config", str(config),
                           env=env)  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        plain_bootstrap = started.stdout.strip().splitlines()[-1]
        log_path = tmp_path / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", str(topology), "--stage", "work",
                 "--client-config", str(config)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
            )  # fmt: skip
        try:
            plain = ClientConfig(plain_bootstrap, client_id="secured-test")
            sent = events_for(name)
            publish(plain, f"{name}.work.standard", sent)
            done = read_events(plain, f"{name}.completed", 1, expect=1, timeout_s=90)
            assert [e.run_id for e in done] == [e.run_id for e in sent]
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log_path.read_text()
        # The same file with another password: refused in one line, over TLS.
        wrong = tmp_path / "wrong.properties"
        wrong.write_text(config.read_text().replace(secret, "not-the-password"))
        failed = _streams("worker", str(topology), "--stage", "work", "--client-config",
                          str(wrong), env=env, timeout_s=60)  # fmt: skip
        assert failed.returncode == 1
        assert "SASL_SSL" in failed.stderr and "sasl.password" in failed.stderr
        written = applied.stdout + applied.stderr + log_path.read_text() + failed.stderr
        assert secret not in written
    finally:
        _streams("broker", "stop", env=env, timeout_s=60)


def test_a_running_worker_whose_password_is_rotated_away_stops_with_one_line(
    tmp_path: Path,
) -> None:
    def ready(name: str, _port: int, broker: SecuredBroker) -> bool:
        plain = ClientConfig(broker.plain_bootstrap, client_id="secured-test")
        publish(plain, f"{name}.work.standard", events_for(name))
        done = read_events(plain, f"{name}.completed", 1, expect=1, timeout_s=90)
        assert len(done) == 1, "the worker processed nothing before the rotation"
        return True

    _stops_with_one_line_after_rotation(
        tmp_path,
        _workflow,
        lambda _, file, _port: ["worker", str(file), "--stage", "work"],
        ready,
    )


def test_the_intake_and_the_monitor_connect_with_credentials_from_the_cli(
    broker: SecuredBroker, tmp_path: Path
) -> None:

    import httpx

    name, topology = _workflow(tmp_path)
    good = _properties(tmp_path / "client.properties", broker, broker.password)
    applied = _apply(topology, good)
    port = _free_port()
    log_path = tmp_path / "intake.log"
    with log_path.open("w") as log:
        intake = subprocess.Popen(
            [sys.executable, "-m", "streams", "intake", str(topology), "--port", str(port),
             "--client-config", str(good)],
            env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert intake.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        answer = httpx.post(f"{url}/v1/workflows/{name}/runs",
                            json={"tenant": "acme", "payload": {"n": 1}}, timeout=10)  # fmt: skip
        assert answer.status_code == 202, answer.text
        plain = ClientConfig(broker.plain_bootstrap, client_id="secured-test")
        queued = read_events(plain, f"{name}.work.standard", 1, expect=1, timeout_s=30)
        assert [e.run_id for e in queued] == [answer.json()["run_id"]]
    finally:
        intake.send_signal(signal.SIGTERM)
        intake.wait(30)
    monitor = _streams("monitor", str(topology), "--once", "--json", "--sample-for", "1",
                       "--client-config", str(good), env=_env())  # fmt: skip
    assert monitor.returncode == 0, monitor.stderr
    assert '"work"' in monitor.stdout
    written = log_path.read_text() + monitor.stdout + monitor.stderr + applied.stdout
    assert broker.password not in written


def _workflow_with_review(directory: Path) -> tuple[str, Path]:
    name = f"s{os.urandom(5).hex()}"
    review = {"max_pending": 4, "max_wait_s": 60, "on_timeout": "decline"}
    data = {
        "workflow": name,
        "lanes": ["standard"],
        "topic_defaults": {"partitions": 1, "retention_ms": 3_600_000},
        "stages": {
            "approve": {"kind": "review", "handler": None, "downstream": ["send"],
                        "review": review},
            "send": {"handler": "tests.integration.proc_handlers:sleep_then_emit"},
        },
    }  # fmt: skip
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return name, path


def _stops_with_one_line_after_rotation(
    tmp_path: Path,
    workflow: Callable[[Path], tuple[str, Path]],
    command: Callable[[str, Path, int], list[str]],
    ready: Callable[[str, int, SecuredBroker], bool],
) -> None:
    """Start `command` (a long-running `streams` server) on a private SASL broker, wait
    until `ready`, rotate the password away: it must exit 1 with one `error:` line saying
    what to check, and no password in anything it wrote."""

    from streams.kafka.client_logs import REFUSED_GRACE_S
    from tests.integration.secured_broker import secured_broker_control

    with secured_broker_control(tmp_path / "broker") as control:
        broker = control.broker
        name, topology = workflow(tmp_path)
        config = _properties(tmp_path / "client.properties", broker, broker.password)
        _apply(topology, config)
        port = _free_port()
        log_path = tmp_path / "server.log"
        argv = [*command(name, topology, port), "--client-config", str(config)]
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "streams", *argv], env=_env(), stdout=log,
                stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready(name, port, broker):
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
            control.restart_with_password("rotated-" + broker.password)
            rotated_at = time.monotonic()
            code = server.wait(REFUSED_GRACE_S + 240)
            print(f"{argv[0]} stopped {time.monotonic() - rotated_at:.0f} s after the rotation")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
    output = log_path.read_text()
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "refused the credentials" in errors[0] and "sasl.password" in errors[0]
    assert broker.password not in output


def _answers(url: str, accepted: int = 200) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == accepted
    except httpx.TransportError:
        return False


def test_a_running_intake_whose_password_is_rotated_away_stops_with_one_line(
    tmp_path: Path,
) -> None:
    """As the worker: an intake whose cluster refuses its credentials for good stops with
    one line saying what to check and exit 1 (an orchestrator restarts it with the new
    secret), instead of logging a traceback per I/O iteration while answering 503 forever
    (9,800 log lines in 270 s before the fix)."""
    import httpx

    def ready(name: str, port: int, _broker: SecuredBroker) -> bool:
        if not _answers(f"http://127.0.0.1:{port}/healthz"):
            return False
        run = {"tenant": "acme", "payload": {"n": 1}}
        url = f"http://127.0.0.1:{port}/v1/workflows/{name}/runs"
        answer = httpx.post(url, json=run, timeout=10)
        assert answer.status_code == 202, answer.text
        return True

    _stops_with_one_line_after_rotation(
        tmp_path, _workflow, lambda _, file, port: ["intake", str(file), "--port", str(port)], ready
    )


def test_a_running_review_server_whose_password_is_rotated_away_stops_with_one_line(
    tmp_path: Path,
) -> None:
    """`streams review` too (its readers ride out outages, so without the watchdog it
    would answer errors forever)."""
    _stops_with_one_line_after_rotation(
        tmp_path,
        _workflow_with_review,
        lambda _, file, port: ["review", str(file), "--port", str(port)],
        lambda name, port, _: _answers(f"http://127.0.0.1:{port}/v1/workflows/{name}/reviews"),
    )
