"""Load on the running app: 16 visitors at once, 3 requests each, through the queue."""

import threading
import time

from gradio_client import Client
from gradio_client.utils import QueueError
from gradio_http import small

from kolors_app.metadata.png_chunks import read_parameters


def test_sixteen_visitors_at_once_each_get_their_own_answer_or_queue_full(live_app, capsys):
    """Sixteen API clients at once: each answer (JSON and PNG file) is its own request's, or "queue full"."""
    visitors, requests_each, bound = 16, 3, 150.0
    barrier = threading.Barrier(visitors)
    finished: dict[tuple, float] = {}
    outcomes: list[tuple] = []  # (visitor, request, "done" | "full", seconds)
    failures: list[str] = []
    began = time.monotonic()

    def visit(visitor: int) -> None:
        try:
            client = Client(live_app, verbose=False)
            barrier.wait(timeout=60)
            jobs = []
            for number in range(requests_each):  # all three at once, like a visitor clicking three times
                key, seed, prompt = (visitor, number), 1000 + 10 * visitor + number, f"visitor {visitor} #{number}"
                sent = time.monotonic()
                job = client.submit(*small(prompt=prompt, seed=seed), api_name="/text_to_image")
                job.future.add_done_callback(lambda _future, key=key: finished.setdefault(key, time.monotonic()))
                jobs.append((key, seed, prompt, sent, job))
            for key, seed, prompt, sent, job in jobs:
                try:
                    gallery, summary = job.result(timeout=max(1.0, began + bound - time.monotonic()))
                except QueueError as error:
                    assert "Queue is full" in str(error), str(error)
                    outcomes.append((*key, "full", 0.0))
                    continue
                image = summary["images"][0]
                assert (image["prompt"], image["seed"]) == (prompt, seed), (key, image)
                assert gallery[0]["caption"] == f"seed {seed}"
                stored = read_parameters(gallery[0]["image"])  # the PNG this visitor got is their own
                assert (stored["prompt"], stored["seed"]) == (prompt, seed), (key, stored)
                outcomes.append((*key, "done", finished[key] - sent))
        except Exception as error:  # collected: an assert in a thread would not fail the test
            failures.append(f"visitor {visitor}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=visit, args=(visitor,)) for visitor in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, began + bound + 30 - time.monotonic()))
    wall = time.monotonic() - began
    assert not failures, failures
    assert len(outcomes) == visitors * requests_each and wall < bound + 30, (len(outcomes), wall)
    latencies = sorted(seconds for *_key, kind, seconds in outcomes if kind == "done")
    full = sum(kind == "full" for *_key, kind, _seconds in outcomes)
    p50, p95 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    with capsys.disabled():
        print(f"\nload: {visitors} visitors x {requests_each} requests at once (256 px, 2 steps): "
              f"{len(latencies)} completed, {full} answered 'queue full'; "
              f"latency p50 {p50:.1f} s, p95 {p95:.1f} s; all answered in {wall:.1f} s")
    assert len(latencies) >= visitors
    assert Client(live_app, verbose=False).predict(*small(seed=15), api_name="/text_to_image")[1]["images"]
