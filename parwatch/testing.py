"""`parwatch up` driven from outside, for end-to-end tests and benchmarks (nothing here runs in the product)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parwatch.supervisor import LOG_FILE, plan_services
from shared.embedded import free_port


@dataclass(frozen=True)
class ServiceUrls:
    status: str
    metrics: str
    health: str


@dataclass(frozen=True)
class Ready:
    """What `parwatch up` printed once its services answered."""

    nats_url: str
    services: dict[str, ServiceUrls]


_SERVICE_LINE = re.compile(r"^  (\w+)\s+(up|degraded|starting|crashed)\s+(http://\S+/metrics)\s+(http://\S+/health)\s*$")
_NATS_LINE = re.compile(r"^  NATS\s+(nats://\S+)")


class Stack:
    """`parwatch up` (what `make run` runs) in a subprocess: free ports, a data folder of its own, the output
    in a log file. For end-to-end tests and benchmarks that drive the product from outside."""

    def __init__(self, *, data_dir: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log = log
        self.env = self.environment(data_dir) | dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    @staticmethod
    def environment(data_dir: Path) -> dict[str, str]:
        """The caller's environment without its PARWATCH_ settings, every port moved to a free one."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARWATCH_")}
        env["PARWATCH_DATA_DIR"] = str(data_dir)
        env["PARWATCH_EMBEDDED_NATS_PORT"] = str(free_port())  # never 14222, nor a system nats on 4222
        env["PARWATCH_EMBEDDED_NATS_MONITOR_PORT"] = "0"
        env["PARWATCH_STOP_TIMEOUT"] = "30"
        for plan in plan_services({}):
            env[plan.port_env] = str(free_port())
        return env

    def start(self, *, cwd: Path | None = None) -> None:
        parwatch = Path(sys.executable).parent / "parwatch"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop/kill
        self.proc = subprocess.Popen([str(parwatch), "up"], cwd=cwd or self.data_dir.parent, env=self.env,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        """What `parwatch up` printed on its stdout and stderr (what an operator's terminal shows)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_text(self) -> str:
        """The stack's log file in its data folder: every service's output, each alert and notice."""
        path = self.data_dir / LOG_FILE
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def wait_ready(self, timeout: float = 90.0) -> Ready:
        """Parse the URL block `parwatch up` prints once the services answer."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"parwatch up exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            text = self.text()
            if "parwatch is running" in text and "Stop with Ctrl-C" in text:
                block = text[text.index("parwatch is running") :].splitlines()
                nats_url = next(m.group(1) for line in block if (m := _NATS_LINE.match(line)))
                services = {
                    m.group(1): ServiceUrls(m.group(2), m.group(3), m.group(4))
                    for line in block
                    if (m := _SERVICE_LINE.match(line))
                }
                return Ready(nats_url=nats_url, services=services)
            time.sleep(0.1)
        raise TimeoutError(f"parwatch up printed no URL block in {timeout}s:\n{self.text()[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._out is not None:
            self._out.close()
