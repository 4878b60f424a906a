"""Visitors to the running app: nothing of one reaches another."""

import threading
import uuid

from gradio_http import Raw, small, wait_until

from kolors_app.metadata import read_parameters

HOSTILE_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


# The history is kept in the browser: tests/test_ui_history.py checks that the server never takes it.


def test_one_visitors_stop_does_not_stop_another(served):
    raw = Raw(served.url)
    runner_session, other_session = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    result = {}
    reader = threading.Thread(target=lambda: result.update(raw.follow(runner_session, raw.join(
        "text_to_image", small(prompt="mine", num_inference_steps=30), runner_session))))
    reader.start()
    assert wait_until(lambda: served.ctx.manager.run_lock.locked(), timeout=60)
    assert raw.direct(raw.stop_of["text_to_image"], [], other_session).status_code == 200
    reader.join(60)
    assert result["success"] and result["output"]["data"][1]["images"][0]["prompt"] == "mine", result


def test_html_in_prompts_is_kept_as_plain_data(client, raw):
    gallery, summary = client.predict(*small(prompt=HOSTILE_TEXT, negative_prompt=HOSTILE_TEXT),
                                      api_name="/text_to_image")
    assert summary["images"][0]["prompt"] == HOSTILE_TEXT
    assert gallery[0]["caption"] == "seed 1"  # captions never carry the prompt
    stored = read_parameters(gallery[0]["image"])
    assert stored["prompt"] == stored["negative_prompt"] == HOSTILE_TEXT
