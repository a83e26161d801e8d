"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: each
service command is a real `streams` CLI entry point, Kafka matches the pinned version,
Prometheus scrapes every streams process on an address it can reach and loads the alert
rules (promtool checks its config), and Grafana is provisioned with it and the dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from streams.cli import app
from streams.config import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, object]] = data["services"]
    return services


def test_kafka_image_matches_the_pinned_version() -> None:
    assert _compose()["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    pom = (ROOT / "streams/kafka/resources/broker-pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom


def test_every_streams_service_command_is_a_real_cli_entry_point() -> None:
    commands = [
        command
        for service in _compose().values()
        if isinstance(command := service.get("command"), list) and command[0] == "streams"
    ]
    assert len(commands) >= 2
    runner = CliRunner()
    for command in commands:
        assert isinstance(command, list)
        # Walk the command path up to the first option, then ask that command for --help.
        path = [part for part in command[1:] if not part.startswith("-")][:2]
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (command, result.output)
        for option in (part for part in command if part.startswith("--")):
            assert option in result.output, (command, option)


def test_topology_files_named_in_compose_exist() -> None:
    for service in _compose().values():
        command = service.get("command")
        if isinstance(command, list):
            for part in command:
                if part.endswith(".yaml"):
                    assert (ROOT / part).is_file(), part


# --------------------------------------------------------------------------- monitoring


def _service(name: str) -> dict[str, object]:
    services = _compose()
    assert name in services, f"docker-compose.yml has no {name} service"
    return services[name]


def _volumes(name: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    mounts: dict[str, Path] = {}
    volumes = _service(name).get("volumes", [])
    assert isinstance(volumes, list)
    for volume in volumes:
        host, container, *_mode = str(volume).split(":")
        assert host.startswith("./"), volume
        mounts[container] = ROOT / host
    return mounts


def _host_path(service: str, container_path: str) -> Path:
    """Where a path inside a service's container comes from on the host."""
    for mount, host in sorted(_volumes(service).items(), key=lambda m: -len(m[0])):
        if container_path == mount or container_path.startswith(mount.rstrip("/") + "/"):
            return host / container_path[len(mount) :].lstrip("/")
    raise AssertionError(f"{service}: {container_path} is not mounted from the repository")


def test_every_bind_mount_exists_in_the_repository() -> None:
    for name, service in _compose().items():
        if service.get("volumes"):
            for container, host in _volumes(name).items():
                assert host.exists(), (name, container, host)


def _prometheus_config() -> dict[str, object]:
    config = yaml.safe_load(_host_path("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    assert isinstance(config, dict)
    return config


def _scrape_targets() -> list[tuple[str, str, int]]:
    jobs = _prometheus_config()["scrape_configs"]
    assert isinstance(jobs, list)
    return [
        (job["job_name"], target.split(":")[0], int(target.split(":")[1]))
        for job in jobs
        for static in job["static_configs"]
        for target in static["targets"]
    ]


def _option(command: list[str], name: str, default: str | None = None) -> str | None:
    return command[command.index(name) + 1] if name in command else default


def test_prometheus_scrapes_a_reachable_endpoint_of_every_streams_service() -> None:
    # A metrics server bound to 127.0.0.1 inside a container cannot be scraped from the
    # Prometheus container: each target must listen on every interface, on that port.
    targets = _scrape_targets()
    scraped = {host for _job, host, _port in targets}
    for name, service in _compose().items():
        command = service.get("command")
        if isinstance(command, list) and command[:2] in (
            ["streams", "worker"],
            ["streams", "intake"],
            ["streams", "monitor"],
        ):
            assert name in scraped, f"{name} is not scraped"
    for job, host, port in targets:
        command = _service(host).get("command")
        assert isinstance(command, list), host
        if command[1] == "worker":
            assert _option(command, "--metrics-port") == str(port), (job, host)
            assert _option(command, "--metrics-host", "127.0.0.1") == "0.0.0.0", (job, host)
        elif command[1] == "intake":
            assert _option(command, "--port", "8080") == str(port), (job, host)
            assert _option(command, "--host", "127.0.0.1") == "0.0.0.0", (job, host)
        else:
            assert command[1] == "monitor", (job, host)
            assert _option(command, "--serve") == str(port), (job, host)
            assert _option(command, "--host", "127.0.0.1") == "0.0.0.0", (job, host)


def test_prometheus_loads_the_alert_rules_and_promtool_accepts_its_config(
    tmp_path: Path,
) -> None:
    from tests.promtool import run_promtool

    config = _prometheus_config()
    rule_files = config.get("rule_files")
    assert isinstance(rule_files, list)
    hosts = [_host_path("prometheus", path) for path in rule_files]
    names = {path.name for path in hosts}
    assert {"alerts.yml", "thresholds.yml"} <= names
    assert all(path.is_file() for path in hosts), hosts
    # promtool resolves rule_files on this machine: point them at the repository's files.
    config["rule_files"] = [str(path) for path in hosts]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    code, output = run_promtool("check", "config", local)
    assert code == 0, output


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    provisioning = "/etc/grafana/provisioning"
    datasources = yaml.safe_load(
        _host_path("grafana", f"{provisioning}/datasources/prometheus.yml").read_text()
    )["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    host, port = prometheus["url"].removeprefix("http://").split(":")
    assert host == "prometheus" and "prometheus" in _compose()
    assert f"{port}:{port}" in str(_service("prometheus").get("ports"))
    providers = yaml.safe_load(
        _host_path("grafana", f"{provisioning}/dashboards/streams.yml").read_text()
    )["providers"]
    (provider,) = providers
    dashboards = list(_host_path("grafana", provider["options"]["path"]).glob("*.json"))
    assert dashboards, "no dashboard JSON where the provider looks"
    uids = {json.loads(d.read_text())["uid"] for d in dashboards}
    assert "streams" in uids
