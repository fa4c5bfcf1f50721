"""edgecore's settings: every flag, its default, and what it means. Loaded once in main()."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import setting

MiB = 1024 * 1024


@dataclass(frozen=True)
class EdgeSettings:
    data_dir: Path = setting(
        None, "directory for edgecore's state (SQLite store, outbox)", required=True
    )
    node_name: str = setting(None, "this edge node's name (a Kubernetes node name)", required=True)
    cloud: str = setting("127.0.0.1:10000", "HOST:PORT of cloudcore's HubService")
    token: str = setting(
        "",
        "join token (`keadm gettoken` prints one): spent once, on the first start, for the "
        "node's client certificate (kept in DATA_DIR/pki and renewed by the node after that)",
    )
    bootstrap: str = setting(
        "",
        "HOST:PORT of cloudcore's BootstrapService, where --token is spent (default: the "
        "host of --cloud, port 10002)",
    )
    join_only: bool = setting(
        False,
        "get the node's certificate (spending --token if it has none) and exit: to provision a "
        "node ahead of time, or to give grpcurl a node certificate",
    )
    insecure_hub: bool = setting(
        False,
        "connect to the hub in plaintext, without a certificate (only against a cloudcore "
        "started with --insecure-hub; for debugging, never on a real network)",
    )
    cert_rotate_fraction: float = setting(
        0.8, "renew the node's certificate when this fraction of its lifetime has passed"
    )
    max_message_bytes: int = setting(4 * MiB, "largest gRPC message edgehub sends or accepts")
    keepalive_interval: float = setting(15.0, "seconds between keepalives to the cloud")
    keepalive_timeout: float = setting(30.0, "seconds of cloud silence before reconnecting")
    reconnect_initial: float = setting(
        1.0, "first reconnect delay in seconds (then doubled, jittered)"
    )
    reconnect_max: float = setting(30.0, "longest reconnect delay in seconds")
    resend_interval: float = setting(5.0, "seconds before an un-acked upstream message is resent")
    max_inflight: int = setting(2000, "most un-acked upstream messages at a time")
    batch_size: int = setting(100, "most envelopes per stream message")
    edged: bool = setting(True, "run pods (--no-edged: a node for the hub and devices only)")
    runtime_endpoint: str = setting(
        "", "CRI endpoint of an existing containerd (unix:///...); empty: start a private one"
    )
    images_dir: str = setting(
        "",
        "image archives (*.tar: OCI layout or `docker save`) imported at start; one that cannot "
        "be read is skipped with an error line (default: DATA_DIR/images)",
    )
    cni_bridge: str = setting("kubeedge0", "Linux bridge of the private containerd's pod network")
    pod_cidr: str = setting("10.244.0.0/24", "subnet pod IPs are allocated from")
    register_with_taints: str = setting(
        "", "taints the node registers with, as the kubelet takes them: key[=value]:Effect,..."
    )
    node_status_interval: float = setting(10.0, "seconds between node status reports")
    lease_duration: int = setting(40, "seconds the node's Lease is valid without renewal")
    lease_renew_interval: float = setting(10.0, "seconds between Lease renewals")
    pod_sync_interval: float = setting(1.0, "seconds between checks of each pod's containers")
    crash_backoff_initial: float = setting(
        10.0, "first delay before restarting a crashed container"
    )
    container_log_max_bytes: int = setting(
        10 * MiB,
        "a running container's log is rotated once it holds this many bytes (the kubelet's "
        "containerLogMaxSize; at least 65536)",
    )
    container_log_max_files: int = setting(
        5, "log files kept per container, the live one included (containerLogMaxFiles; >= 2)"
    )
    max_log_streams: int = setting(
        32, "most `kubectl logs` streams served at once; more are refused (429)"
    )
    crash_backoff_max: float = setting(300.0, "longest delay before restarting a crashed container")
    mqtt_mode: str = setting(
        "internal", "internal: run the embedded MQTT broker; external: use --mqtt-broker"
    )
    mqtt_listen: str = setting("127.0.0.1:1883", "HOST:PORT the embedded MQTT broker listens on")
    mqtt_broker: str = setting(
        "tcp://127.0.0.1:1883", "the external MQTT broker (tcp://HOST:PORT) in external mode"
    )
    mqtt_username: str = setting("", "MQTT username (broker checks it when set; client sends it)")
    mqtt_password: str = setting("", "MQTT password that goes with --mqtt-username")
    mqtt_tls_cert: str = setting("", "PEM certificate: the embedded broker serves MQTT over TLS")
    mqtt_tls_key: str = setting("", "PEM private key of --mqtt-tls-cert")
    mqtt_qos: int = setting(0, "QoS (0 or 1) of edgecore's MQTT subscriptions and publishes")
    mqtt_keepalive: int = setting(30, "seconds of MQTT keepalive for edgecore's own client")
    mqtt_reconnect: float = setting(
        1.0, "first delay before edgecore's client reconnects to the broker (doubled, jittered)"
    )
    mqtt_session_expiry: float = setting(
        86400.0, "seconds a disconnected persistent MQTT session is kept (0: forever)"
    )
    stop_grace: float = setting(5.0, "seconds modules get to stop on shutdown")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
