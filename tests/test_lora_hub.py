"""Issue 18, finding 1: LoRA names that are Hub repo ids, against a stand-in Hub on loopback.

A public app downloads only the repos --lora-hub-allow names; a stranger's names are refused at once, before any
request reaches the Hub. An allowed repo's size is read from the Hub's metadata before the download, the download
happens while another job holds the GPU slot, and the name is listed only once its file loaded.
"""

import dataclasses
import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from gradio_http import Raw, assert_short_public_message, free_port, small, wait_until

from kolors_app.core.logins import Login
from kolors_app.core.config import Settings
from kolors_app.core.errors import ValidationError
from kolors_app.creative import lora
from kolors_app.testing import tiny_creative

SMALL = {"width": 256, "height": 256, "num_inference_steps": 2}
AUTH = ("tester", "s3cret")
SMALL_REPO, HUGE_REPO, FOREIGN_REPO = "tester/tiny-hub-lora", "tester/huge-lora", "tester/sd15-lora"
HUGE_BYTES = 50 * 2**30  # what the huge repo's metadata claims
STRANGERS = [f"stranger{i}/repo{i}" for i in range(8)]
ANSWER_SECONDS = 1.0  # the finding's bound for a refusal


class StandInHub:
    """A Hub on loopback: HEAD/GET of resolve URLs for a few repos, every request recorded."""

    def __init__(self, files: dict[str, bytes], claimed: dict[str, int]):
        self.files, self.claimed = files, claimed
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

            def do_POST(self):
                hub.answer(self, body=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/main/pytorch_lora_weights\.safetensors", handler.path)
        repo = match.group(1) if match else None
        if repo not in self.files and repo not in self.claimed:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "RepoNotFound")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = self.files.get(repo, b"")
        size = len(data) if repo in self.files else self.claimed[repo]
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
        handler.send_header("ETag", f'"{hashlib.sha256(data or repo.encode()).hexdigest()}"')
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        if body and handler.command == "GET":
            handler.wfile.write(data)

    def asked_for(self, repo: str) -> list[str]:
        """The methods of the requests that named this repo."""
        return [method for method, path in self.requests if f"/{repo}/" in path]


@pytest.fixture(scope="module")
def lora_files(manager, tmp_path_factory):
    """The bytes of a small Kolors LoRA and of an SD1.5 one, as a Hub repo would hold them."""
    folder = tmp_path_factory.mktemp("hub-loras")
    pipe = manager.load()
    small_file = tiny_creative.build_diffusers_lora(pipe, folder / "small") / "pytorch_lora_weights.safetensors"
    foreign = tiny_creative.build_mismatched_lora(pipe, folder / "sd15.safetensors")
    return {SMALL_REPO: small_file.read_bytes(), FOREIGN_REPO: foreign.read_bytes()}


@pytest.fixture(scope="module")
def own_manager(settings, manager, tmp_path_factory):
    """A tiny manager of its own, loaded before the Hub is switched to the stand-in (its LoRAs never leak)."""
    from kolors_app.models.pipeline_manager import PipelineManager

    folder = tmp_path_factory.mktemp("public-lora")
    app_settings = dataclasses.replace(settings, port=free_port(), outputs_dir=folder / "outputs", api=True,
                                       api_auth=(Login(*AUTH),), lora_dir=folder / "loras",
                                       lora_hub_allow=f"{SMALL_REPO},{HUGE_REPO},{FOREIGN_REPO}")
    tiny_creative.build_kohya_lora(manager.load(), folder / "loras" / "local-style.safetensors")
    own = PipelineManager(app_settings)
    own.load()
    return own, folder


@pytest.fixture(scope="module")
def hub(lora_files, own_manager, tmp_path_factory):
    """The stand-in Hub as huggingface_hub's endpoint, online, with an empty cache of its own."""
    import huggingface_hub.constants as constants

    stand_in = StandInHub(lora_files, {HUGE_REPO: HUGE_BYTES})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "ENDPOINT", stand_in.url)
        template = stand_in.url + "/{repo_id}/resolve/{revision}/{filename}"
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("stand-in-cache")))
        yield stand_in
    stand_in.server.shutdown()


@pytest.fixture(scope="module")
def public_app(own_manager, hub):
    """The app as on a Space (public), REST and A1111 APIs on, allowing three tester repos: (URL, context)."""
    from kolors_app.launch import launch

    manager, folder = own_manager
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPACE_ID", "tester/kolors-studio")
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app, ctx = launch(manager.settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{manager.settings.port}", ctx
        finally:
            app.close()


def a1111(url: str, prompt: str) -> httpx.Response:
    return httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": prompt, "seed": 3, "steps": 2, "width": 256,
                                                         "height": 256}, auth=AUTH, timeout=120)


def rest(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/kolors/v1/generate", json={"prompt": "a fox", "seed": 3, **SMALL, **body}, auth=AUTH,
                      timeout=120)


def listed(url: str) -> list[str]:
    return [item["name"] for item in httpx.get(f"{url}/sdapi/v1/loras", auth=AUTH, timeout=30).json()]


def no_server_folder(message: str, folder) -> None:
    import huggingface_hub.constants as constants

    assert str(folder) not in message and constants.HF_HUB_CACHE not in message, message
    assert_short_public_message(message)


def test_eight_stranger_repos_are_refused_at_once_and_never_reach_the_hub(public_app, hub, own_manager):
    url, _ctx = public_app
    prompt = "a fox " + " ".join(f"<lora:{name}:1>" for name in STRANGERS)
    started = time.monotonic()
    answer = a1111(url, prompt)
    seconds = time.monotonic() - started
    assert answer.status_code == 422 and answer.json()["field"] == "prompt", answer.text
    assert seconds < ANSWER_SECONDS, seconds
    assert "unknown LoRA 'stranger0/repo0'" in answer.json()["detail"]
    no_server_folder(answer.json()["detail"], own_manager[1])
    as_list = rest(url, {"loras": [{"name": name, "weight": 1} for name in STRANGERS]})
    assert as_list.status_code == 422 and as_list.json()["field"] == "loras", as_list.text
    assert not any(hub.asked_for(name) for name in STRANGERS), hub.requests
    assert listed(url) == ["local-style"]  # no stranger's name is kept


def test_path_like_names_are_refused_by_name(public_app, hub):
    url, _ctx = public_app
    for name in ("a/..", "../x", "/etc/passwd", "a//b", "a\\b"):
        answer = rest(url, {"loras": [{"name": name}]})
        assert answer.status_code == 422 and answer.json()["field"] == "loras.0.name", (name, answer.text)
        assert "never a path" in answer.json()["detail"]
    tagged = a1111(url, "a fox <lora:a/..:1>")
    assert tagged.status_code == 422 and tagged.json()["field"] == "prompt", tagged.text
    assert not any(".." in path for _method, path in hub.requests) and ".." not in "".join(listed(url))
    with pytest.raises(lora.LoraError, match="unknown LoRA 'a/..'"):
        lora.LoraLibrary("/nonexistent").check("a/..")  # also when the schema is bypassed


def test_a_missing_lora_is_a_4xx_without_server_folders_at_every_entrance(public_app, own_manager):
    url, _ctx = public_app
    folder = own_manager[1]
    answer = rest(url, {"loras": [{"name": "missing"}]})
    assert answer.status_code == 422 and "unknown LoRA 'missing'" in answer.json()["detail"]
    no_server_folder(answer.json()["detail"], folder)
    answer = a1111(url, "a fox <lora:missing:0.5>")
    assert answer.status_code == 422 and answer.json()["field"] == "prompt"
    no_server_folder(answer.json()["detail"], folder)
    message = Raw(url).error_of("text_to_image", small(prompt="<lora:missing:1> a fox"))
    assert "unknown LoRA 'missing'" in message
    no_server_folder(message, folder)


def test_an_allowed_repo_downloads_outside_the_gpu_slot_and_is_listed_once_loaded(public_app, hub):
    url, ctx = public_app
    assert SMALL_REPO not in listed(url)
    answers = []
    # Another job holds the GPU slot: the download must still happen, while this job waits for the slot.
    with ctx.engine.executor._slot:
        sender = threading.Thread(target=lambda: answers.append(a1111(url, f"a fox <lora:{SMALL_REPO}:1>")))
        sender.start()
        assert wait_until(lambda: "GET" in hub.asked_for(SMALL_REPO), timeout=60), hub.requests
        assert hub.asked_for(SMALL_REPO)[0] == "HEAD"  # the size was read before the download
        assert wait_until(lambda: SMALL_REPO in listed(url), timeout=60)  # loaded: listed before it runs
        assert not answers
    sender.join(timeout=120)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    gets = hub.asked_for(SMALL_REPO).count("GET")
    again = rest(url, {"loras": [{"name": SMALL_REPO, "weight": 0.5}]})
    assert again.status_code == 200 and hub.asked_for(SMALL_REPO).count("GET") == gets  # never downloaded twice


def test_a_repo_claiming_a_huge_file_is_refused_from_its_metadata_alone(public_app, hub, own_manager):
    url, _ctx = public_app
    started = time.monotonic()
    answer = rest(url, {"loras": [{"name": HUGE_REPO}]})
    assert answer.status_code == 422 and answer.json()["code"] == "out_of_range", answer.text
    assert time.monotonic() - started < ANSWER_SECONDS
    assert "51,200 MB; at most 1,024 MB" in answer.json()["detail"]
    no_server_folder(answer.json()["detail"], own_manager[1])
    assert hub.asked_for(HUGE_REPO) == ["HEAD"] and HUGE_REPO not in listed(url)


def test_a_repo_whose_file_is_not_a_kolors_lora_is_never_listed(public_app, hub):
    url, _ctx = public_app
    answer = rest(url, {"loras": [{"name": FOREIGN_REPO}]})
    assert answer.status_code == 422 and "sd_v1" in answer.json()["detail"], answer.text
    assert FOREIGN_REPO not in listed(url)


def test_offline_an_allowed_repo_not_downloaded_is_a_4xx(public_app, hub, monkeypatch):
    import huggingface_hub.constants as constants

    url, _ctx = public_app
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    answer = rest(url, {"loras": [{"name": HUGE_REPO}]})
    assert answer.status_code == 422, answer.text
    assert "is not downloaded on this server and offline mode is on" in answer.json()["detail"]
    assert len(hub.requests) == before


def test_locally_any_repo_id_downloads_and_the_hub_names_kept_are_capped(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    access = lora.HubAccess.of(Settings())
    assert access.allowed is None and access.max_bytes == 1024 * 2**20
    assert lora.HubAccess.of(Settings(share=True)).allowed == ()
    assert lora.HubAccess.of(Settings(share=True, lora_hub_allow="tester/*")).permits(SMALL_REPO)
    copies = [f"copy/lora-{i}" for i in range(3)]
    hub.files.update({name: hub.files[SMALL_REPO] for name in copies})
    monkeypatch.setattr(lora, "MAX_HUB_LORAS", 2)
    library = lora.LoraLibrary(tmp_path, access)
    for name in copies:
        assert library.fetch(name).repo_id == name
    assert library.names() == copies[1:]
    with pytest.raises(ValidationError, match="^loras: Hub LoRA 'nobody/nothing' was not found on the Hub"):
        library.fetch("nobody/nothing")
    assert library.names() == copies[1:]
