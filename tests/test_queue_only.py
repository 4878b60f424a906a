"""Generation never skips the queue: direct POSTs are refused, the queued routes work."""

import httpx
import pytest
from gradio_http import NO_CONTROL, NO_CREATIVE

ARGUMENTS = ["a cat", "", 256, 256, 2, 5.0, "Euler", 1, 1]
# gradio's REST route takes every input in order (gradio_client fills in the defaults itself): the request's,
# then the three ControlNet units and the creative accordion's values.
FULL_ARGUMENTS = ARGUMENTS + NO_CONTROL + NO_CREATIVE


@pytest.mark.parametrize("name", ["text_to_image", "image_to_image", "ip_adapter"])
def test_direct_post_to_a_generate_endpoint_is_refused(live_app, name):
    answer = httpx.post(f"{live_app}gradio_api/run/{name}", json={"data": ARGUMENTS}, timeout=30)
    assert answer.status_code == 404
    assert "join the queue" in answer.json()["detail"]


def test_the_queued_route_still_generates(live_app):
    event = httpx.post(f"{live_app}gradio_api/call/text_to_image", json={"data": FULL_ARGUMENTS}, timeout=30)
    assert event.status_code == 200
    stream = httpx.get(f"{live_app}gradio_api/call/text_to_image/{event.json()['event_id']}", timeout=120)
    assert "event: complete" in stream.text and '"seed": 1' in stream.text
