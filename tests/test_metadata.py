"""Generation parameters survive a trip through PNG chunks, A1111 text and EXIF, exactly."""

import io
import json
import os
import time

import pytest
from PIL import Image, PngImagePlugin

from kolors_app.metadata import png_chunks
from kolors_app.core.schema import clean_parameters, request_from_dict
from kolors_app.metadata.infotext import (PARAMETERS_KEY, format_parameters, parse_parameters, scheduler_from_a1111,
                                          split_parameters)
from kolors_app.metadata.png_chunks import JSON_KEY, png_bytes, read_image_parameters, read_parameters, save_png
from kolors_app.core.errors import ValidationError

# What AUTOMATIC1111 v1.10 writes for a txt2img run with Hires fix and a LoRA (hand-written, realistic).
A1111_HIRES = (
    "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, (red scarf:1.2), snowy street at night\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4), watermark\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, "
    "Size: 832x1216, Model hash: 6ce0161689, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, "
    "Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, Hires steps: 15, "
    "Hires upscaler: 4x-UltraSharp, Lora hashes: \"add_detail: 7c6bad76eb54, b: 2\", "
    "TI hashes: \"easynegative: c74b4e810b03\", Emphasis: Original, Version: v1.10.1"
)
A1111_IMG2IMG = (
    "a watercolor painting of a lighthouse\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 512x768, "
    "Model hash: 31e35c80fc, Model: v1-5-pruned-emaonly, Denoising strength: 0.6, Mask blur: 4, Version: v1.9.4"
)

T2I = {"mode": "text_to_image", "prompt": "a red fox in the snow", "negative_prompt": "blurry",
       "width": 1024, "height": 768, "num_inference_steps": 25, "guidance_scale": 6.5,
       "scheduler": "DPM++ 2M Karras", "seed": 42, "num_images": 1, "model": "Kolors"}

TRICKY_PROMPTS = [
    "one line",
    "line one\nline two\n\nline four after a blank",
    'commas, colons: "double quotes", \'single\', back\\slash, Steps: 99, Seed: 1',
    "一只戴着红色围巾的猫，水彩画风格，“引号”：冒号",
    "ends with a newline\n",
    "  leading and trailing spaces  ",
    "tab\tand\r\nwindows line ends",
    "<script>alert('x')</script> & <b>bold</b>",
    "emoji 🦊 and zero-width\u200bjoiner",
    "",
]
TRICKY_NEGATIVES = ["", "lowres, bad hands", "多行\n负面: 提示", "Negative prompt: written twice"]


def tricky_params(prompt, negative, mode="text_to_image"):
    values = {**T2I, "prompt": prompt, "negative_prompt": negative, "mode": mode}
    if mode != "text_to_image":
        values.update(strength=0.35, ip_adapter_scale=0.75) if mode == "ip_adapter" else values.update(strength=0.35)
    return values


def png_with_text_only(text):
    """A PNG carrying just an A1111 `parameters` chunk, as A1111 writes it."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg_with_user_comment(text, encoding="utf-16-be", format="JPEG"):
    """A JPEG (or WebP) with parameters in EXIF UserComment, the way A1111 stores them via piexif."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode(encoding)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format, exif=exif)
    return buffer.getvalue()


def test_format_parameters_layout():
    assert format_parameters(T2I) == (
        "a red fox in the snow\n"
        "Negative prompt: blurry\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 42, Size: 1024x768, Model: Kolors")


def test_format_parameters_extra_keys_and_no_negative():
    values = {**T2I, "mode": "ip_adapter", "negative_prompt": "", "strength": 0.5, "ip_adapter_scale": 0.8}
    text = format_parameters(values)
    assert "Negative prompt" not in text
    assert text.splitlines()[-1].endswith("Model: Kolors, Denoising strength: 0.5, IP-Adapter scale: 0.8, "
                                          "Mode: ip_adapter")


def test_values_that_would_break_the_line_are_json_quoted():
    text = format_parameters({**T2I, "model": 'my, model: "v2"'})
    assert 'Model: "my, model: \\"v2\\""' in text
    assert parse_parameters(text).parameters["model"] == 'my, model: "v2"'


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
@pytest.mark.parametrize("negative", TRICKY_NEGATIVES)
def test_prompts_round_trip_through_a1111_text_alone(prompt, negative):
    values = tricky_params(prompt, negative)
    parsed = parse_parameters(format_parameters(values))
    assert parsed.parameters == values
    assert parsed.warnings == []


@pytest.mark.parametrize("mode", ["text_to_image", "image_to_image", "ip_adapter"])
@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_prompts_round_trip_through_png_chunks(prompt, mode):
    values = tricky_params(prompt, "多行\n负面, \"x\": y", mode)
    data = png_bytes(Image.new("RGB", (16, 16), "red"), values)
    ours = read_image_parameters(data)
    assert ours.source == JSON_KEY and ours.parameters == values
    # The A1111 chunk in the very same file also reads back exactly, without our JSON chunk.
    theirs = read_image_parameters(png_with_text_only(Image.open(io.BytesIO(data)).info[PARAMETERS_KEY]))
    assert theirs.source == PARAMETERS_KEY and theirs.parameters == values
    assert isinstance(request_from_dict(theirs.parameters), type(request_from_dict(values)))


def test_chinese_is_stored_as_utf8_itxt_not_escaped():
    values = {**T2I, "prompt": "一只猫"}
    data = png_bytes(Image.new("RGB", (8, 8)), values)
    assert b"iTXt" + JSON_KEY.encode() in data
    assert "一只猫".encode("utf-8") in data
    assert b"\\u4e00" not in data
    chunk = Image.open(io.BytesIO(data)).info[JSON_KEY]
    assert json.loads(chunk) == values


def test_latin1_parameters_use_a_plain_text_chunk():
    data = png_bytes(Image.new("RGB", (8, 8)), T2I)
    assert b"tEXt" + PARAMETERS_KEY.encode() + b"\0a red fox in the snow\n" in data


def test_pixels_survive_png_bytes():
    image = Image.new("RGB", (4, 2), (10, 20, 30))
    image.putpixel((3, 1), (200, 100, 50))
    again = Image.open(io.BytesIO(png_bytes(image, T2I)))
    assert again.convert("RGB").tobytes() == image.tobytes()


def test_real_a1111_hires_text():
    split_prompt, split_negative, pairs = split_parameters(A1111_HIRES)
    labels = dict(pairs)
    assert labels["Lora hashes"] == "add_detail: 7c6bad76eb54, b: 2"
    assert labels["TI hashes"] == "easynegative: c74b4e810b03"
    assert labels["Version"] == "v1.10.1" and labels["Hires upscale"] == "1.5"
    parsed = parse_parameters(A1111_HIRES)
    assert parsed.parameters == {
        "prompt": "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, (red scarf:1.2), snowy street at night",
        "negative_prompt": "lowres, bad anatomy, (worst quality:1.4), watermark",
        "num_inference_steps": 28, "guidance_scale": 7.0, "seed": 1234567890, "width": 832, "height": 1216,
        "scheduler": "DPM++ 2M Karras", "model": "sd_xl_base_1.0", "mode": "text_to_image", "num_images": 1,
        # Denoising strength there belongs to the Hires pass (kolors_app/creative/part.py), not to an img2img.
        "hires_upscale": 1.5, "hires_steps": 15, "hires_upscaler": "4x-UltraSharp", "hires_denoising_strength": 0.45,
        "loras": [{"name": "add_detail", "weight": 0.6, "hash": "7c6bad76eb54"},
                  {"name": "b", "weight": 1.0, "hash": "2"}]}
    assert not any("Hires" in note for note in parsed.warnings)


def test_real_a1111_img2img_text():
    parsed = parse_parameters(A1111_IMG2IMG)
    assert parsed.parameters["mode"] == "image_to_image"
    assert parsed.parameters["strength"] == 0.6
    assert parsed.parameters["scheduler"] == "Euler a"
    assert (parsed.parameters["width"], parsed.parameters["height"]) == (512, 768)
    assert parsed.warnings == []


def test_a1111_text_without_settings_line_is_all_prompt():
    parsed = parse_parameters("just a prompt, with: colons\nand a second line")
    assert parsed.parameters["prompt"] == "just a prompt, with: colons\nand a second line"
    assert "num_inference_steps" not in parsed.parameters


@pytest.mark.parametrize("line", ["word " * 8_000, "a" * 40_000, "a, " * 20_000, 'ab: "' + ", b: c" * 8_000])
def test_hostile_long_lines_parse_in_linear_time(line):
    started = time.perf_counter()
    parsed = parse_parameters("prompt\n" + line)
    assert time.perf_counter() - started < 0.5  # re.findall, as A1111 uses it, takes seconds here
    assert parsed.parameters["prompt"].startswith("prompt")


@pytest.mark.parametrize("sampler, schedule, expected", [
    ("DPM++ 2M Karras", "", "DPM++ 2M Karras"),
    ("DPM++ 2M", "Karras", "DPM++ 2M Karras"),
    ("DPM++ 2M Karras", "Karras", "DPM++ 2M Karras"),
    ("DPM++ 2M SDE Karras", "", "DPM++ 2M SDE Karras"),
    ("DPM++ 2M SDE", "Karras", "DPM++ 2M SDE Karras"),
    ("Euler a", "Automatic", "Euler a"),
    ("Euler", "", "Euler"),
    ("euler", "", "Euler"),
    ("UniPC", "", "UniPC"),
    ("DDIM", "Automatic", "DDIM"),
    ("DPM++ 2M", "", "DPM++ 2M"),
])
def test_a1111_samplers_map_to_ours(sampler, schedule, expected):
    assert scheduler_from_a1111(sampler, schedule) == (expected, None)


def test_schedule_we_lack_keeps_sampler_and_says_so():
    name, note = scheduler_from_a1111("Euler", "Exponential")
    assert name == "Euler" and "Exponential" in note


@pytest.mark.parametrize("sampler", ["LMS", "Heun", "DPM++ SDE Karras", "DPM adaptive", "Restart"])
def test_unknown_sampler_keeps_default_and_reports(sampler):
    parsed = parse_parameters(f"a cat\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 512x512")
    assert "scheduler" not in parsed.parameters
    assert request_from_dict(parsed.parameters).scheduler == "Euler"
    assert any(sampler in note for note in parsed.warnings)


def test_unreadable_numbers_are_reported_not_guessed():
    parsed = parse_parameters("a cat\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Size: huge")
    assert "num_inference_steps" not in parsed.parameters and "width" not in parsed.parameters
    assert parsed.parameters["guidance_scale"] == 7.0
    assert len(parsed.warnings) == 2


@pytest.mark.parametrize("encoding, format", [("utf-16-be", "JPEG"), ("utf-16-le", "JPEG"), ("utf-16-be", "WEBP")])
def test_a1111_parameters_from_exif_user_comment(encoding, format):
    parsed = read_image_parameters(jpeg_with_user_comment(A1111_IMG2IMG + "，中文", encoding, format))
    assert parsed.source == "exif"
    assert parsed.parameters["prompt"] == "a watercolor painting of a lighthouse"
    assert parsed.parameters["strength"] == 0.6


def test_images_without_parameters_give_empty_dict():
    for format in ("PNG", "JPEG", "WEBP", "GIF"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format)
        assert read_parameters(buffer.getvalue()) == {}


def test_every_source_kind(tmp_path):
    data = png_bytes(Image.new("RGB", (8, 8)), T2I)
    path = tmp_path / "image.png"
    path.write_bytes(data)
    assert read_parameters(data) == T2I
    assert read_parameters(path) == T2I
    assert read_parameters(str(path)) == T2I
    with Image.open(path) as opened:
        assert read_parameters(opened) == T2I
        # Gradio hands over converted copies; Pillow keeps `info` through convert().
        assert read_parameters(opened.convert("RGB")) == T2I


@pytest.mark.parametrize("data", [b"not an image at all", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b""])
def test_non_images_are_refused_clearly(data):
    with pytest.raises(ValidationError) as error:
        read_parameters(data)
    assert error.value.field == "image"
    with pytest.raises(ValidationError) as error:
        read_parameters(data, field="png_info")
    assert error.value.field == "png_info"


def test_damaged_json_chunk_falls_back_to_a1111_text():
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(T2I))
    info.add_itxt(JSON_KEY, '{"prompt": "cut off')
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    parsed = read_image_parameters(buffer.getvalue())
    assert parsed.source == PARAMETERS_KEY and parsed.parameters == T2I
    assert any(JSON_KEY in note for note in parsed.warnings)


@pytest.mark.parametrize("chunk", ["[" * 100_000 + "]" * 100_000, "1" * 5000, '"just a string"', "NaN"])
def test_hostile_json_chunk_falls_back(chunk):
    info = PngImagePlugin.PngInfo()
    info.add_itxt(JSON_KEY, chunk)
    info.add_text(PARAMETERS_KEY, format_parameters(T2I))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    parsed = read_image_parameters(buffer.getvalue())
    assert parsed.parameters == T2I and parsed.source == PARAMETERS_KEY


def test_hostile_json_chunk_is_type_checked_and_trimmed():
    info = PngImagePlugin.PngInfo()
    info.add_itxt(JSON_KEY, json.dumps({**T2I, "evil": "x" * 100, "__class__": 1}))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    assert read_parameters(buffer.getvalue()) == T2I
    info = PngImagePlugin.PngInfo()
    info.add_itxt(JSON_KEY, json.dumps({**T2I, "prompt": ["not", "text"]}))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    parsed = read_image_parameters(buffer.getvalue())
    assert parsed.parameters == {} and "prompt" in parsed.warnings[0]


@pytest.mark.parametrize("values, field", [
    ([], "parameters"),
    ({"mode": "video"}, "parameters.mode"),
    ({"prompt": 5}, "parameters.prompt"),
    ({"prompt": "x" * 5001}, "parameters.prompt"),
    ({"width": "1024"}, "parameters.width"),
    ({"width": 10.5}, "parameters.width"),
    ({"width": True}, "parameters.width"),
    ({"guidance_scale": float("nan")}, "parameters.guidance_scale"),
    ({"seed": "7"}, "parameters.seed"),
    ({"model": {"a": 1}}, "parameters.model"),
])
def test_clean_parameters_refuses_wrong_types(values, field):
    with pytest.raises(ValidationError) as error:
        clean_parameters(values)
    assert error.value.field == field


def test_clean_parameters_keeps_known_keys_only():
    assert clean_parameters({"prompt": "p", "seed": None, "width": 512.0, "strength": 0.5, "x": 1}) == \
        {"mode": "text_to_image", "prompt": "p", "seed": None, "width": 512}
    cleaned = clean_parameters({"mode": "image_to_image", "strength": 1, "image": "data:..."})
    assert cleaned == {"mode": "image_to_image", "strength": 1.0}


def test_save_png_writes_both_chunks_and_leaves_no_temp_file(tmp_path):
    path = save_png(Image.new("RGB", (8, 8), "blue"), T2I, tmp_path / "out.png")
    assert os.listdir(tmp_path) == ["out.png"]
    with Image.open(path) as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)
        assert json.loads(image.info[JSON_KEY]) == T2I
        assert image.info[PARAMETERS_KEY] == format_parameters(T2I)


def test_save_png_without_overwrite_keeps_the_existing_file(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_png(Image.new("RGB", (8, 8)), T2I, path, overwrite=False)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.png"]
    save_png(Image.new("RGB", (8, 8)), T2I, path)
    assert read_parameters(path) == T2I


def test_save_png_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    save_png(Image.new("RGB", (8, 8)), T2I, path)
    before = path.read_bytes()

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(png_chunks.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_png(Image.new("RGB", (8, 8), "red"), {**T2I, "seed": 7}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_png_refuses_parameters_that_are_not_json(tmp_path):
    with pytest.raises(ValueError):
        save_png(Image.new("RGB", (8, 8)), {**T2I, "guidance_scale": float("nan")}, tmp_path / "x.png")
    assert os.listdir(tmp_path) == []
