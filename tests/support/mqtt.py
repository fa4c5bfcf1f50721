"""Debian's mosquitto, mosquitto_sub and mosquitto_pub, as tests and benchmarks use them.

- `start_mosquitto` runs a private mosquitto on a free loopback port (`listener PORT 127.0.0.1`,
  `allow_anonymous true`), from a config file in the test's directory;
- `Subscriber` runs `mosquitto_sub -v -d` and collects the messages it prints; it is ready once
  mosquitto_sub printed its SUBACK, so nothing published after `start()` is missed (it runs
  under `stdbuf -oL`: into a pipe, mosquitto_sub would hold its lines until it exits);
- `publish` runs `mosquitto_pub` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import Proc
from tests.support.waiting import eventually, free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    proc: Proc
    port: int
    conf: Path

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.proc.terminate()

    async def restart(self) -> None:
        await self.stop()
        self.proc = await _run(self.conf, self.port)


class BrokerProc(Proc):
    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode


async def _accepts(proc: BrokerProc, port: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if proc.returncode is not None:
                    raise MosquittoExited(f"mosquitto exited: {proc.output()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class MosquittoExited(RuntimeError):
    """mosquitto stopped before it listened (e.g. another process took the free port)."""


async def _run(conf: Path, port: int) -> Proc:
    proc = BrokerProc([MOSQUITTO, "-c", str(conf)], "mosquitto")
    await proc.start()
    await _accepts(proc, port, 10)
    return proc


def write_config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return conf


async def start_mosquitto(directory: Path, attempts: int = 3) -> Mosquitto:
    """A mosquitto on a free port; a port taken between choosing and binding is chosen again."""
    for attempt in range(attempts):
        port = free_port()
        conf = write_config(directory, port)
        try:
            return Mosquitto(await _run(conf, port), port, conf)
        except MosquittoExited:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A mosquitto_sub process; `messages` in arrival order."""

    def __init__(self, port: int, topic: str, *extra: str) -> None:
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic]
        args += ["-v", "-d"]
        self.proc = Proc([*args, *extra], f"mosquitto_sub {topic}")

    async def start(self, timeout: float = 10.0) -> Subscriber:
        await self.proc.start()
        await self.proc.wait_line("Subscribed (mid", timeout)
        return self

    async def stop(self) -> None:
        await self.proc.terminate()

    @property
    def messages(self) -> list[Received]:
        out = []
        for line in self.proc.lines:
            if line.startswith(("Client ", "Subscribed (mid")):
                continue  # mosquitto_sub's -d debug lines
            topic, _, payload = line.partition(" ")
            out.append(Received(topic, payload))
        return out

    async def wait_count(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` messages, once that many arrived."""
        await eventually(lambda: len(self.messages) >= count, timeout, f"{count} message(s)")
        return self.messages[:count]

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(
        self,
        suffix: str,
        predicate: Callable[[Any], bool] = lambda _: True,
        timeout: float = 10.0,
    ) -> Any:
        """The JSON payload of the first message on a topic ending in `suffix` that matches."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for msg in self.on(suffix):
                with contextlib.suppress(ValueError):
                    payload = msg.json()
                    if predicate(payload):
                        return payload
            if loop.time() > deadline:
                seen = "\n".join(f"{m.topic} {m.payload[:200]}" for m in self.messages[-20:])
                raise AssertionError(f"no message on *{suffix} matched in {timeout}s; saw:\n{seen}")
            await asyncio.sleep(0.02)


async def publish(port: int, topic: str, payload: Any, *extra: str) -> None:
    """mosquitto_pub once; `payload` is sent as is (str/bytes) or as JSON."""
    data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    message = data.decode() if isinstance(data, bytes) else data
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        topic,
        "-m",
        message,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    if proc.returncode != 0:
        raise AssertionError(f"mosquitto_pub {topic} failed: {(out + err).decode()}")
