"""History entries are validated, capped and round-trip; the outputs folder survives a kill -9."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.outputs.history import (MAX_THUMBNAIL_CHARS, OutputStore, add_entry, clear, delete, export_json,
                                import_json, make_entry, make_thumbnail, sanitize_history, search, validate_entry)
from kolors_app.metadata.png_chunks import read_parameters
from kolors_app.core.errors import ValidationError

REPO = Path(__file__).resolve().parent.parent
PARAMS = {"mode": "text_to_image", "prompt": "a red fox", "negative_prompt": "", "width": 1024, "height": 1024,
          "num_inference_steps": 25, "guidance_scale": 5.0, "scheduler": "Euler", "seed": 42, "num_images": 1,
          "model": "Kolors"}
NOW = 1_750_000_000.0


def entry(number=0, prompt="a red fox", **changes):
    values = {"id": f"e{number}", "time": NOW + number, "parameters": {**PARAMS, "prompt": prompt},
              "seeds": [number], "thumbnail": TINY_THUMBNAIL}
    values.update(changes)
    return values


TINY_THUMBNAIL = make_thumbnail(Image.new("RGB", (8, 8), "red"))


def decode_thumbnail(url):
    header, payload = url.split(",", 1)
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_thumbnail_is_small_jpeg_keeping_aspect():
    image = Image.effect_noise((1024, 512), 80).convert("RGB")
    url = make_thumbnail(image)
    thumbnail = decode_thumbnail(url)
    assert thumbnail.format == "JPEG" and thumbnail.size == (128, 64)
    assert len(url) < 16_000
    assert decode_thumbnail(make_thumbnail(Image.new("RGBA", (64, 300), (0, 0, 255, 255)))).size == (27, 128)


def test_make_entry():
    made = make_entry(PARAMS, [42, 43], Image.new("RGB", (256, 256), "blue"), now=NOW)
    assert set(made) == {"id", "time", "parameters", "seeds", "thumbnail"}
    assert made["time"] == NOW and made["seeds"] == [42, 43] and made["parameters"] == PARAMS
    assert decode_thumbnail(made["thumbnail"]).getpixel((5, 5))[2] > 240
    assert make_entry(PARAMS, [1])["id"] != make_entry(PARAMS, [1])["id"]
    assert make_entry(PARAMS, [1], None)["thumbnail"] == ""
    json.dumps(made)  # browser storage needs plain JSON values


def test_add_entry_newest_first_and_capped():
    history = []
    for number in range(205):
        history = add_entry(history, entry(number))
    assert len(history) == 200
    assert [item["id"] for item in history[:3]] == ["e204", "e203", "e202"]
    assert history[-1]["id"] == "e5"
    assert len(add_entry(history, entry(999), max_entries=10)) == 10
    replaced = add_entry(history[:3], entry(203, prompt="changed"))
    assert [item["id"] for item in replaced] == ["e203", "e204", "e202"]
    assert replaced[0]["parameters"]["prompt"] == "changed"
    assert add_entry(None, entry(1))[0]["id"] == "e1"


def test_add_entry_refuses_a_bad_entry():
    with pytest.raises(ValidationError):
        add_entry([], entry(1, id="<b>"))


def test_search_delete_clear():
    history = [entry(1, "A Red Fox in snow"), entry(2, "一只猫，水彩", seeds=[777]), entry(3, "blue fox")]
    assert [item["id"] for item in search(history, "fox")] == ["e1", "e3"]
    assert [item["id"] for item in search(history, "RED fox")] == ["e1"]
    assert [item["id"] for item in search(history, "猫")] == ["e2"]
    assert [item["id"] for item in search(history, "777")] == ["e2"]
    assert [item["id"] for item in search(history, "euler")] == ["e1", "e2", "e3"]
    assert search(history, "  ") == history
    assert search(history, "wolf") == []
    assert [item["id"] for item in delete(history, "e2")] == ["e1", "e3"]
    assert len(history) == 3  # the functions return new lists
    assert delete(history, "nope") == history
    assert clear() == []


def test_export_import_round_trip():
    history = [entry(3, "最新的猫\nsecond line, with: \"quotes\""), entry(2, "<script>alert(1)</script>"), entry(1)]
    history = [validate_entry(item) for item in history]
    text = export_json(history)
    assert "最新的猫" in text  # readable, not \u-escaped
    assert json.loads(text)["format"] == "kolors-studio-history"
    assert import_json(text) == history
    assert import_json(text.encode("utf-8")) == history
    assert import_json(json.dumps(history)) == history  # a bare list is read too


def test_import_sorts_newest_first_and_drops_duplicate_ids():
    document = json.dumps([entry(1), entry(5), entry(3), entry(5, prompt="dup")])
    imported = import_json(document)
    assert [item["id"] for item in imported] == ["e5", "e3", "e1"]
    assert imported[0]["parameters"]["prompt"] == "a red fox"


def test_html_in_prompts_is_kept_as_plain_data():
    hostile = '<img src=x onerror="alert(document.cookie)">\'; DROP TABLE--'
    imported = import_json(export_json([entry(1, hostile, negative_prompt="</textarea><script>")]))
    assert imported[0]["parameters"]["prompt"] == hostile


def test_unknown_keys_are_dropped():
    value = {**entry(1), "evil": "<script>", "__proto__": {"admin": True}}
    value["parameters"] = {**value["parameters"], "constructor": 1, "image": "data:image/png;base64,AAAA"}
    cleaned = validate_entry(value)
    assert set(cleaned) == {"id", "time", "parameters", "seeds", "thumbnail"}
    assert cleaned["parameters"] == PARAMS


def hostile(number, **changes):
    return json.dumps([entry(0), entry(number, **changes)])


BAD_THUMBNAILS = [
    ("javascript:alert(1)",),
    ("data:image/svg+xml;base64," + base64.b64encode(b"<svg onload=alert(1)>").decode(),),
    ("data:text/html;base64," + base64.b64encode(b"<script>").decode(),),
    ('data:image/jpeg;base64,/9j/"onerror="alert(1)',),
    ("data:image/png;base64," + TINY_THUMBNAIL.split(",")[1],),  # JPEG bytes called PNG
    ("data:image/jpeg;base64," + "A" * MAX_THUMBNAIL_CHARS,),
    (12345,),
]


@pytest.mark.parametrize("text, field", [
    ("not json at all", "history"),
    ('[{"id": "a", "time": NaN, "parameters": {}}]', "history"),
    ("[" * 100_000 + "]" * 100_000, "history"),
    ("42", "history.entries"),
    ('{"format": "something-else", "entries": []}', "history.format"),
    ('{"entries": {"id": "a"}}', "history.entries"),
    (json.dumps([entry(n) for n in range(201)]), "history.entries"),
    (json.dumps(["a string"]), "history[0]"),
    (hostile(1, id="<script>alert(1)</script>"), "history[1].id"),
    (hostile(1, id="x" * 65), "history[1].id"),
    (hostile(1, id=7), "history[1].id"),
    (hostile(1, time="yesterday"), "history[1].time"),
    (hostile(1, time=-5), "history[1].time"),
    (hostile(1, time=1e300), "history[1].time"),
    (hostile(1, time=True), "history[1].time"),
    (hostile(1, seeds="42"), "history[1].seeds"),
    (hostile(1, seeds=[1.5]), "history[1].seeds"),
    (hostile(1, seeds=[2**32]), "history[1].seeds"),
    (hostile(1, seeds=[-1]), "history[1].seeds"),
    (hostile(1, seeds=list(range(65))), "history[1].seeds"),
    (hostile(1, parameters="prompt=x"), "history[1].parameters"),
    (hostile(1, parameters={"prompt": ["a"]}), "history[1].parameters.prompt"),
    (hostile(1, parameters={"prompt": "x" * 5001}), "history[1].parameters.prompt"),
    (hostile(1, parameters={"mode": "<b>"}), "history[1].parameters.mode"),
    (hostile(1, parameters={"guidance_scale": "high"}), "history[1].parameters.guidance_scale"),
    (hostile(1, parameters={"width": 10**30}), "history[1].parameters.width"),
    (json.dumps([{"time": NOW, "parameters": {}}]), "history[0].id"),
] + [(hostile(1, thumbnail=bad[0]), "history[1].thumbnail") for bad in BAD_THUMBNAILS])
def test_import_refuses_hostile_input(text, field):
    with pytest.raises(ValidationError) as error:
        import_json(text)
    assert error.value.field == field


def test_import_size_and_entry_limits():
    text = export_json([validate_entry(entry(n)) for n in range(10)])
    with pytest.raises(ValidationError, match="bytes"):
        import_json(text, max_bytes=len(text.encode()) - 1)
    with pytest.raises(ValidationError, match="bytes"):
        import_json("[" + " " * 100 + "]", max_bytes=50)
    with pytest.raises(ValidationError, match="at most 5"):
        import_json(text, max_entries=5)
    with pytest.raises(ValidationError) as error:
        import_json(None)
    assert error.value.field == "history"
    assert len(import_json(text, max_entries=10)) == 10
    long_prompt = export_json([validate_entry(entry(1, "x" * 6000), limits=Limits(max_prompt_chars=8000))])
    with pytest.raises(ValidationError, match="at most 5000"):
        import_json(long_prompt)
    assert import_json(long_prompt, limits=Limits(max_prompt_chars=8000))[0]["parameters"]["prompt"] == "x" * 6000
    assert sanitize_history(json.loads(long_prompt)["entries"]) == []
    assert len(sanitize_history(json.loads(long_prompt)["entries"], limits=Limits(max_prompt_chars=8000))) == 1


def test_sanitize_keeps_the_good_entries_of_a_tampered_store(caplog):
    value = [entry(3), {"id": "bad", "time": "x", "parameters": {}}, "junk", entry(2, thumbnail="javascript:x"),
             entry(1, evil=True), entry(3)]
    cleaned = sanitize_history(value)
    assert [item["id"] for item in cleaned] == ["e3", "e1"]
    assert "evil" not in cleaned[1]
    assert "dropped" in caplog.text
    assert sanitize_history(None) == []
    assert sanitize_history("[]") == []
    assert sanitize_history({"entries": []}) == []
    assert len(sanitize_history([entry(n) for n in range(300)], max_entries=200)) == 200


# ---- the outputs folder -------------------------------------------------------------------------

def day(now=NOW):
    return time.strftime("%Y-%m-%d", time.localtime(now))


def test_output_store_names_and_metadata(tmp_path):
    store = OutputStore(tmp_path)
    first = store.save(Image.new("RGB", (8, 8), "red"), PARAMS, now=NOW)
    second = store.save(Image.new("RGB", (8, 8), "blue"), {**PARAMS, "seed": 43}, now=NOW)
    unseeded = store.save(Image.new("RGB", (8, 8)), {**PARAMS, "seed": None}, now=NOW)
    assert first == tmp_path / day() / "00001-42.png"
    assert second.name == "00002-43.png" and unseeded.name == "00003.png"
    assert read_parameters(first) == PARAMS
    with Image.open(second) as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)
    next_day = store.save(Image.new("RGB", (8, 8)), PARAMS, now=NOW + 86400)
    assert next_day == tmp_path / day(NOW + 86400) / "00001-42.png"


def test_parameters_never_shape_the_path(tmp_path):
    path = OutputStore(tmp_path).save(Image.new("RGB", (8, 8)), {**PARAMS, "seed": "../../escape"}, now=NOW)
    assert path == tmp_path / day() / "00001.png"


def test_output_store_never_overwrites(tmp_path):
    store = OutputStore(tmp_path)
    store.save(Image.new("RGB", (8, 8)), PARAMS, now=NOW)
    taken = tmp_path / day() / "00002-42.png"
    taken.write_bytes(b"made by another process")
    path = store.save(Image.new("RGB", (8, 8)), PARAMS, now=NOW)
    assert path.name == "00003-42.png"
    assert taken.read_bytes() == b"made by another process"
    # A second store (another process) continues after the highest number.
    assert OutputStore(tmp_path).save(Image.new("RGB", (8, 8)), PARAMS, now=NOW).name == "00004-42.png"


def test_stale_temp_files_are_removed(tmp_path):
    folder = tmp_path / day()
    folder.mkdir()
    stale, fresh = folder / ".00001-1.png.abc.tmp", folder / ".00002-2.png.def.tmp"
    stale.write_bytes(b"left by a killed writer")
    fresh.write_bytes(b"another writer is busy with this")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    OutputStore(tmp_path).save(Image.new("RGB", (8, 8)), PARAMS, now=NOW)
    assert not stale.exists() and fresh.exists()


def test_list_recent(tmp_path):
    store = OutputStore(tmp_path)
    assert store.list_recent() == []
    paths = [store.save(Image.new("RGB", (8, 8)), {**PARAMS, "seed": n}, now=NOW + n) for n in range(5)]
    recent = store.list_recent(3)
    assert [item["path"] for item in recent] == [paths[4].resolve(), paths[3].resolve(), paths[2].resolve()]
    assert recent[0]["parameters"]["seed"] == 4 and recent[0]["time"] == NOW + 4
    paths[4].unlink()  # a file the user deleted is skipped
    assert [item["parameters"]["seed"] for item in store.list_recent(2)] == [3, 2]
    assert store.list_recent(0) == []


def test_torn_and_hostile_index_lines_are_skipped_and_repaired(tmp_path):
    store = OutputStore(tmp_path)
    store.save(Image.new("RGB", (8, 8)), {**PARAMS, "seed": 1}, now=NOW)
    with open(store.index_path, "ab") as index:
        index.write(b'{"path": "../../etc/passwd", "time": 1}\n[1, 2]\n\xff\xfe\n{"path": "' + day().encode()
                    + b'/00001-1.png", "ti')  # a torn last line, as a killed writer leaves it
    assert [item["parameters"]["seed"] for item in store.list_recent(5)] == [1]
    store.save(Image.new("RGB", (8, 8)), {**PARAMS, "seed": 2}, now=NOW)
    assert [item["parameters"]["seed"] for item in store.list_recent(5)] == [2, 1]
    last = store.index_path.read_bytes().split(b"\n")[-2]
    assert json.loads(last)["parameters"]["seed"] == 2


def test_list_recent_reads_beyond_one_block(tmp_path):
    store = OutputStore(tmp_path)
    store.save(Image.new("RGB", (8, 8)), PARAMS, now=NOW)
    line = json.loads(store.index_path.read_text().splitlines()[0])
    with open(store.index_path, "a", encoding="utf-8") as index:
        for number in range(600):
            index.write(json.dumps({**line, "parameters": {**PARAMS, "seed": number, "prompt": "猫" * 300}},
                                   ensure_ascii=False) + "\n")
    assert store.index_path.stat().st_size > 4 * 64 * 1024
    recent = store.list_recent(500)
    assert [item["parameters"]["seed"] for item in recent[:2]] == [599, 598]
    assert len(recent) == 500
    assert len(store.list_recent(10_000)) == 601


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from PIL import Image
    from kolors_app.outputs.history import OutputStore

    store = OutputStore(sys.argv[1])
    random = np.random.default_rng(int(sys.argv[2]))
    number = 0
    while True:
        pixels = random.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        store.save(Image.fromarray(pixels), {"mode": "text_to_image", "prompt": "猫, " * 200 + str(number),
                                             "seed": number})
        number += 1
""")


def index_lines(store):
    return store.index_path.read_bytes().split(b"\n") if store.index_path.exists() else [b""]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_9_mid_write_leaves_every_file_readable(tmp_path):
    store = OutputStore(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_number, delay in enumerate((0.05, 0.13, 0.21, 0.29)):
        before = len(index_lines(store))
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round_number)], env=environment)
        deadline = time.monotonic() + 20
        while len(index_lines(store)) < before + 3 and time.monotonic() < deadline:
            assert writer.poll() is None, "the writer died on its own"
            time.sleep(0.01)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
    pngs = sorted(tmp_path.rglob("*.png"))
    assert len(pngs) >= 12
    for path in pngs:
        with Image.open(path) as image:
            image.load()
            assert image.size == (160, 160)
        assert read_parameters(path)["seed"] == int(path.stem.split("-")[1])
    assert not [path for path in pngs if path.name.startswith(".")]  # temp files never carry .png
    # One write() per line: a kill lands between lines, so every line is whole (torn lines: see above).
    lines = [line for line in index_lines(store) if line]
    records = [json.loads(line) for line in lines]
    assert all((tmp_path / record["path"]).is_file() for record in records)
    names = {record["path"] for record in records}
    assert len(names) == len(records)  # no file was written twice
    listed = store.list_recent(1000)
    assert len(listed) == len(records)
    assert len(list(tmp_path.rglob("*.png"))) - len(records) <= 4  # at most one unindexed image per kill
    # A new writer carries on after the last number, overwriting nothing.
    fresh = OutputStore(tmp_path).save(Image.new("RGB", (8, 8)), {"seed": 5})
    assert fresh not in pngs and len(list(tmp_path.rglob("*.png"))) == len(pngs) + 1
