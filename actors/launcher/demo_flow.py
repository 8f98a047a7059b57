"""The demo flow the launcher deploys with `--demo N`: a few tasks that take a moment."""

from __future__ import annotations

import random
import time

from prefect import flow, get_run_logger, task


@task
def measure(step: int) -> float:
    took = random.uniform(0.1, 0.5)  # noqa: S311 - demo timing, not cryptography
    time.sleep(took)
    return took


@flow(name="actor-agent-demo")
def demo(steps: int = 3) -> float:
    total = sum(measure(step) for step in range(steps))
    get_run_logger().info("demo flow finished %d steps in %.2fs", steps, total)
    return total


@flow(name="actor-agent-sleeper")
def sleeper(seconds: float = 300.0) -> None:
    """A flow that waits: something to cancel in examples/cancel_latency.py."""
    time.sleep(seconds)
