"""Visitors to the running app: nothing of one reaches another."""

import threading
import uuid

from gradio_http import Raw, small, wait_until

from kolors_app.metadata.png_chunks import read_parameters

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


def test_a_new_session_keeps_no_copy_of_the_page(served):
    """Gradio copied the config of every block into each new session (for deep links, which are off): 60-110 ms
    of the event loop per program request with a new session. A session now starts empty and still works."""
    raw = Raw(served.url)
    session = uuid.uuid4().hex[:12]
    done = raw.follow(session, raw.join("text_to_image", small(num_inference_steps=1), session))
    assert done["success"], done
    state = served.app.state_holder[session]
    assert not list(state.components)  # what /deep_link would have written out
    # A component replaced by an update still gets its own config in that session.
    block_id = next(iter(state.blocks_config.blocks))
    state[block_id] = state.blocks_config.blocks[block_id]
    assert state.config_values[block_id]["id"] == block_id
    assert served.app.config["components"]  # the page's own config is whole
