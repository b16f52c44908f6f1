"""Debian's ``prometheus`` binary on a free loopback port, for the scrape test."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import yaml

from serving.local_process import free_port


def scrape_target(metrics_url: str) -> str:
    """``host:port`` of a ``http://host:port/metrics`` URL."""
    return urlsplit(metrics_url).netloc


class Prometheus:
    """Prometheus scraping `targets` (job -> metrics URL) every second.

    Args:
        targets: Job name -> ``http://host:port/metrics``.
        rule_files: Rule files to load (evaluated every second).
        work_dir: Config, TSDB and log.
    """

    def __init__(
        self, targets: dict[str, str], rule_files: list[Path], work_dir: Path
    ) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: `make setup` installs Debian's package"
        self.binary = binary
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config = work_dir / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [
                        {
                            "job_name": job,
                            "metrics_path": urlsplit(url).path,
                            "static_configs": [{"targets": [scrape_target(url)]}],
                        }
                        for job, url in targets.items()
                    ],
                }
            )
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work_dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """``promtool check config`` on the written configuration."""
        promtool = shutil.which("promtool")
        assert promtool, "promtool missing: `make setup` installs Debian's package"
        return subprocess.run(
            [promtool, "check", "config", str(self.config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def __enter__(self) -> Self:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.work_dir / 'tsdb'}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):  # noqa: S310
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()[-3000:]}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer.

        Raises:
            AssertionError: Prometheus answered an error (bad query, ...).
        """
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback
                f"{self.url}/api/v1/{path}?{query}", timeout=10
            ) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on an evaluation error)."""
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result = data["result"]
        return result if isinstance(result, list) else [{"value": result}]

    def value(self, expr: str) -> float:
        """Sum of an instant query's sample values (0 when empty)."""
        return sum(float(s["value"][1]) for s in self.query(expr))
