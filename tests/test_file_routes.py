"""The file routes of the running app serve its own temporary and output files, nothing else."""

from pathlib import Path

import httpx
from gradio_http import ROOT, Raw, small
from image_bytes import RED, encoded

from kolors_app.outputs.history import OutputStore


def test_file_routes_serve_only_the_apps_files(served, live_app):
    raw = Raw(served.url)
    done = raw.queued("text_to_image", small(seed=14))
    made = done["output"]["data"][0][0]["image"]["url"]
    assert httpx.get(made, timeout=30).headers["content-type"] == "image/png"  # what the app made: served
    saved = OutputStore(served.ctx.settings.outputs_dir).list_recent(1)[0]["path"]  # saved server-side (local)
    # The history lives in the browser now; a file that would be secret if it existed is still refused.
    secret = served.folder / "config" / "kolors-studio" / "history-secret"
    refused = ["/etc/passwd", "/etc/hostname", str(ROOT / "app.py"), "app.py", "kolors_app/launch.py",
               "../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", str(saved), str(secret),
               f"{served.folder}/gradio/../config/kolors-studio/history-secret",
               f"http://127.0.0.1:{httpx.URL(live_app).port}/config", "https://huggingface.co/robots.txt",
               "HTTP://example.com/x.png", "file:///etc/passwd"]
    for target in refused:
        for route in ("/gradio_api/file=", "/gradio_api/file/"):
            answer = raw.get(route + target)
            assert answer.status_code in (403, 404), (route + target, answer.status_code)
    assert raw.get("/gradio_api/file=https://huggingface.co/").text == "Remote files are not served."
    for target in ("/gradio_api/proxy=http://127.0.0.1:1/x", "/gradio_api/runs", "/monitoring",
                   "/gradio_api/monitoring"):
        assert raw.get(target).status_code >= 400, target


def test_upload_names_cannot_place_files_outside_the_upload_folder(raw):
    payload = raw.upload("../../../../tmp/escaped.png", encoded(RED, "PNG"))
    upload_dir = Path(raw.upload("plain.png", encoded(RED, "PNG"))["path"]).parent.parent
    assert Path(payload["path"]).resolve().is_relative_to(upload_dir.resolve())
    assert not Path("/tmp/escaped.png").exists()
