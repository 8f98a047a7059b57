"""When a draining queue is polled for its next page: before its last runs are taken, once."""

from actors.rules.paging import PageTracker


def tracker(**pages: int) -> PageTracker:
    tracked = PageTracker()
    for queue, size in pages.items():
        tracked.sized(queue, size)
    return tracked


PAGE = [f"run-{n}" for n in range(16)]


def test_a_full_page_polls_again_once_few_enough_runs_wait() -> None:
    pages = tracker(q=8)
    pages.found("q", PAGE, full_page=True)
    woken = [pages.taken(run) for run in PAGE]
    # 16 waiting; half of a page of 8 is 4, left once the 12th run is taken.
    assert woken[:11] == [[]] * 11
    assert woken[11] == ["q"]
    assert woken[12:] == [[]] * 4  # once per page, not once per run after that


def test_the_next_poll_asks_for_the_runs_still_waiting_on_top_of_its_page() -> None:
    pages = tracker(q=8)
    pages.found("q", PAGE, full_page=True)
    for run in PAGE[:12]:
        pages.taken(run)
    assert pages.repeated("q") == 4  # still Scheduled on the server: the answer repeats them
    pages.found("q", [f"next-{n}" for n in range(16)], full_page=True)
    assert pages.repeated("q") == 20
    woken = [pages.taken(run) for run in [*PAGE[12:], *(f"next-{n}" for n in range(16))]]
    assert woken.count(["q"]) == 1  # the second page wakes the queue again, once


def test_a_page_that_was_not_full_means_drained_and_wakes_nothing() -> None:
    pages = tracker(q=8)
    pages.found("q", PAGE[:5], full_page=False)
    assert [pages.taken(run) for run in PAGE[:5]] == [[]] * 5
    assert pages.repeated("q") == 0


def test_a_full_page_of_runs_already_held_changes_nothing() -> None:
    pages = tracker(q=8)
    pages.found("q", PAGE, full_page=True)
    for run in PAGE[:12]:
        pages.taken(run)
    pages.found("q", [], full_page=True)  # the same runs again, none admitted
    assert [pages.taken(run) for run in PAGE[12:]] == [[]] * 4
    assert pages.repeated("q") == 0


def test_queues_are_woken_independently_and_a_forgotten_one_never() -> None:
    pages = tracker(a=1, b=1, c=1)
    pages.found("a", ["a1", "a2"], full_page=True)
    pages.found("b", ["b1"], full_page=True)
    pages.found("c", ["c1"], full_page=True)
    pages.forget("c")
    assert pages.taken("a1") == []
    assert pages.taken("b1") == ["b"]
    assert pages.taken("a2") == ["a"]
    assert pages.taken("c1") == []


def test_each_queue_is_polled_again_at_half_of_its_own_page() -> None:
    pages = tracker(cheap=8, dear=16)
    pages.found("cheap", [f"c{n}" for n in range(8)], full_page=True)
    pages.found("dear", [f"d{n}" for n in range(16)], full_page=True)
    cheap = [pages.taken(f"c{n}") for n in range(8)]
    dear = [pages.taken(f"d{n}") for n in range(16)]
    assert cheap.index(["cheap"]) == 3  # 4 of 8 left
    assert dear.index(["dear"]) == 7  # 8 of 16 left


def test_a_queue_never_sized_is_polled_again_only_once_its_page_is_taken() -> None:
    pages = PageTracker()
    pages.found("q", PAGE, full_page=True)
    woken = [pages.taken(run) for run in PAGE]
    assert woken == [[]] * 15 + [["q"]]
