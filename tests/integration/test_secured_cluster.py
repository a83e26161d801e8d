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
from collections.abc import Iterator
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
