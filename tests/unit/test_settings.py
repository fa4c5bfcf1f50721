"""Settings dataclasses filled from defaults, a --config YAML file, then flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import from_sources, load, setting, split_host_port


@dataclass(frozen=True)
class Demo:
    node_name: str = setting(None, "this node's name", required=True)
    listen: str = setting("127.0.0.1:9000", "HOST:PORT to serve on")
    workers: int = setting(4, "how many workers")
    interval: float = setting(1.5, "seconds between ticks")
    verbose: bool = setting(False, "log more")
    data_dir: Path | None = setting(None, "where state lives")


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def run_load(argv: list[str]) -> Demo:
    return load(Demo, argv, prog="demo", description="a demo program")


# -- precedence ---------------------------------------------------------------------------


def test_defaults_apply_when_nothing_is_given() -> None:
    """Fields not given anywhere keep the defaults declared with setting()."""
    s = run_load(["--node-name", "edge-1"])
    assert s == Demo(node_name="edge-1")
    assert (s.listen, s.workers, s.interval, s.verbose, s.data_dir) == (
        "127.0.0.1:9000",
        4,
        1.5,
        False,
        None,
    )


def test_yaml_values_override_defaults(tmp_path: Path) -> None:
    """Values from the --config file replace defaults, converted to the field types."""
    config = write_yaml(
        tmp_path,
        "node_name: edge-2\nworkers: 8\ninterval: 0.25\nverbose: true\ndata-dir: /var/lib/demo\n",
    )
    s = run_load(["--config", str(config)])
    assert s == Demo(
        node_name="edge-2",
        workers=8,
        interval=0.25,
        verbose=True,
        data_dir=Path("/var/lib/demo"),
    )
    assert isinstance(s.data_dir, Path)


def test_flags_override_yaml(tmp_path: Path) -> None:
    """A flag wins over the same key in the file; keys only in the file still apply."""
    config = write_yaml(tmp_path, "node_name: from-file\nworkers: 8\ninterval: 2\n")
    s = run_load(["--config", str(config), "--workers", "16", "--node-name", "from-flag"])
    assert s.node_name == "from-flag"
    assert s.workers == 16
    assert isinstance(s.workers, int)
    assert s.interval == 2.0
    assert isinstance(s.interval, float)


@pytest.mark.parametrize(
    ("yaml_text", "argv", "expected"),
    [
        pytest.param("", ["--verbose"], True, id="flag-on"),
        pytest.param("", ["--no-verbose"], False, id="flag-off"),
        pytest.param("verbose: true\n", ["--no-verbose"], False, id="no-flag-beats-yaml"),
        pytest.param("verbose: false\n", ["--verbose"], True, id="flag-beats-yaml"),
        pytest.param("verbose: 'yes'\n", [], True, id="yaml-string-yes"),
        pytest.param("verbose: 'off'\n", [], False, id="yaml-string-off"),
    ],
)
def test_bool_flags(tmp_path: Path, yaml_text: str, argv: list[str], expected: bool) -> None:
    """Booleans take --x / --no-x on the command line and true/false words in YAML."""
    config = write_yaml(tmp_path, "node_name: n\n" + yaml_text)
    assert run_load(["--config", str(config), *argv]).verbose is expected


# -- errors -------------------------------------------------------------------------------


def test_unknown_yaml_key_is_a_config_error(tmp_path: Path) -> None:
    """from_sources names every key that is not a setting."""
    config = write_yaml(tmp_path, "node_name: n\ncolour: blue\nspeed: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\): colour, speed"):
        from_sources(Demo, config, {})


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        pytest.param("workers: many\n", "workers", id="word-for-int"),
        pytest.param("workers: [1, 2]\n", "workers", id="list-for-int"),
        pytest.param("interval: fast\n", "interval", id="word-for-float"),
        pytest.param("verbose: maybe\n", "verbose", id="word-for-bool"),
        pytest.param("workers: 2.5\n", "workers", id="fraction-for-int"),
        pytest.param("workers: true\n", "workers", id="bool-for-int"),
        pytest.param("listen: [a, b]\n", "listen", id="list-for-str"),
    ],
)
def test_bad_type_is_a_config_error(tmp_path: Path, yaml_text: str, field: str) -> None:
    """A YAML value that is not of the field's type raises ConfigError naming the setting,
    rather than being coerced into something else."""
    config = write_yaml(tmp_path, "node_name: n\n" + yaml_text)
    with pytest.raises(ConfigError, match=f"setting {field}"):
        from_sources(Demo, config, {})


def test_bad_flag_value_is_a_config_error() -> None:
    """A flag value that does not convert to the field type raises ConfigError."""
    with pytest.raises(ConfigError, match="cannot use 'lots' as int"):
        from_sources(Demo, None, {"node_name": "n", "workers": "lots"})


def test_missing_required_setting_is_a_config_error() -> None:
    """A required setting given neither in the file nor as a flag raises ConfigError."""
    with pytest.raises(ConfigError, match=r"missing required setting.*--node-name"):
        from_sources(Demo, None, {"workers": "3"})


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        pytest.param("- a\n- b\n", "must hold a mapping", id="not-a-mapping"),
        pytest.param("node_name: [unclosed\n", "cannot read config file", id="bad-yaml"),
    ],
)
def test_unusable_config_file_is_a_config_error(tmp_path: Path, yaml_text: str, words: str) -> None:
    """A config file that is not a YAML mapping raises ConfigError naming the file."""
    config = write_yaml(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=words):
        from_sources(Demo, config, {})


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A --config path that cannot be read raises ConfigError naming the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        from_sources(Demo, missing, {})


@pytest.mark.parametrize(
    ("yaml_text", "argv", "words"),
    [
        pytest.param(
            "node_name: n\ncolour: blue\n", [], "unknown setting(s): colour", id="unknown"
        ),
        pytest.param(
            "node_name: n\n",
            ["--workers", "lots"],
            "setting workers: cannot use 'lots' as int",
            id="bad-type",
        ),
        pytest.param("workers: 2\n", [], "missing required setting(s): --node-name", id="missing"),
    ],
)
def test_load_exits_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, argv: list[str], words: str
) -> None:
    """load turns a ConfigError into a usage error: exit status 2 and the reason on stderr."""
    config = write_yaml(tmp_path, yaml_text)
    with pytest.raises(SystemExit) as info:
        run_load(["--config", str(config), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "demo: error:" in err
    assert words in err


def test_load_rejects_an_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command-line flag is a usage error naming the flag."""
    with pytest.raises(SystemExit) as info:
        run_load(["--node-name", "n", "--colour", "blue"])
    assert info.value.code == 2
    assert "--colour" in capsys.readouterr().err


def test_help_lists_each_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows every setting as a flag with its help text and default or (required)."""
    with pytest.raises(SystemExit) as info:
        run_load(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--node-name" in out
    assert "this node's name (required)" in out
    assert "how many workers (default: 4)" in out
    assert "--verbose, --no-verbose" in out


# -- HOST:PORT ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("127.0.0.1:10000", ("127.0.0.1", 10000), id="ipv4"),
        pytest.param("0.0.0.0:0", ("0.0.0.0", 0), id="port-zero"),
        pytest.param("cloud.example:443", ("cloud.example", 443), id="hostname"),
        pytest.param("[::1]:8080", ("::1", 8080), id="ipv6-brackets"),
        pytest.param("localhost:65535", ("localhost", 65535), id="highest-port"),
    ],
)
def test_split_host_port_accepts(value: str, expected: tuple[str, int]) -> None:
    """split_host_port returns (host, port) with IPv6 brackets removed."""
    assert split_host_port(value, "--listen") == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("localhost", id="no-port"),
        pytest.param("localhost:", id="empty-port"),
        pytest.param(":8080", id="no-host"),
        pytest.param("localhost:http", id="named-port"),
        pytest.param("localhost:-1", id="negative-port"),
        pytest.param("[::1]", id="ipv6-without-port"),
        pytest.param("localhost:65536", id="port-out-of-range"),
    ],
)
def test_split_host_port_rejects(value: str) -> None:
    """split_host_port raises ConfigError naming the setting and the value for bad addresses."""
    with pytest.raises(ConfigError) as info:
        split_host_port(value, "--listen")
    assert "--listen must be HOST:PORT" in str(info.value)
    assert repr(value) in str(info.value)
