"""LoRA, styles, dynamic prompts, hires fix, upscalers and X/Y/Z plots."""
