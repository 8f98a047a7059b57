"""The benchmark still runs end to end: it is a script, so nothing else would notice it rot.

Small numbers and the two cheapest contenders keep this quick; it checks the shape of what
the benchmark reports and that it leaves no process behind, never how fast anything was
(speed on a shared 2-core CI machine says nothing about the code).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

BENCHMARK = ROOT / "examples" / "benchmark.py"


def test_benchmark_reports_ceiling_and_ours_with_positive_rates(
    api_url: str, tmp_path: Path
) -> None:
    report = tmp_path / "benchmark.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--api",
            api_url,
            "--runs",
            "20",
            "--rounds",
            "2",
            "--inflight",
            "20",
            "--cpu-window",
            "2",
            "--contenders",
            "ceiling,ours",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    table = result.stdout.splitlines()
    assert any(line.startswith("contender") and "drain runs/s" in line for line in table)
    assert any(line.startswith("ceiling ") for line in table)
    assert any(line.startswith("ours ") for line in table)

    data = json.loads(report.read_text())
    assert set(data["contenders"]) == {"ceiling", "ours"}
    for name in ("ceiling", "ours"):
        drain = data["contenders"][name]["drain"]
        assert drain["runs"] == 20
        assert drain["runs_with_pid"] > 0
        assert drain["runs_per_second"] > 0
        assert drain["steady_runs_per_second"] > 0
        rates = data["contenders"][name]["drain_rounds"]
        assert len(rates) == 2 and all(rate > 0 for rate in rates)
        assert drain["steady_runs_per_second"] == min(rates)  # of two rounds, the lower median
    footprint = data["contenders"]["ours"]["footprint"]
    assert footprint["in_flight"] > 0
    assert footprint["rss_mib"] > 0
    assert footprint["leftover_processes"] == 0
    assert data["contenders"]["ceiling"]["footprint"] is None
