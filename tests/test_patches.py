"""The library patches: each against the library's own behaviour, the start refused for a missing name, the warning
for an untested version, and the requirements' bounds."""

import ast
import asyncio
import io
import logging
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio.blocks import BlocksConfig
from gradio.data_classes import PredictBodyInternal
from gradio.state_holder import SessionState
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image, PngImagePlugin

from kolors_app import launch as launch_module
from kolors_app.api.mcp import content_of
from kolors_app.core.config import Settings
from kolors_app.patches import accelerate as accelerate_patches
from kolors_app.patches import diffusers as diffusers_patches
from kolors_app.patches import gradio as gradio_patches
from kolors_app.patches import pillow as pillow_patches
from kolors_app.patches import startup, versions
from kolors_app.serving.doctor import run_check

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "kolors_app" / "patches"


@pytest.fixture(autouse=True)
def applied():
    startup.apply()


@pytest.fixture
def blocks():
    with gr.Blocks() as demo:
        text = gr.Textbox()
        data = gr.JSON()
        button = gr.Button()
        button.click(lambda: None, None, [text, data])
    return demo


def gradios_own_sessions(monkeypatch):
    monkeypatch.setattr(SessionState, "__init__", SessionState.__init__.__wrapped__)
    monkeypatch.setattr(BlocksConfig, "config_for_block", staticmethod(BlocksConfig.config_for_block.__wrapped__))
    monkeypatch.setattr(SessionState, "_update_value_in_config", SessionState._update_value_in_config.__wrapped__)


# --- gradio ---


def test_gradio_copies_the_page_into_each_session_and_the_patch_stops_it(blocks, monkeypatch):
    block_id = next(iter(blocks.blocks))
    state = SessionState(blocks)
    assert not list(state.components)
    state._update_value_in_config(block_id, "a long prompt")
    assert not list(state.components)
    gradios_own_sessions(monkeypatch)
    state = SessionState(blocks)
    assert len(list(state.components)) == len(blocks.blocks)  # every block's config, for each new session
    state._update_value_in_config(block_id, "a long prompt")
    assert state.config_values[block_id]["props"]["value"] == "a long prompt"


def postprocess(blocks, method, predictions):
    block_fn = next(iter(blocks.fns.values()))
    return asyncio.run(method(blocks, block_fn, predictions, None))


def count_builds(monkeypatch) -> list:
    built, original = [], gr.JSON.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(gr.JSON, "__init__", counting)
    return built


def test_gradio_builds_a_skipped_output_anew_and_the_patch_does_not(blocks, monkeypatch):
    built = count_builds(monkeypatch)
    gradios_own = gr.Blocks.postprocess_data.__wrapped__
    assert postprocess(blocks, gradios_own, ["a", gr.skip()]) == postprocess(blocks, gr.Blocks.postprocess_data,
                                                                             ["a", gr.skip()])
    assert len(built) == 1  # gradio's own built the JSON for its skip; the patched call built nothing


def test_every_gallery_has_the_same_schema_so_building_it_once_is_right():
    gradios_own = gr.Gallery.api_info.__wrapped__
    galleries = [gr.Gallery(), gr.Gallery(columns=5, label="x", format="jpeg", file_types=["image"])]
    schemas = [gradios_own(gallery) for gallery in galleries]
    assert schemas[0] == schemas[1] == gr.Gallery.api_info(galleries[1]) == gr.Gallery.api_info(galleries[0])
    gr.Gallery.api_info(galleries[0])["changed"] = True  # each caller gets its own copy
    assert "changed" not in gr.Gallery.api_info(galleries[0])


def push(app, session: str):
    body = PredictBodyInternal(fn_index=0, session_hash=session, data=[])
    request = types.SimpleNamespace(scope={"client": ("10.0.0.1", 1)})
    return asyncio.run(app._queue.push(body, request, None))


def test_gradio_queues_any_number_of_jobs_per_session_and_the_screen_refuses_them(blocks):
    blocks.queue()
    assert push(blocks, "one")[0] and push(blocks, "one")[0]  # gradio's own door: no limit per visitor
    assert gradio_patches.queue_length(blocks) == 2
    seen = []

    def refusal(jobs, session, request):
        seen.append((jobs, session, request.scope["client"]))
        return "one job at a time" if any(job_session == session for job_session, _ in jobs) else None

    gradio_patches.screen_queue_joins(blocks, refusal)
    assert push(blocks, "two")[0]
    assert push(blocks, "two") == (False, "one job at a time", "queue_full")
    jobs, session, client = seen[-1]
    assert session == "two" and client == ("10.0.0.1", 1)
    assert [job_session for job_session, _ in jobs] == ["one", "one", "two"]
    assert all(request.scope["client"] == ("10.0.0.1", 1) for _, request in jobs)
    assert gradio_patches.queue_length(blocks) == 3


def test_gradio_answers_a_gallery_to_mcp_as_text_and_the_patch_as_images(blocks, tmp_path):
    from gradio.mcp import GradioMCPServer

    path = tmp_path / "fox.png"
    Image.new("RGB", (8, 8), "red").save(path)
    gallery = [{"image": {"path": str(path), "url": "http://host/fox.png"}, "caption": None}]
    server = GradioMCPServer(blocks)
    gradios_own = server.postprocess_output_data([gallery], "http://host")
    assert [item.type for item in gradios_own] == ["text"]
    blocks.mcp_server_obj = server
    gradio_patches.answer_mcp_outputs_with(blocks, content_of)
    answer = server.postprocess_output_data([[gallery, {"seed": 1}]], "http://host")
    assert [item.type for item in answer] == ["image", "text", "text"]
    assert answer[0].mimeType == "image/png" and answer[2].text == '{"seed": 1}'


def test_gradio_patches_are_applied_once_and_not_on_import():
    startup.apply()
    assert not getattr(gr.Blocks.postprocess_data.__wrapped__, "passes_skips", False)
    assert not getattr(gr.Gallery.api_info.__wrapped__, "built_once", False)
    assert not getattr(BlocksConfig.config_for_block.__wrapped__, "__wrapped__", None)
    code = ("import gradio as gr, kolors_app.launch; from gradio.state_holder import SessionState; "
            "print(hasattr(gr.Blocks.postprocess_data, 'passes_skips'), hasattr(SessionState, 'kolors_patched'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]


# --- diffusers, accelerate ---


def test_kolors_img2img_drops_the_pooled_embeddings_and_the_patch_forwards_them(tiny_dir):
    from diffusers import KolorsImg2ImgPipeline

    from kolors_app.testing.tiny import KOLORS_REPO

    pipe = KolorsImg2ImgPipeline.from_pretrained(tiny_dir / KOLORS_REPO, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    embeds = dict(zip(("prompt_embeds", "negative_prompt_embeds", *diffusers_patches.POOLED),
                      pipe.encode_prompt("a cat", device="cpu", num_images_per_prompt=1,
                                         do_classifier_free_guidance=True, negative_prompt="")))
    image = Image.new("RGB", (64, 64), "gray")

    def latents(**arguments):
        return pipe(image=image, strength=0.99, num_inference_steps=2, output_type="latent",
                    generator=torch.Generator().manual_seed(1), **arguments).images

    with pytest.raises(AttributeError, match="shape"):  # diffusers #13612: the given pooled embeddings are dropped
        latents(**embeds)
    with diffusers_patches.pooled_embeds_forwarded(pipe, embeds):
        forwarded = latents(**embeds)
    zeros = {**embeds, **{name: torch.zeros_like(embeds[name]) for name in diffusers_patches.POOLED}}
    with diffusers_patches.pooled_embeds_forwarded(pipe, zeros):
        other = latents(**zeros)
    assert torch.equal(forwarded, latents(prompt="a cat", negative_prompt=""))
    assert not torch.equal(forwarded, other)
    assert "encode_prompt" not in vars(pipe)  # the shadowing attribute is gone after the call
    assert diffusers_patches.execution_device(pipe) == torch.device("cpu")


def test_accelerate_offload_hook_names_the_device_the_module_runs_on():
    from accelerate import cpu_offload_with_hook

    module = torch.nn.Linear(2, 2)
    assert accelerate_patches.offload_device(module) is None
    hooked, _hook = cpu_offload_with_hook(module, execution_device="cpu")
    assert torch.device(accelerate_patches.offload_device(hooked)) == torch.device("cpu")


# --- Pillow ---


def png_with_text(total_bytes: int) -> bytes:
    info, chunk = PngImagePlugin.PngInfo(), 1_000_000
    for index in range(total_bytes // chunk):
        info.add_text(f"t{index}", "x" * chunk, zip=True)  # compressed: a few kB on disk each
    out = io.BytesIO()
    Image.new("L", (1, 1)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_pillow_reads_64_mb_of_png_text_and_the_patch_caps_it_at_8(monkeypatch):
    data = png_with_text(9_000_000)
    assert len(data) < 200_000
    with pytest.raises(ValueError, match="Too much memory used in text chunks"):
        Image.open(io.BytesIO(data)).load()
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 64 * 1024 * 1024)  # Pillow's default
    assert len(Image.open(io.BytesIO(data)).text) == 9
    pillow_patches.apply()
    assert PngImagePlugin.MAX_TEXT_MEMORY == pillow_patches.MAX_TEXT_MEMORY


# --- the check at start and in --check ---


def test_every_name_the_patches_touch_is_there():
    assert startup.blockers() == []
    assert startup.require_supported() == []


def test_a_missing_name_stops_the_start_naming_library_version_and_range(monkeypatch):
    monkeypatch.delattr(gr.Blocks, "postprocess_data")
    monkeypatch.setattr(launch_module, "build", lambda *args, **kwargs: pytest.fail("built despite a missing name"))
    with pytest.raises(SystemExit) as stopped:
        launch_module.launch(Settings(model="tiny", device="cpu"))
    message = str(stopped.value)
    assert f"gradio {gr.__version__} lacks" in message and "gradio>=6.31,<7" in message
    assert "pass_skips_through needs gradio.blocks.Blocks.postprocess_data(block_fn, predictions, state)" in message


def test_a_changed_signature_or_instance_attribute_counts_as_missing(monkeypatch):
    queue_class = type(gradio_patches._probe_blocks()._queue)

    async def push(self, body, request):  # gradio dropped `username`
        return None

    monkeypatch.setattr(queue_class, "push", push)
    monkeypatch.delattr(gradio_patches._probe_blocks()._queue, "active_jobs")
    missing = versions.missing_names(gradio_patches.TOUCHED)
    assert missing == {"screen_queue_joins": ["gradio.queueing.Queue.push(body, request, username)",
                                              "gradio.queueing.Queue.active_jobs"]}


def check_output() -> tuple[int, str]:
    out = io.StringIO()
    return run_check(Settings(model="tiny", device="cpu"), out), out.getvalue()


def test_check_blocks_on_a_missing_name(monkeypatch):
    monkeypatch.delattr(PngImagePlugin, "MAX_TEXT_MEMORY")
    status, text = check_output()
    assert status == 1
    assert (f"BLOCKER: pillow {versions.installed_version('pillow')} lacks names Kolors Studio's patches of it touch "
            "(cap_text_memory needs PIL.PngImagePlugin.MAX_TEXT_MEMORY)") in text
    assert "pip install 'pillow>=12.3,<13'" in text


def test_a_version_outside_the_tested_range_warns_at_start_and_in_check(monkeypatch, caplog):
    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda name: "7.0.0" if name == "gradio" else real(name))
    expected = "gradio 7.0.0 is outside the range Kolors Studio is tested with (gradio>=6.31,<7)"
    assert [text[:len(expected)] for text in startup.warnings()] == [expected]
    with caplog.at_level(logging.WARNING, logger="kolors_app.launch"):
        launch_module.check_libraries()
    assert "UNTESTED LIBRARY VERSION: " + expected in caplog.text
    status, text = check_output()
    assert status == 0 and f"WARNING: {expected}" in text and "(1 warning(s))" in text


def test_check_lists_each_patched_library_in_range():
    status, text = check_output()
    assert status == 0, text
    for library in startup.LIBRARIES:
        name = library.DISTRIBUTION
        assert f"ok: {name} {versions.installed_version(name)} (tested {versions.TESTED[name]})" in text


# --- where the patches live ---


def test_requirements_bound_each_patched_library_by_its_tested_range():
    requirements = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            requirements[requirement.name.lower()] = requirement.specifier
    assert {library.DISTRIBUTION for library in startup.LIBRARIES} == set(versions.TESTED)
    for name, tested in versions.TESTED.items():
        assert requirements[name] == SpecifierSet(tested), name
        assert SpecifierSet(tested).contains(versions.installed_version(name)), name


def test_each_library_module_is_checked_and_imports_no_other_part_of_the_app():
    modules = {path.stem for path in PATCHES.glob("*.py")} - {"__init__", "versions", "startup"}
    assert modules == {library.__name__.rsplit(".", 1)[1] for library in startup.LIBRARIES}
    for path in PATCHES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("kolors_app") or name.startswith("kolors_app.patches"), (path.name, name)
