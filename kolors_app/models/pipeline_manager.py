"""PipelineManager: load Kolors once under a memory plan and hand each mode a pipeline sharing the same weights."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from kolors_app.control.controlnets import ControlNetStore
from kolors_app.control.preprocessors import Estimators
from kolors_app.core.config import Settings
from kolors_app.hub import downloads
from kolors_app.core.addons import CONTROLNET_REPOS, INPAINTING_REPO, PATTERNS
from kolors_app.hub.sources import WeightSources
from kolors_app.models import memory
from kolors_app.models.gpu_options import apply_gpu_options
from kolors_app.models.loading import load_kolors, place
from kolors_app.models.memory import Features, Plan, make_plan

log = logging.getLogger(__name__)

IP_ADAPTER_WEIGHTS = downloads.IP_ADAPTER_WEIGHTS


@dataclass(frozen=True)
class PipelineKey:
    """Which pipeline a request needs: its base ("text", "init" or "mask"), IP-Adapter, ControlNet types, U-Net."""

    base: str = "text"
    reference: bool = False
    controls: tuple[str, ...] = ()
    inpainting_unet: bool = False


BASE_KEY = PipelineKey()
# (base, with ControlNet) -> diffusers class. Kolors' own pipelines where they exist; diffusers' SDXL
# pipelines (fed with Kolors embeddings) for inpainting and ControlNet, which Kolors has no pipeline for.
PIPELINE_CLASSES = {
    ("text", False): "KolorsPipeline",
    ("init", False): "KolorsImg2ImgPipeline",
    ("mask", False): "StableDiffusionXLInpaintPipeline",
    ("text", True): "StableDiffusionXLControlNetPipeline",
    ("init", True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("mask", True): "StableDiffusionXLControlNetInpaintPipeline",
}


class PipelineManager:
    """Owns the one loaded copy of Kolors, its memory plan, and the pipelines built on it."""

    def __init__(self, settings: Settings, loader: Callable[[str, Plan], Any] = load_kolors,
                 sources: WeightSources | None = None):
        self.settings = settings
        self._loader = loader
        self.sources = sources or WeightSources.of(settings)
        self._load_lock = threading.Lock()
        # One generation at a time per process: the pipelines share a U-Net and a scheduler slot.
        self.run_lock = threading.Lock()
        self.plan: Plan | None = None
        # The plans a run may step down to on out-of-memory, the current one first.
        self.ladder: list[Plan] = []
        self.status = "not loaded"
        self._pipes: dict[PipelineKey, Any] = {}
        self._ip_parts: dict[str, Any] | None = None
        self._ip_attached = False
        self._offloaded_pipe = None
        self._tokenizer = None
        # --- Control add-ons (kolors_app/control/controlnets.py, preprocessors.py): loaded on first use ---
        self.controlnets = ControlNetStore(lambda kind: self.sources.addon(CONTROLNET_REPOS[kind]), self._set_status)
        self.estimators = Estimators(self.sources.addon, self._set_status)
        self._inpainting_unet = None
        # The model's own scheduler config, kept at load: every run puts its own scheduler on the shared base
        # pipeline, and a config read back from that would carry the last request's sampler options along.
        self._scheduler_config = None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return BASE_KEY in self._pipes

    def load(self):
        """Load the base pipeline once (thread-safe); later calls return it at once."""
        if self.loaded:
            return self._pipes[BASE_KEY]
        with self._load_lock:
            if self.loaded:
                return self._pipes[BASE_KEY]
            plan, self.ladder = make_plan(self.settings)
            try:
                return self._load_plan(plan, self._source())
            except Exception as error:
                self.status = f"load failed: {error}"
                raise

    def _source(self) -> str:
        """A local folder or repo id to load from; a Hub repo is downloaded first, its progress in the status."""
        source = self.sources.model
        if not downloads.is_hub_repo(source):
            return source
        return str(downloads.fetch(source, on_progress=self._progress(source)))

    def _progress(self, repo: str):
        def on_progress(done: int, total: int) -> None:
            percent = f" ({100 * done // total}%)" if total else ""
            self.status = f"downloading {repo}: {done / 1e9:.1f} of {total / 1e9:.1f} GB{percent}"

        return on_progress

    def _load_plan(self, plan: Plan, source: str):
        """Load and place the model under plan, stepping further down while placing it runs out of memory."""
        while True:
            self.status = f"loading {self.settings.model} ({plan.describe()})"
            log.info(self.status)
            failed = None
            try:
                pipe = place(self._loader(source, plan), plan)
            except Exception as error:
                if not memory.is_out_of_memory(error) or memory.next_plan(plan, self.ladder) is None:
                    raise
                failed = plan
            if failed is None:
                break
            pipe = None
            self.release_memory()
            plan = memory.next_plan(failed, self.ladder)
            log.warning("out of GPU memory while loading with plan %s; trying plan %s", failed.name, plan.name)
        # --- speed options (attention, channels_last, fuse_qkv, compile: kolors_app/models/gpu_options.py) ---
        apply_gpu_options(pipe, self.settings, plan)
        # --- end speed options ---
        self.plan = plan
        self._scheduler_config = pipe.scheduler.config
        self._pipes[BASE_KEY] = pipe
        self.status = plan.describe()
        return pipe

    def step_down(self, failed: Plan | None = None) -> Plan:
        """Drop every pipeline and reload under the next plan of the ladder; raise OutOfGPUMemory if none is left."""
        with self._load_lock:
            failed = failed or self.plan
            following = memory.next_plan(failed, self.ladder)
            if following is None:
                hint = ("set --text-encoder auto --offload auto so that runs can step down"
                        if len(self.ladder) == 1 and failed.device != "cpu" else "lower width/height or num_images")
                raise memory.OutOfGPUMemory(f"Out of GPU memory with plan {failed.name}, the last plan; {hint}")
            self._unload()
            self._load_plan(following, self._source())
            self.status = f"{self.plan.describe()} (stepped down from {failed.name}: out of GPU memory)"
            return self.plan

    def _unload(self) -> None:
        """Forget every pipeline and module so that their memory can be freed."""
        if self.plan.offload != "none":
            for pipe in self._pipes.values():
                pipe.remove_all_hooks()
        self._pipes.clear()
        self._ip_parts, self._ip_attached, self._offloaded_pipe = None, False, None
        self.controlnets.clear()
        self._inpainting_unet = None
        self.release_memory()

    def configure_vae(self, features: Features) -> None:
        """On a GPU: VAE slicing for batches, tiling above the native size or where the plan says; or as set."""
        vae = self.load().vae
        # CPU RAM is not the limit, and both change pixels slightly: on the CPU only the settings turn them on.
        automatic = self.plan.device != "cpu"
        if self.settings.vae_tiling or (automatic and memory.uses_vae_tiling(self.plan, features)):
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if self.settings.vae_slicing or (automatic and features.num_images > 1):
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    def record_peak(self) -> None:
        """Show the measured peak GPU memory of the last run in the status."""
        if self.plan is None or self.plan.device != "cuda" or not torch.cuda.is_available():
            return
        peak = torch.cuda.max_memory_reserved() / memory.GiB
        self.status = f"{self.status.split(' · last run peak')[0]} · last run peak {peak:.1f} GiB"

    @property
    def scheduler_config(self) -> dict:
        """The model's own scheduler config as loaded (keeps Kolors' 1100-step training schedule)."""
        self.load()
        return self._scheduler_config

    def pipeline(self, key: PipelineKey = PipelineKey()):
        """The diffusers pipeline for this key; every one shares the base pipeline's modules."""
        import diffusers

        base = self.load()
        if key not in self._pipes or key.controls:
            parts: dict[str, Any] = {}
            if key.reference:
                ip_parts = self._load_ip_adapter()
                parts.update(image_encoder=ip_parts["image_encoder"], feature_extractor=ip_parts["feature_extractor"])
            cls = getattr(diffusers, PIPELINE_CLASSES[key.base, bool(key.controls)])
            if cls.__name__.startswith("StableDiffusionXL"):
                # Kolors has one text encoder; prompts arrive as embeddings, so the SDXL pipelines need no second.
                parts.update(text_encoder_2=None, tokenizer_2=None)
            if key.inpainting_unet:
                parts["unet"] = self.inpainting_unet()
            if key.controls:
                # Imported here: it imports diffusers, which the engine's import must not pay for.
                from kolors_app.control.kolors_controlnet import combined

                # Built for each run, not kept: a ControlNet released under the budget must not stay referenced.
                parts["controlnet"] = combined(self.controlnets.get(key.controls, self.plan.dtype, self._addon_device(),
                                                                    memory.addon_budget_bytes(self.plan)))
                memory.learn_sizes(controlnet=max(self.controlnets.sizes().values()))
                pipe = cls.from_pipe(base, **parts)
                self._pipes.pop(key, None)
            else:
                self._pipes[key] = cls.from_pipe(base, **parts)
        pipe = self._pipes.get(key) or pipe
        self._use_ip_adapter(key.reference)
        self._apply_offload(pipe)
        return pipe

    def _set_status(self, text: str | None) -> None:
        """An add-on's loading line; None when it is loaded (the plan's line comes back)."""
        plan = getattr(self, "plan", None)
        self.status = text or (plan.describe() if plan is not None else "not loaded")

    def _addon_device(self) -> str | None:
        """Where add-on weights go when loaded: the plan's device without offload; the hooks move them otherwise."""
        return self.plan.device if self.plan.offload == "none" else None

    def inpainting_unet(self):
        """Kolors-Inpainting's 9-channel U-Net, loaded once; its text encoder, VAE and scheduler are never read."""
        if self._inpainting_unet is None:
            from diffusers import UNet2DConditionModel

            source = self.sources.addon(INPAINTING_REPO)
            if downloads.is_hub_repo(source):
                source = str(downloads.fetch_files(source, PATTERNS["inpainting"], on_progress=self._progress(source)))
            self.status = f"loading the inpainting U-Net from {source}"
            variant = "fp16" if downloads.has_variant(Path(source), "fp16") else None
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", variant=variant,
                                                        torch_dtype=self.plan.dtype).eval()
            if self._addon_device() is not None:
                unet.to(self._addon_device())
            memory.learn_sizes(inpainting_unet=sum(t.numel() * t.element_size() for t in unet.parameters()))
            self._inpainting_unet = unet
            self.status = self.plan.describe()
        return self._inpainting_unet

    def _apply_offload(self, pipe) -> None:
        # Offload hooks live on the shared modules, so they are re-attached when another pipeline runs.
        if self.plan.offload == "none" or pipe is self._offloaded_pipe:
            return
        if self.plan.offload == "model":
            pipe.enable_model_cpu_offload(device=self.plan.device)
        else:
            pipe.enable_sequential_cpu_offload(device=self.plan.device)
        self._offloaded_pipe = pipe

    def _load_ip_adapter(self) -> dict[str, Any]:
        """Load the CLIP image encoder and the IP-Adapter weights once, then detach them from the U-Net."""
        if self._ip_parts is not None:
            return self._ip_parts
        from diffusers import KolorsPipeline
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        base = self.load()
        repo, revision = self.sources.ip_adapter, self.settings.ip_adapter_revision
        if downloads.is_hub_repo(repo):
            repo = str(downloads.fetch(repo, revision, variant=None, on_progress=self._progress(repo), ip_adapter=True))
        self.status = f"loading IP-Adapter {repo}"
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            repo, subfolder="image_encoder", revision=revision, dtype=self.plan.dtype)
        processor = CLIPImageProcessor.from_pretrained(repo, subfolder="image_encoder", revision=revision)
        if self.plan.offload == "none":
            encoder.to(self.plan.device)
        unet = base.unet
        plain = {"processors": unet.attn_processors, "text_proj": unet.encoder_hid_proj}
        loader_pipe = KolorsPipeline.from_pipe(base, image_encoder=encoder, feature_extractor=processor)
        loader_pipe.load_ip_adapter(repo, subfolder="", weight_name=IP_ADAPTER_WEIGHTS, revision=revision,
                                    image_encoder_folder=None)
        self._ip_parts = {
            "image_encoder": encoder, "feature_extractor": processor, "plain": plain,
            "processors": unet.attn_processors, "image_proj": unet.encoder_hid_proj,
        }
        self._ip_attached = True
        self._use_ip_adapter(False)
        self.status = self.plan.describe()
        return self._ip_parts

    def _use_ip_adapter(self, wanted: bool) -> None:
        """Swap the IP-Adapter's attention processors in or out; no weight is loaded or copied."""
        if self._ip_parts is None or wanted == self._ip_attached:
            return
        unet, parts = self._pipes[BASE_KEY].unet, self._ip_parts
        # The image projection has attention layers of its own: swap it before the processors.
        if wanted:
            unet.text_encoder_hid_proj = parts["plain"]["text_proj"]
            unet.encoder_hid_proj = parts["image_proj"]
            unet.config.encoder_hid_dim_type = "ip_image_proj"
            unet.set_attn_processor(dict(parts["processors"]))
        else:
            unet.text_encoder_hid_proj = None
            unet.encoder_hid_proj = parts["plain"]["text_proj"]
            unet.config.encoder_hid_dim_type = "text_proj"
            unet.set_attn_processor(dict(parts["plain"]["processors"]))
        self._ip_attached = wanted

    @property
    def tokenizer(self):
        """The model's tokenizer, without loading the weights (the UI counts tokens while you type)."""
        if self.loaded:
            return self._pipes[BASE_KEY].tokenizer
        if self._tokenizer is None:
            # Importing diffusers/transformers in two threads at once races their lazy imports: never
            # load the tokenizer while the model loads (the caller shows '?' and asks again later).
            if not self._load_lock.acquire(blocking=False):
                raise RuntimeError("the model is loading")
            try:
                from diffusers.pipelines.kolors import ChatGLMTokenizer

                self._tokenizer = ChatGLMTokenizer.from_pretrained(self.sources.model, subfolder="tokenizer")
            finally:
                self._load_lock.release()
        return self._tokenizer

    def tokenizer_length(self, text: str) -> int:
        """How many tokens the text encoder sees for this text (the tokenizer adds 2 prefix tokens)."""
        return len(self.tokenizer(text)["input_ids"])

    def release_memory(self) -> None:
        """Give GPU memory back after a failed or stopped run: offloaded models leave the GPU, caches are emptied."""
        if self._offloaded_pipe is not None and self.plan.offload == "model":
            self._offloaded_pipe.maybe_free_model_hooks()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
