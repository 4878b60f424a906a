"""Visitors to the running app: nothing of one reaches another; the history a browser sends is checked and capped."""

import base64
import threading
import time
import uuid

import httpx
from gradio_http import Raw, small, wait_until
from image_bytes import RED, encoded, png_bomb
from PIL import Image

from kolors_app.history import make_thumbnail
from kolors_app.metadata import read_parameters

HOSTILE_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def history_entry(number: int, **changes) -> dict:
    entry = {"id": f"entry-{number}", "time": 1_700_000_000 + number, "seeds": [number],
             "parameters": {"mode": "text_to_image", "prompt": f"entry {number}", "seed": number},
             "thumbnail": make_thumbnail(Image.new("RGB", (8, 8), "red"))}
    entry.update(changes)
    return entry


def gallery_of(answer: httpx.Response) -> list:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"][0]


def test_history_sent_back_by_a_browser_is_validated_and_capped(raw):
    bomb = "data:image/png;base64," + base64.b64encode(png_bomb(6000, 6000)).decode()  # 36 MP in 47 kB
    hostile = [history_entry(1, id=HOSTILE_TEXT), history_entry(2, thumbnail=bomb), history_entry(3, time="now"),
               history_entry(4, parameters={"prompt": "x" * 6000}), history_entry(5, seeds=[-1]), "junk", None,
               history_entry(6, thumbnail="javascript:alert(1)"), {"id": "no-time"}]
    started = time.monotonic()
    assert gallery_of(raw.direct("render", [hostile, ""])) == []
    shown = gallery_of(raw.direct("render", [[history_entry(n) for n in range(300)] + hostile, ""]))
    assert len(shown) == 200  # the cap; the hostile entries come after it
    many_bombs = [history_entry(n, thumbnail=bomb) for n in range(200)]
    assert gallery_of(raw.direct("render", [many_bombs, ""])) == []
    assert time.monotonic() - started < 20
    assert raw.direct("render", ["not a list", ""]).status_code == 200


def test_gallery_files_sent_back_are_checked_before_decoding(raw):
    bomb = raw.upload("bomb.png", png_bomb(10000, 10000))
    parameters = {"mode": "text_to_image", "prompt": "x", "seed": 1, "width": 256, "height": 256}
    answer = raw.direct("record_run", [{"images": [parameters]}, [{"image": bomb, "caption": None}], []])
    assert answer.status_code == 500 and answer.json()["error"].startswith("gallery:"), answer.text
    image = raw.upload("fine.png", encoded(RED, "PNG"))
    answer = raw.direct("record_run", [{"images": [parameters]}, [{"image": image, "caption": None}],
                                       [history_entry(n) for n in range(1000)]])
    assert answer.status_code == 200, answer.text
    history = answer.json()["data"][0]
    assert len(history) == 200 and history[0]["parameters"]["prompt"] == "x"


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
    shown = gallery_of(raw.direct("render", [[history_entry(1, parameters={"prompt": HOSTILE_TEXT})], ""]))
    assert HOSTILE_TEXT[:60] in shown[0]["caption"]  # as text, for the browser to show as text
