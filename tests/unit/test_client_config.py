"""Client settings for secured clusters (streams.kafka.client_config, streams.config): a
client.properties file and STREAMS_KAFKA_* variables become librdkafka settings and back,
the environment wins over the file, Java-only keys are refused with what to use instead,
and no secret ever shows in a repr, a description or an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import load_settings
from streams.errors import ConfigError
from streams.kafka.client_config import (
    ClientConfig,
    build_client_config,
    consumer_settings,
    is_secret,
    parse_client_properties,
    producer_settings,
    redacted,
)

SECRET = "hunter2-Sup3r-s3cret"

_PROPERTIES = f"""\
# a comment, and a blank line below

! another comment style
bootstrap.servers = broker-1:9093,broker-2:9093
security.protocol=SASL_SSL
sasl.mechanism:SCRAM-SHA-512
sasl.username   alice
sasl.password={SECRET}
ssl.ca.location=/etc/kafka/ca.pem
ssl.key.password = {SECRET}
"""


def test_a_properties_file_reads_as_librdkafka_settings() -> None:
    settings = parse_client_properties(_PROPERTIES, "client.properties")
    assert settings == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "ssl.key.password": SECRET,
    }


def test_a_java_only_key_is_refused_with_what_librdkafka_takes_instead() -> None:
    text = f'sasl.jaas.config=org.apache...PlainLoginModule required password="{SECRET}";\n'
    with pytest.raises(ConfigError) as caught:
        parse_client_properties(text, "client.properties")
    message = str(caught.value)
    assert "client.properties" in message and "line 1" in message
    assert "sasl.username" in message and "sasl.password" in message
    assert SECRET not in message
    with pytest.raises(ConfigError, match="ssl.ca.location"):
        parse_client_properties("ssl.truststore.location=/x.jks\n", "c.properties")
    with pytest.raises(ConfigError, match="line 2"):
        parse_client_properties("security.protocol=SSL\n=nokey\n", "c.properties")


def test_streams_kafka_variables_name_librdkafka_settings_and_win_over_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "client.properties"
    path.write_text(_PROPERTIES)
    env = {
        "STREAMS_KAFKA_SASL_USERNAME": "bob",
        "STREAMS_KAFKA_SASL_PASSWORD": "from-env",
        "STREAMS_KAFKA_ENABLE_SSL_CERTIFICATE_VERIFICATION": "false",
        "STREAMS_CLIENT_CONFIG": str(path),
        "UNRELATED": "x",
    }
    settings = load_settings(env)
    assert settings.client_config_file == path
    assert settings.kafka_client_settings == {
        "sasl.username": "bob",
        "sasl.password": "from-env",
        "enable.ssl.certificate.verification": "false",
    }
    client = build_client_config(settings, client_id="streams-test")
    assert client.bootstrap_servers == "broker-1:9093,broker-2:9093"  # from the file
    assert client.client_id == "streams-test"
    assert client.extra["sasl.username"] == "bob"
    assert client.extra["sasl.password"] == "from-env"
    assert client.extra["sasl.mechanism"] == "SCRAM-SHA-512"
    # KAFKA_BOOTSTRAP_SERVERS names the cluster above everything else; --client-config
    # (given here as the file argument) above STREAMS_CLIENT_CONFIG.
    other = tmp_path / "other.properties"
    other.write_text("security.protocol=SSL\n")
    chosen = build_client_config(
        load_settings({**env, "KAFKA_BOOTSTRAP_SERVERS": "b:1"}), client_id="x", file=other
    )
    assert chosen.bootstrap_servers == "b:1"
    assert chosen.extra["security.protocol"] == "SSL"
    assert "sasl.mechanism" not in chosen.extra


def test_a_missing_client_config_file_says_which() -> None:
    settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": "b:1"})
    with pytest.raises(ConfigError, match="no-such.properties"):
        build_client_config(settings, client_id="x", file=Path("/nope/no-such.properties"))


def test_no_secret_shows_in_repr_str_or_description() -> None:
    client = ClientConfig(
        "b:9093",
        extra={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "alice",
            "sasl.password": SECRET,
            "ssl.key.password": SECRET,
            "ssl.key.pem": SECRET,
            "sasl.oauthbearer.client.secret": SECRET,
            "ssl.ca.location": "/ca.pem",
        },
    )
    for text in (repr(client), str(client), client.describe(), str(redacted(client.base()))):
        assert SECRET not in text, text
    assert client.describe() == "b:9093 over SASL_SSL (PLAIN as alice), CA /ca.pem"
    assert ClientConfig("b:1").describe() == "b:1 over PLAINTEXT"
    for key in ("sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
                "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config"):  # fmt: skip
        assert is_secret(key), key
    assert not is_secret("sasl.username")


def test_settings_round_trip_to_librdkafka_and_back() -> None:
    client = ClientConfig(
        "b:9093",
        client_id="streams-plan",
        extra={"security.protocol": "SASL_SSL", "sasl.password": SECRET, "linger.ms": 7},
    )
    assert ClientConfig.from_librdkafka(client.as_librdkafka()) == client
    # The security settings reach every client role.
    for role in (consumer_settings(client, "g"), producer_settings(client)):
        assert role["security.protocol"] == "SASL_SSL"
        assert role["sasl.password"] == SECRET
    with pytest.raises(ConfigError, match="bootstrap.servers"):
        ClientConfig.from_librdkafka({"security.protocol": "SSL"})


def test_the_local_broker_settings_gain_a_sasl_ssl_listener_only_with_secure(
    tmp_path: Path,
) -> None:
    from streams.kafka.local_broker import server_properties

    plain = server_properties(tmp_path, 9092, 9093)
    assert "SASL" not in plain and "ssl" not in plain
    secure = server_properties(
        tmp_path, 9092, 9093, secure_port=9094, secure={"sasl.enabled.mechanisms": "PLAIN"}
    )
    lines = dict(line.split("=", 1) for line in secure.splitlines())
    assert lines["listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert lines["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert lines["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert lines["inter.broker.listener.name"] == "PLAINTEXT"
    assert lines["sasl.enabled.mechanisms"] == "PLAIN"


def test_a_full_prefetch_queue_is_refetched_in_milliseconds_not_a_second() -> None:
    # librdkafka postpones a partition's next fetch by fetch.queue.backoff.ms (default
    # 1000) once the queue holds queued.max.messages.kbytes, which streams keeps small:
    # a stage paused on its partition bounds then starved for up to a second at a time
    # (benchmarks.processes: 768 events/s at the default, 1,815 at 10 ms).
    settings = consumer_settings(ClientConfig("127.0.0.1:9092"), "g")
    assert int(settings["queued.max.messages.kbytes"]) <= 8192
    assert int(settings["fetch.queue.backoff.ms"]) <= 10
