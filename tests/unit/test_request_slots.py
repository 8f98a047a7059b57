"""The API edge's request slots: bounded, and a Pending proposal goes before other requests."""

import threading
import time

from actors.edges.prefect_api import RequestSlots


def test_an_urgent_request_is_served_before_earlier_ordinary_ones() -> None:
    slots = RequestSlots(1)
    slots.acquire(urgent=False)  # the one slot is busy
    order: list[str] = []
    queued = threading.Barrier(3)

    def request(name: str, urgent: bool) -> None:
        queued.wait()
        slots.acquire(urgent)
        order.append(name)
        slots.release()

    ordinary = threading.Thread(target=request, args=("ordinary", False))
    ordinary.start()
    urgent = threading.Thread(target=request, args=("urgent", True))
    urgent.start()
    queued.wait()  # both are about to wait for the slot
    # The ordinary request may have reached its wait first; the urgent one still goes first.
    deadline = time.monotonic() + 5
    while slots._urgent_waiting == 0:  # the urgent request is queued behind the busy slot
        assert time.monotonic() < deadline, "the urgent request never queued"
        threading.Event().wait(0.001)
    slots.release()
    ordinary.join(5)
    urgent.join(5)
    assert order == ["urgent", "ordinary"]
