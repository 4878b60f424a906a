"""The API's overhead: what a request to the served app costs beyond the bare diffusers call, and the page's updates.

`python -m bench.api [--sizes 512 1024] [--pairs 8] [--model tiny]`: the production launch() in this process;
each round runs, in shuffled order, the bare diffusers call on the same model files and these requests, each
with a new prompt so that the text encoder runs:
- `/text_to_image` over gradio's HTTP protocol as any program speaks it (join, the SSE stream, the PNG);
- the same endpoint through gradio_client (which adds its own polling, about 50 ms a message);
- AUTOMATIC1111's `/sdapi/v1/txt2img` (one POST, the PNG inline in base64 JSON);
- the app's own REST route `/kolors/v1/generate` (one POST, the PNG itself as the answer);
- `/text_to_image_live` through gradio_client: the page's event, with progress and previews.
Extra time = a request's wall time at the client less the bare call's of the same round (also in this
process's CPU time, which other processes barely move). The table shows medians and ranges. Also: PNG
encoding of a 1024 px photo, Pillow's against ours (kolors_app/media/png_encoder.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import RESULTS, ROOT, set_threads, tiny_settings
from .server import free_port

STEPS = 8
PROMPT = "一只戴着草帽的橘猫, an orange cat in a straw hat, watercolor"


@contextlib.contextmanager
def served(settings):
    """The production launch() in this process (so that the diffusers call inside can be timed); yields the URL."""
    import dataclasses

    from kolors_app.launch import launch

    home = Path(tempfile.mkdtemp(prefix="kolors-bench-api-"))
    os.environ["GRADIO_TEMP_DIR"] = str(home / "gradio")
    port = free_port()
    app, _ctx = launch(dataclasses.replace(settings, port=port, outputs_dir=home / "outputs", save_outputs=True,
                                           api=True), prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", app
    finally:
        app.close()


@contextlib.contextmanager
def timed_pipeline_calls():
    """Record the wall seconds of the model's own work while inside: KolorsPipeline calls and prompt encodings.

    What the bare `pipe(prompt=...)` call does is exactly these two; the app calls encode_prompt itself (once
    per new text, for its cache) and then the pipeline with the embeddings. Nested calls count once.
    """
    from diffusers import KolorsPipeline

    spent, depth = [], [0]
    originals = {name: getattr(KolorsPipeline, name) for name in ("__call__", "encode_prompt")}

    def timing(original):
        def timed(self, *args, **kwargs):
            depth[0] += 1
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent.append(time.perf_counter() - started)
        return timed

    for name, original in originals.items():
        setattr(KolorsPipeline, name, timing(original))
    try:
        yield spent
    finally:
        for name, original in originals.items():
            setattr(KolorsPipeline, name, original)


def spread(values: list[float], scale: float = 1e3, unit: str = "ms") -> str:
    """Median and the range."""
    return f"{statistics.median(values) * scale:.0f} {unit} ({min(values) * scale:.0f} to {max(values) * scale:.0f})"


def bare_call(folder: Path, size: int):
    """The bare diffusers call on the same model files: a function of (prompt, seed) that generates one image."""
    import torch
    from diffusers import KolorsPipeline

    from kolors_app.testing.tiny_presets import KOLORS_REPO

    pipe = KolorsPipeline.from_pretrained(str(folder / KOLORS_REPO))
    pipe.set_progress_bar_config(disable=True)

    def call(prompt, seed):
        return pipe(prompt=prompt, negative_prompt="", width=size, height=size, num_inference_steps=STEPS,
                    guidance_scale=5.0, generator=torch.Generator().manual_seed(seed)).images[0]
    return call


def page_defaults(app, endpoint: str) -> list:
    """The page's own values for an event's inputs after the nine request settings (ControlNet units off...)."""
    fn = next(fn for fn in app.fns.values() if fn.api_name == endpoint.lstrip("/"))
    return [block.value for block in fn.inputs[9:]]


def urls_in(value) -> list[str]:
    """Every file URL in a message's output (whole values or sse_v3 diffs alike)."""
    if isinstance(value, dict):
        return ([value["url"]] if isinstance(value.get("url"), str) else []) + [
            url for item in value.values() for url in urls_in(item)]
    if isinstance(value, list):
        return [url for item in value for url in urls_in(item)]
    return []


class RawClient:
    """gradio's HTTP protocol for one endpoint, as a program speaks it: join the queue, read the SSE stream
    to its result, fetch the PNG. One kept-alive connection, no polling. With `previews`, each preview
    image the stream names is fetched as it arrives, as the page does (here in line, which can only add)."""

    def __init__(self, url: str, app, endpoint: str, previews: bool = False):
        import httpx

        self.previews = previews
        self.url, self.http = url.rstrip("/"), httpx.Client(timeout=300)
        self.fn_index = next(index for index, fn in app.fns.items() if fn.api_name == endpoint.lstrip("/"))
        self.rest = page_defaults(app, endpoint)

    def predict(self, *values) -> bytes:
        import uuid

        session = uuid.uuid4().hex[:12]
        joined = self.http.post(f"{self.url}/gradio_api/queue/join",
                                json={"data": [*values, *self.rest], "fn_index": self.fn_index,
                                      "session_hash": session})
        joined.raise_for_status()
        with self.http.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session}) as sse:
            fetched = set()
            for line in sse.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    break
                if self.previews and message.get("msg") == "process_generating":
                    for url in set(urls_in(message.get("output"))) - fetched:
                        fetched.add(url)
                        self.http.get(url).raise_for_status()
        if not message.get("success"):
            raise RuntimeError(message)
        image = message["output"]["data"][0][0]["image"]
        return self.http.get(image["url"]).content


def a1111_call(url: str, size: int):
    """AUTOMATIC1111's txt2img: one POST; the answer carries the PNG in base64."""
    import base64

    import httpx

    http = httpx.Client(timeout=300)

    def call(prompt, seed):
        answer = http.post(f"{url}sdapi/v1/txt2img", json={
            "prompt": prompt, "width": size, "height": size, "steps": STEPS, "cfg_scale": 5.0,
            "sampler_name": "Euler", "seed": seed})
        answer.raise_for_status()
        return base64.b64decode(answer.json()["images"][0])
    return call


def rest_call(url: str, size: int):
    """The app's own REST route: one POST; the answer is the PNG."""
    import httpx

    http = httpx.Client(timeout=300)

    def call(prompt, seed):
        answer = http.post(f"{url}kolors/v1/generate", headers={"Accept": "image/png"}, json={
            "prompt": prompt, "width": size, "height": size, "num_inference_steps": STEPS, "guidance_scale": 5.0,
            "scheduler": "Euler", "seed": seed})
        answer.raise_for_status()
        return answer.content
    return call


def measure_size(settings, size: int, rounds: int, folder: Path) -> dict:
    """Rounds of the bare diffusers call, /text_to_image (programs) and /text_to_image_live (the page's event).

    Each round runs the three in shuffled order with a new prompt (so the text encoder runs, as in a bare
    call). The API's extra time is the request's wall time less the bare call's of the same round; the CPU
    time of this process (client, server and model) is compared the same way, as other processes on a busy
    machine barely move it. The page's cost is its request less the program request of the same round.
    """
    from gradio_client import Client

    bare = bare_call(folder, size)
    with served(settings) as (url, app), timed_pipeline_calls() as spent:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": 300})  # a busy machine answers slowly
        live = page_defaults(app, "/text_to_image_live")
        raw, a1111, rest = RawClient(url, app, "/text_to_image"), a1111_call(url, size), rest_call(url, size)
        raw_page = RawClient(url, app, "/text_to_image_live", previews=True)

        def call(endpoint, prompt, seed):
            values = (prompt, "", size, size, STEPS, 5.0, "Euler", seed, 1)
            if endpoint == "bare":
                return bare(prompt, seed)
            if endpoint == "http":
                return raw.predict(*values)
            if endpoint == "page_http":
                return raw_page.predict(*values)
            if endpoint == "a1111":
                return a1111(prompt, seed)
            if endpoint == "rest":
                return rest(prompt, seed)
            page_values = live if endpoint.endswith("_live") else []
            return client.predict(*values, *page_values, api_name=endpoint)

        endpoints = {"bare": "bare", "rest": "rest", "api": "http", "gradio_client": "/text_to_image",
                     "a1111": "a1111", "ui_http": "page_http", "ui": "/text_to_image_live"}
        for name, endpoint in endpoints.items():  # warm-up: loading, first-call costs
            call(endpoint, f"{PROMPT} warm-up {name}", 0)
        walls = {name: [] for name in endpoints}
        cpus = {name: [] for name in endpoints}
        inside = {name: [] for name in endpoints}
        for number in range(rounds):
            order = list(endpoints)
            random.shuffle(order)
            for name in order:
                before = len(spent)
                started, cpu = time.perf_counter(), time.process_time()
                call(endpoints[name], f"{PROMPT} {number} {name}", number + 1)  # a new prompt: the text encoder runs
                walls[name].append(time.perf_counter() - started)
                cpus[name].append(time.process_time() - cpu)
                inside[name].append(sum(spent[before:]))
    result = {"size": size, "steps": STEPS, "rounds": rounds, "walls": walls, "cpus": cpus, "inside": inside,
              "bare": {"wall": spread(walls["bare"]), "cpu": spread(cpus["bare"])}}
    for name in ("rest", "api", "gradio_client", "a1111", "ui_http", "ui"):
        extra = [wall - base for wall, base in zip(walls[name], walls["bare"])]
        ratio = [wall / base for wall, base in zip(walls[name], walls["bare"])]
        cpu_extra = [cpu - base for cpu, base in zip(cpus[name], cpus["bare"])]
        cpu_ratio = [cpu / base for cpu, base in zip(cpus[name], cpus["bare"])]
        beside = [wall - model for wall, model in zip(walls[name], inside[name])]
        result[name] = {"wall": spread(walls[name]), "extra": spread(extra), "cpu_extra": spread(cpu_extra),
                        "beside_model": spread(beside),
                        "extra_ms": round(statistics.median(extra) * 1e3, 1),
                        "ratio": round(statistics.median(ratio), 4),
                        "ratio_range": [round(min(ratio), 4), round(max(ratio), 4)],
                        "cpu_ratio": round(statistics.median(cpu_ratio), 4)}
    result["page_cost"] = page_cost(walls, cpus, inside)
    result["page_cost_gradio_client"] = page_cost(walls, cpus, inside, "ui", "gradio_client")
    return result


def page_cost(walls: dict, cpus: dict, inside: dict, page: str = "ui_http", program: str = "api") -> dict:
    """What the page's progress and previews cost: its event against the same endpoint through the same client.

    By default over gradio's HTTP protocol, the stream read as the page reads it (each preview fetched as it
    comes); gradio_client instead downloads every streamed file before it reads the next message, a cost of its
    own (its row). In whole requests (which the model's own run-to-run spread dominates) and beside the model:
    the time each request spent outside the diffusers calls, the page's less the program's, over the bare
    call's median.
    """
    whole = [(ui - api) / api for ui, api in zip(walls[page], walls[program])]
    whole_cpu = [(ui - api) / api for ui, api in zip(cpus[page], cpus[program])]
    beside = {name: [wall - model for wall, model in zip(walls[name], inside[name])] for name in (page, program)}
    extra = [ui - api for ui, api in zip(beside[page], beside[program])]
    run = statistics.median(walls["bare"])
    return {"percent": round(statistics.median(whole) * 100, 2),
            "range": [round(min(whole) * 100, 2), round(max(whole) * 100, 2)],
            "cpu_percent": round(statistics.median(whole_cpu) * 100, 2),
            "beside_ms": round(statistics.median(extra) * 1e3, 1),
            "beside_range_ms": [round(min(extra) * 1e3, 1), round(max(extra) * 1e3, 1)],
            "beside_percent": round(statistics.median(extra) / run * 100, 2)}


def measure_png(repeats: int = 7) -> list[dict]:
    """PNG encoding of a photo at 512 and 1024 px: Pillow at the levels that matter and ours; time and size."""
    from PIL import Image

    from kolors_app.media.png_encoder import encode_png

    def pillow(**options):
        def encode(image):
            buffer = io.BytesIO()
            image.save(buffer, "PNG", **options)
            return buffer.getvalue()
        return encode

    rows = []
    for size in (512, 1024):
        image = Image.open(ROOT / "assets" / "cat.jpg").convert("RGB").resize((size, size))
        for label, encode in [("Pillow, level 6 (its default)", pillow()),
                              ("Pillow, level 1 + RLE (the last version)", pillow(compress_level=1, compress_type=3)),
                              ("Pillow, level 0 (stored)", pillow(compress_level=0)),
                              ("ours: Up filter, ISA-L level 1, parallel pieces (used)", encode_png)]:
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                data = encode(image)
                seconds.append(time.perf_counter() - started)
            rows.append({"encoding": f"{size} px: {label}", "ms": round(statistics.median(seconds) * 1e3, 1),
                         "kB": len(data) // 1024})
    return rows


def measure_result_path(repeats: int = 5) -> list[dict]:
    """The result path for one 1024 px image, as it was (before this issue) and as it is now."""
    import json as json_module

    from PIL import Image
    from gradio import processing_utils

    from kolors_app.outputs.history import OutputStore
    from kolors_app.metadata.infotext import PARAMETERS_KEY, format_parameters
    from kolors_app.metadata.png_chunks import JSON_KEY, png_info, save_png
    from kolors_app.outputs.result_files import encode_png, write_served_png

    image = Image.open(ROOT / "assets" / "cat.jpg").convert("RGB").resize((1024, 1024))
    parameters = {"mode": "text_to_image", "prompt": PROMPT, "negative_prompt": "", "width": 1024, "height": 1024,
                  "num_inference_steps": 25, "guidance_scale": 5.0, "scheduler": "Euler", "seed": 1, "num_images": 1}
    folder = Path(tempfile.mkdtemp(prefix="kolors-bench-result-"))
    store = OutputStore(folder / "outputs")

    def before():
        tagged = image.copy()  # the gallery's copy carrying the PNG text
        tagged.info[PARAMETERS_KEY] = format_parameters(parameters)
        tagged.info[JSON_KEY] = json_module.dumps(parameters, ensure_ascii=False)
        processing_utils.save_pil_to_cache(tagged, str(folder / "cache"), format="png")  # gradio: level 6
        again = io.BytesIO()  # the outputs copy, encoded again
        image.save(again, "PNG", pnginfo=png_info(parameters))
        save_png(None, parameters, folder / f"before-{time.monotonic_ns()}.png", data=again.getvalue())

    def now():
        data = encode_png(image, parameters)
        write_served_png(data, folder / "cache")
        return data  # the outputs copy is written by a background thread from these bytes

    def now_outputs(data):
        store.save(None, parameters, data=data)

    rows = []
    for label, call in (("before: gallery PNG (gradio, level 6) + outputs copy (encoded again), in the answer",
                         before), ("now: one PNG (png_encoder.py) written for the gallery, in the answer", now)):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            data = call()
            seconds.append(time.perf_counter() - started)
        rows.append({"path": label, "ms": round(statistics.median(seconds) * 1e3, 1)})
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        now_outputs(data)
        seconds.append(time.perf_counter() - started)
    rows.append({"path": "now: the outputs copy (atomic, fsync), on the background thread",
                 "ms": round(statistics.median(seconds) * 1e3, 1)})
    return rows


CLIENTS = {"rest": "`/kolors/v1/generate`, the PNG as the answer", "api": "`/text_to_image`, gradio's HTTP protocol",
           "gradio_client": "`/text_to_image`, gradio_client", "a1111": "`/sdapi/v1/txt2img`",
           "ui_http": "the page's `_live` event, gradio's HTTP protocol, previews fetched",
           "ui": "the page's `_live` event, gradio_client"}


def overhead_ratio(item: dict, name: str) -> float:
    """(the bare call + a request's median time beside the model) / the bare call: the ratio with the model's
    own run-to-run spread left out."""
    bare = statistics.median(item["walls"]["bare"])
    beside = statistics.median(wall - model for wall, model in zip(item["walls"][name], item["inside"][name]))
    return (bare + beside) / bare


def format_results(results: dict) -> str:
    """The Markdown tables of bench/README.md."""
    lines = ["| size | request | wall | extra over the bare call (median, range) | ratio (median, range) "
             "| CPU extra, CPU ratio | beside the model (median, range) | ratio, beside the model |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for item in results["sizes"]:
        lines.append(f"| {item['size']} px, {item['steps']} steps, {item['rounds']} rounds | bare diffusers call "
                     f"| {item['bare']['wall']} | | | | | |")
        for name, label in CLIENTS.items():
            row = item[name]
            lines.append(f"| | {label} | {row['wall']} | {row['extra']} "
                         f"| {row['ratio']:.3f} ({row['ratio_range'][0]:.3f}-{row['ratio_range'][1]:.3f}) "
                         f"| {row['cpu_extra']}, {row['cpu_ratio']:.3f} | {row['beside_model']} "
                         f"| {overhead_ratio(item, name):.3f} |")
    lines += ["", "| size | the page's progress and previews, beside the model (median, range) | share of the bare "
              "call | in whole requests | the same through gradio_client |", "| --- | ---: | ---: | ---: | ---: |"]
    for item in results["sizes"]:
        page, slow = item["page_cost"], item["page_cost_gradio_client"]
        low, high = page["beside_range_ms"]
        lines.append(f"| {item['size']} px | {page['beside_ms']:+.0f} ms ({low:+.0f} to {high:+.0f}) "
                     f"| {page['beside_percent']:+.1f}% | {page['percent']:+.1f}% ({page['range'][0]:+.1f} to "
                     f"{page['range'][1]:+.1f}; CPU {page['cpu_percent']:+.1f}%) "
                     f"| {slow['beside_ms']:+.0f} ms, {slow['beside_percent']:+.1f}% |")
    lines += ["", "| PNG encoding, a photo | time | size |", "| --- | ---: | ---: |"]
    lines += [f"| {item['encoding']} | {item['ms']:.0f} ms | {item['kB']} kB |" for item in results["png"]]
    lines += ["", "| result path, one 1024 px image | time |", "| --- | ---: |"]
    lines += [f"| {item['path']} | {item['ms']:.0f} ms |" for item in results.get("result_path", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--pairs", type=int, default=5, help="rounds per size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="tiny", help="tiny model size (kolors_app/testing/tiny_presets.py); the "
                                                        "tests' tiny one's U-Net is about 75-80%% of a run, "
                                                        "unet-heavy's more but slow")
    parser.add_argument("--skip-png", action="store_true", help="only the request rounds")
    parser.add_argument("--json", type=Path, default=RESULTS / "api.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    settings = tiny_settings(args.model)
    from kolors_app.testing.tiny import tiny_model_dir

    folder = tiny_model_dir(args.model)
    results = {"model": args.model, "sizes": [], **({"png": [], "result_path": []} if args.skip_png else
                                                    {"png": measure_png(), "result_path": measure_result_path()})}
    for size in args.sizes:
        results["sizes"].append(measure_size(settings, size, args.pairs, folder))
        print(json.dumps({k: v for k, v in results["sizes"][-1].items() if k not in ("walls", "cpus", "inside")}),
              file=sys.stderr, flush=True)
    print(format_results(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
