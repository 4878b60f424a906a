"""Build a tiny random-weight Kwai-Kolors/Kolors-diffusers offline: ChatGLM tokenizer and encoder, U-Net, VAE."""

import copy
import io
import json
from pathlib import Path

import sentencepiece
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, KolorsPipeline, UNet2DConditionModel
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel, RMSNorm
from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer

from kolors_app.testing.tiny_presets import (CORPUS_PATH, SCHEDULER_CONFIG, SEED, TOKENIZER_CONFIG, preset_of, seeded,
                                             unet_config)

def _write_tokenizer(path: Path, vocab_size: int) -> ChatGLMTokenizer:
    """Train a sentencepiece model on the bundled corpus and write the ChatGLM tokenizer folder."""
    model = io.BytesIO()
    # byte_fallback lets any text (emoji, rare CJK) tokenize; one thread keeps the model byte-identical.
    sentencepiece.SentencePieceTrainer.train(
        input=str(CORPUS_PATH),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    (path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    return ChatGLMTokenizer.from_pretrained(path)


def _text_encoder(preset: dict, vocab_size: int) -> ChatGLMModel:
    """A ChatGLM3-style encoder: original rope, 2-group multi-query attention, qkv bias, RMSNorm."""
    config = ChatGLMConfig(
        **preset["text_encoder"],
        padded_vocab_size=-(-vocab_size // 64) * 64,
        seq_length=256,
        original_rope=True,
        multi_query_attention=True,
        multi_query_group_num=2,
        add_qkv_bias=True,
        rmsnorm=True,
        architectures=["ChatGLMModel"],
    )
    # The default empty_init=True leaves every weight as uninitialised memory.
    with seeded(SEED):
        model = ChatGLMModel(config, empty_init=False)
    # RMSNorm weights come from torch.empty even so; anything but ones gives NaN images.
    for module in model.modules():
        if isinstance(module, RMSNorm):
            torch.nn.init.ones_(module.weight)
    return model.eval()

def _vae(preset: dict) -> AutoencoderKL:
    """An SDXL-style VAE; four blocks keep the real 8x down-sampling."""
    with seeded(SEED + 2):
        vae = AutoencoderKL(
            **preset["vae"],
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=256,
            scaling_factor=0.13025,
            force_upcast=True,
        )
    return vae.eval()


def build_kolors_repo(path, size: str = "tiny") -> Path:
    """Write a tiny Kwai-Kolors/Kolors-diffusers (fp32 files and the fp16 variant) into path."""
    preset, path = preset_of(size), Path(path)
    tokenizer = _write_tokenizer(path / "tokenizer", preset["tokenizer_vocab_size"])
    with seeded(SEED + 1):
        unet = UNet2DConditionModel(**unet_config(preset)).eval()
    components = {
        "vae": _vae(preset),
        "text_encoder": _text_encoder(preset, tokenizer.vocab_size),
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        "image_encoder": None,
        "feature_extractor": None,
        "force_zeros_for_empty_prompt": False,
    }
    half = {
        name: copy.deepcopy(part).to(torch.float16) if isinstance(part, torch.nn.Module) else part
        for name, part in components.items()
    }
    KolorsPipeline(**half).save_pretrained(path, variant="fp16")
    # Saving rewrites each config's torch_dtype, so the fp32 save comes last.
    KolorsPipeline(**components).save_pretrained(path)
    # save_pretrained writes every default; keep the published files key for key.
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    (path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    return path

