"""Issue 18, small findings read without a server: odd infotext numbers, control units without a model, the
counters' memory, JPEG scans behind APP segments, JSON nesting."""

import struct

import pytest
from image_bytes import encoded
from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError
from kolors_app.core.json_body import MAX_JSON_DEPTH, json_depth, parse_json
from kolors_app.media.image_guard import jpeg_scans
from kolors_app.media.images import load_image
from kolors_app.metadata.infotext import parse_parameters
from kolors_app.metadata.png_chunks import png_bytes
from kolors_app.serving.quotas import TokenBuckets, WindowCounter
from kolors_app.ui.png_info_tab import parameters_of

SETTINGS_LINE = "Steps: 2, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 256x256, Mode: inpaint"


@pytest.mark.parametrize("value", ["²", "٣", "½", "1e400", "-4"])
def test_an_odd_mask_blur_is_left_at_its_default_with_a_note(value):
    found = parse_parameters(f"a fox\n{SETTINGS_LINE}, Mask blur: {value}")
    assert "mask_blur" not in found.parameters
    assert any(note.startswith("Mask blur") for note in found.warnings), found.warnings


def test_the_png_info_tab_reads_an_odd_mask_blur(tmp_path):
    path = tmp_path / "odd.png"
    text = f"a fox\n{SETTINGS_LINE}, Mask blur: ²"
    path.write_bytes(png_bytes(Image.new("RGB", (32, 32)), {}))
    with Image.open(path) as image:  # the A1111 text alone, as A1111 writes it
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        image.save(path, pnginfo=info)
    parameters, raw = parameters_of(str(path))
    assert raw == text and parameters["mode"] == "inpaint" and "mask_blur" not in parameters


def test_a_control_unit_without_a_model_is_left_out_with_a_note():
    found = parse_parameters(f'a fox\n{SETTINGS_LINE}, ControlNet 0: "Module: depth, Weight: 0.5"')
    assert "control_type" not in found.parameters
    assert any("ControlNet 0" in note and "Model" in note for note in found.warnings), found.warnings
    # With its model (ours, or an SD one of a kind Kolors has) it is read as before.
    ours = parse_parameters(f'a fox\n{SETTINGS_LINE}, ControlNet 0: "Module: depth, Model: Kolors-ControlNet-Depth"')
    assert ours.parameters["control_type"] == "depth"
    sd = parse_parameters(f'a fox\n{SETTINGS_LINE}, ControlNet 0: "Module: canny, '
                          f'Model: control_v11p_sd15_canny [d14c016b], Weight: 0.5"')
    assert sd.parameters["control_type"] == "canny" and sd.parameters["control_scale"] == 0.5


def test_upload_counters_forget_quiet_addresses_and_are_capped():
    counter = WindowCounter(10.0, max_keys=1000)
    for index in range(5000):
        counter.add(f"10.0.{index // 256}.{index % 256}", 1, now=float(index) / 1000)
        counter.total(f"192.168.0.{index % 256}", now=float(index) / 1000)  # looked up, never added
    assert len(counter) == 1000
    counter.add("late", 5, now=1000.0)
    counter.add("later", 5, now=1000.0)
    assert counter.total("late", now=1000.0) == 5
    assert len(counter) <= 1000 - 4 + 2  # every add drops expired keys
    assert counter.total("late", now=2000.0) == 0 and len(counter) < 1000


def test_token_buckets_give_a_burst_then_the_rate_and_forget_full_buckets():
    buckets = TokenBuckets(rate=10, burst=30, max_keys=100)
    assert all(buckets.take("a", now=0.0) == 0 for _ in range(30))
    wait = buckets.take("a", now=0.0)
    assert wait == pytest.approx(0.1)
    assert buckets.take("a", now=0.1) == 0 and buckets.take("a", now=0.1) > 0
    for index in range(500):
        buckets.take(f"visitor-{index}", now=1.0)
    assert len(buckets) <= 100
    buckets.take("b", now=100.0)
    buckets.take("c", now=100.0)
    assert len(buckets) < 100  # full again: forgotten


def test_jpeg_markers_inside_app_segments_are_no_scans():
    plain = encoded(Image.new("RGB", (64, 48), "green"), "JPEG")
    payload = b"\xff\xda" * 300  # an APP5 segment whose bytes look like 300 scan markers
    with_app = plain[:2] + b"\xff\xe5" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]
    assert jpeg_scans(with_app, 100) == 1
    assert load_image(with_app, Limits()).size == (64, 48)
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    assert load_image(plain[:2] + comment + plain[2:], Limits()).size == (64, 48)


def test_json_nesting_is_bounded():
    deep = "[" * 1500 + "]" * 1500
    for text in (deep, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)):
        with pytest.raises(ValidationError, match="^body: nested deeper than"):
            parse_json(text)
    assert json_depth(parse_json('{"a": [1, {"b": []}]}')) == 4 and json_depth(parse_json('7')) == 0
