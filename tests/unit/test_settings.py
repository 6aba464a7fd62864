"""Settings come from TRIBUTARY_* variables; security settings map onto aiokafka arguments."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from stream.kafka.client_args import SecuritySettingsError, aiokafka_args
from stream.settings import KafkaSettings, TopicNames


def test_defaults_are_plaintext_on_loopback():
    args = aiokafka_args(KafkaSettings())
    assert args == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("TRIBUTARY_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("TRIBUTARY_PARTITIONS", "12")
    monkeypatch.setenv("TRIBUTARY_TOPIC_TRANSACTIONS", "payments.v1")
    settings = KafkaSettings()
    assert settings.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    assert settings.partitions == 12
    assert settings.topics.for_stream("transactions") == "payments.v1"


def test_faust_style_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:9092")
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:9092"


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("TRIBUTARY_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="partitions"):
        KafkaSettings()
    with pytest.raises(ValidationError, match="security_protocol"):
        KafkaSettings(security_protocol="KERBEROS")


def test_sasl_ssl_maps_to_client_arguments_and_hides_the_password():
    settings = KafkaSettings(
        bootstrap_servers="b:9096", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc-tributary", sasl_password="s3cret",
    )
    assert "s3cret" not in repr(settings)
    args = aiokafka_args(settings)
    assert args["sasl_mechanism"] == "SCRAM-SHA-512"
    assert args["sasl_plain_username"] == "svc-tributary" and args["sasl_plain_password"] == "s3cret"
    assert isinstance(args["ssl_context"], ssl.SSLContext)


def test_sasl_without_credentials_says_what_is_missing():
    with pytest.raises(SecuritySettingsError, match="TRIBUTARY_SASL_USERNAME"):
        aiokafka_args(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"))


def test_ssl_files_without_ssl_protocol_are_a_mistake():
    with pytest.raises(SecuritySettingsError, match="TRIBUTARY_SECURITY_PROTOCOL=SSL"):
        aiokafka_args(KafkaSettings(ssl_cafile="/etc/ssl/ca.pem"))


def test_unknown_stream_has_no_topic():
    with pytest.raises(KeyError, match="no topic"):
        TopicNames().for_stream("invoices")


def test_worker_environment_reproduces_the_settings(monkeypatch):
    from stream.settings import WorkerSettings
    from stream.worker_process import worker_environment

    original = WorkerSettings(
        bootstrap_servers="k1:9093", app_id="w-7", batch_max=64, security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN", sasl_username="svc", sasl_password="s3cret", fetch_max_wait_ms=10,
        topics=TopicNames(transactions="payments.v2", outcomes="outcomes.v2"),
    )
    for name, value in worker_environment(original).items():
        monkeypatch.setenv(name, value)
    assert WorkerSettings() == original


def test_misspelt_variables_are_found_and_real_ones_are_not():
    from stream.settings import WorkerSettings

    environ = {"TRIBUTARY_BATCHMAX": "64", "TRIBUTARY_BATCH_MAX": "64", "TRIBUTARY_TOPIC_GIFTS": "g",
               "TRIBUTARY_TOPIC_GIFT": "g", "TRIBUTARY_SASL_PASSWORD": "x", "TRIBUTARY_BENCH_LOGLEVEL": "info",
               "PATH": "/bin"}
    assert WorkerSettings.unknown_variables(environ) == ["TRIBUTARY_BATCHMAX", "TRIBUTARY_TOPIC_GIFT"]
