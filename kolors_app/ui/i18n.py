"""Interface strings in English and Chinese; gradio picks the browser's language."""

from __future__ import annotations

import re

import gradio as gr

STRINGS = {
    "en": {
        "title": "Kolors Studio",
        "subtitle": "Bilingual text-to-image with Kwai Kolors",
        "text_to_image": "Text to image",
        "image_to_image": "Image to image",
        "ip_adapter": "IP-Adapter",
        "history": "History",
        "png_info": "PNG info",
        "prompt": "Prompt",
        "prompt_placeholder": "Describe the image, in Chinese or English",
        "negative_prompt": "Negative prompt",
        "tokens": "Tokens",
        "aspect": "Aspect ratio",
        "custom": "Custom",
        "width": "Width",
        "height": "Height",
        "steps": "Steps",
        "guidance": "Guidance (CFG)",
        "scheduler": "Sampler",
        "seed": "Seed (-1 = random)",
        "random_seed": "Random seed",
        "reuse_seed": "Reuse last seed",
        "num_images": "Images",
        "generate": "Generate",
        "stop": "Stop",
        "gallery": "Results",
        "parameters": "Parameters of the selected image",
        "use_settings": "Use these settings",
        "send_i2i": "Send to image-to-image",
        "send_ip": "Send to IP-Adapter",
        "init_image": "Init image",
        "strength": "Strength (how much to repaint)",
        "reference_image": "Reference image",
        "ip_scale": "IP-Adapter scale",
        "optional_init": "Optional init image",
        "examples": "Examples",
        "advanced": "Advanced",
        "search": "Search",
        "refresh": "Refresh",
        "restore": "Restore selected",
        "delete": "Delete selected",
        "clear": "Clear history",
        "export": "Export JSON",
        "import": "Import JSON",
        "history_help": "Kept only in this browser (IndexedDB): every image at full size with its parameters, init and "
                        "reference images. Nothing is sent to the server until you restore an entry.",
        "png_drop": "Drop a PNG (Kolors Studio or AUTOMATIC1111)",
        "png_parameters": "Parameters",
        "png_restore": "Restore into its tab",
        "status": "Status",
        "seed_of_selected": "Use this image's seed",
        "resize_mode": "Resize to the size",
        "resize_crop": "Crop",
        "resize_fit": "Fit (pad)",
        "resize_stretch": "Stretch",
        "infotext": "Parameters (A1111 infotext, copyable)",
        "json": "All parameters as JSON",
        "progress_idle": "Ctrl+Enter (⌘+Enter) in a prompt box generates.",
        "reset_settings": "Reset this tab's settings",
        "settings_note": "This tab's last settings are kept in this browser and come back after a reload.",
        "history_search": "Search prompts, seeds, samplers",
        "png_text": "Parameters as text",
        "category": "Category",
        "example_prompt": "Prompt",
        "example_negative": "Negative prompt",
        # --- Control (issue 11) ---
        "controlnet": "ControlNet", "control_unit": "Unit", "control_image": "Control image (a photo, or a map)",
        "control_type": "Type", "control_preprocess": "Make the map from the image (off: the image is the map)",
        "control_scale": "Conditioning scale", "control_start": "Start (fraction of steps)",
        "control_end": "End (fraction of steps)", "inpaint": "Inpaint", "inpaint_image": "Image",
        "inpaint_paint": "Paint the mask (white = repaint)", "inpaint_mask": "Mask (white = repaint)",
        "mask_blur": "Mask blur (px)", "inpaint_area": "Inpaint area",
        "inpaint_padding": "Padding around the mask (px)",
        "keep_unmasked": "Keep pixels outside the mask exactly", "inpaint_model": "U-Net",
        "outpaint": "Outpaint: extend the canvas (px)", "outpaint_left": "Left", "outpaint_right": "Right",
        "outpaint_up": "Up", "outpaint_down": "Down", "give_again": "Give these images again",
        "control_help": "Up to three units at once (e.g. depth + pose). Each unit's map appears after the images; "
                        "☑ make the map from a photo, or ☐ give a map you already have.",
        "control_unit_1": "Unit 1", "control_unit_2": "Unit 2", "control_unit_3": "Unit 3",
        "control_none": "None (off)", "control_depth": "Depth", "control_pose": "Pose (body)",
        "control_map": "Map (what the ControlNet sees)", "control_low": "Canny low threshold",
        "control_high": "Canny high threshold", "control_show_map": "Show the map",
        "control_use_map": "Use the map as the image",
        "inpaint_placeholder": "Upload an image above, then paint here where it should change",
        "inpaint_help": "Paint with the brush where the picture should change (the eraser takes strokes back); "
                        "a mask file, if given, is used instead.",
        "area_whole": "Whole picture", "area_masked": "Only masked (full resolution)",
        "model_inpainting": "Inpainting model", "model_base": "Base model",
    },
    "zh": {
        "title": "可图工作室",
        "subtitle": "可图 Kolors 中英双语文生图",
        "text_to_image": "文生图",
        "image_to_image": "图生图",
        "ip_adapter": "参考图 IP-Adapter",
        "history": "历史记录",
        "png_info": "图片信息",
        "prompt": "提示词",
        "prompt_placeholder": "用中文或英文描述画面",
        "negative_prompt": "反向提示词",
        "tokens": "词元数",
        "aspect": "画幅比例",
        "custom": "自定义",
        "width": "宽度",
        "height": "高度",
        "steps": "步数",
        "guidance": "引导系数 (CFG)",
        "scheduler": "采样器",
        "seed": "种子 (-1 为随机)",
        "random_seed": "随机种子",
        "reuse_seed": "沿用上次种子",
        "num_images": "张数",
        "generate": "生成",
        "stop": "停止",
        "gallery": "结果",
        "parameters": "所选图片的参数",
        "use_settings": "使用这些设置",
        "send_i2i": "发送到图生图",
        "send_ip": "发送到参考图",
        "init_image": "初始图片",
        "strength": "重绘强度",
        "reference_image": "参考图片",
        "ip_scale": "参考强度",
        "optional_init": "可选的初始图片",
        "examples": "示例",
        "advanced": "高级",
        "search": "搜索",
        "refresh": "刷新",
        "restore": "恢复所选",
        "delete": "删除所选",
        "clear": "清空历史",
        "export": "导出 JSON",
        "import": "导入 JSON",
        "history_help": "只保存在本浏览器中（IndexedDB）：每张原尺寸图片及其参数、初始图片和参考图片。"
                        "恢复一条记录之前，不会向服务器发送任何内容。",
        "png_drop": "拖入 PNG（可图工作室或 AUTOMATIC1111）",
        "png_parameters": "参数",
        "png_restore": "恢复到对应标签页",
        "status": "状态",
        "seed_of_selected": "使用这张图的种子",
        "resize_mode": "缩放到目标尺寸",
        "resize_crop": "裁剪",
        "resize_fit": "适应（留边）",
        "resize_stretch": "拉伸",
        "infotext": "参数（A1111 格式，可复制）",
        "json": "全部参数（JSON）",
        "progress_idle": "在提示词框中按 Ctrl+Enter（⌘+Enter）即可生成。",
        "reset_settings": "重置本页设置",
        "settings_note": "本页上次的设置保存在本浏览器中，刷新后自动恢复。",
        "history_search": "搜索提示词、种子、采样器",
        "png_text": "参数文本",
        "category": "类别",
        "example_prompt": "提示词",
        "example_negative": "反向提示词",
        # --- Control (issue 11) ---
        "controlnet": "ControlNet 控制", "control_unit": "单元", "control_image": "控制图（照片或已做好的图）",
        "control_type": "类型", "control_preprocess": "由图像生成控制图（关闭：图像本身即控制图）",
        "control_scale": "控制强度", "control_start": "开始（步数比例）", "control_end": "结束（步数比例）",
        "inpaint": "局部重绘", "inpaint_image": "图像", "inpaint_paint": "绘制蒙版（白色 = 重绘）",
        "inpaint_mask": "蒙版（白色 = 重绘）", "mask_blur": "蒙版模糊（像素）", "inpaint_area": "重绘区域",
        "inpaint_padding": "蒙版周围留白（像素）", "keep_unmasked": "蒙版外的像素保持不变",
        "inpaint_model": "U-Net", "outpaint": "扩图：扩展画布（像素）", "outpaint_left": "左",
        "outpaint_right": "右", "outpaint_up": "上", "outpaint_down": "下", "give_again": "请重新提供这些图像",
        "control_help": "最多同时使用三个单元（例如深度 + 姿态）。每个单元的控制图显示在结果图片之后；"
                        "☑ 由照片生成控制图，☐ 直接使用已有的控制图。",
        "control_unit_1": "单元 1", "control_unit_2": "单元 2", "control_unit_3": "单元 3",
        "control_none": "无（关闭）", "control_depth": "深度", "control_pose": "姿态（身体）",
        "control_map": "控制图（ControlNet 看到的内容）", "control_low": "Canny 低阈值",
        "control_high": "Canny 高阈值", "control_show_map": "显示控制图", "control_use_map": "把控制图用作图像",
        "inpaint_placeholder": "先在上方上传图片，再在这里涂抹需要修改的地方",
        "inpaint_help": "用画笔涂抹需要修改的地方（橡皮擦可擦除笔迹）；若提供了蒙版文件，则以蒙版文件为准。",
        "area_whole": "整张图片", "area_masked": "仅蒙版区域（全分辨率）",
        "model_inpainting": "重绘模型", "model_base": "基础模型",
    },
}

i18n = gr.I18n(**STRINGS)

# What the server says at run time (toasts, captions, the progress and status lines): gradio translates only
# component labels, so these are picked by the visitor's Accept-Language header, which follows the browser.
MESSAGES = {
    "en": {
        "title_invalid_input": "Invalid input",
        "title_invalid_parameters": "Invalid parameters",
        "title_nothing_selected": "Nothing selected",
        "title_unreadable": "Unreadable image",
        "title_warning": "Warning",
        "title_info": "Info",
        "title_error": "Error",
        "nothing_to_restore": "Nothing to restore: select an image or an entry first.",
        "no_image_yet": "No image yet: generate one first.",
        "restored": "Settings restored into {tab}.",
        "sent": "Sent to {tab} with its prompt, negative prompt, seed and size.",
        "settings_reset": "This tab's settings are back to the defaults.",
        "snapped": "{field} {value} is not allowed: set to {snapped} (multiples of 8 from {low} to {high}).",
        "no_parameters": "This image carries no generation parameters.",
        "image_required": "{field}: an image is required.",
        "seed_set": "Seed set to {seed}.",
        "caption_seed": "seed {seed}",
        "caption_control_map": "control map {index} ({type})",
        "caption_preview": "preview, step {step}",
        "caption_stopped": "stopped at step {step}/{total}",
        "stopped": "Stopped at step {step} of {total}; the last preview is kept.",
        "stopped_early": "Stopped before the first step.",
        "waiting": "Waiting for the model…",
        "loading": "Loading the model (the first run also downloads it)…",
        "progress": "Sampling step {step}/{total} · {elapsed} · {rate} it/s · ETA {eta}",
        "done": "Done: {count} image(s) in {seconds} s · {rate} it/s · seed {seeds}",
        "failed": "Generation failed ({name}). The server is still running; please try again.",
        "oom": "Out of GPU memory, even with the smallest memory plan: try a smaller size or fewer images.",
        "unavailable": ("The model is not available on this server yet; its operator finds the details in the "
                        "server log."),
        "status_model": "Model",
        "title_images": "Images",
        "give_again": "Give these images again: {names}.",
        "control_choose_type": "choose canny, depth or pose first",
        "control_no_map": "No map yet: click “Show the map” first.",
        "control_map_used": "The map is now the unit's image, with “make the map” off.",
    },
    "zh": {
        "refused_over_budget": "{field}：此任务的计算量超过本服务器的上限（最多 {max:,.0f} 百万像素·步："
                               "尺寸 × 张数 × 步数，含高清修复与 X/Y/Z 单元）。请降低尺寸、张数、步数或单元数。",
        "refused_over_output_cap": "{field}：此任务生成的图像超过本服务器的上限（最多 {max:,.0f} 百万像素）。"
                                   "请减少或缩小图像。",
        "title_invalid_input": "输入无效",
        "title_invalid_parameters": "参数无效",
        "title_nothing_selected": "未选择",
        "title_unreadable": "无法读取的图片",
        "title_warning": "警告",
        "title_info": "提示",
        "title_error": "错误",
        "nothing_to_restore": "没有可恢复的内容：请先选择一张图片或一条记录。",
        "no_image_yet": "还没有图片：请先生成。",
        "restored": "设置已恢复到「{tab}」。",
        "sent": "已发送到「{tab}」，并带上提示词、反向提示词、种子和尺寸。",
        "settings_reset": "本页设置已恢复默认。",
        "snapped": "{field} {value} 不可用：已改为 {snapped}（{low} 到 {high} 之间 8 的倍数）。",
        "no_parameters": "这张图片不含生成参数。",
        "image_required": "{field}：需要一张图片。",
        "seed_set": "种子已设为 {seed}。",
        "caption_seed": "种子 {seed}",
        "caption_control_map": "控制图 {index}（{type}）",
        "caption_preview": "预览，第 {step} 步",
        "caption_stopped": "停止于第 {step}/{total} 步",
        "stopped": "已在第 {step}/{total} 步停止，保留了最后的预览。",
        "stopped_early": "已在第一步之前停止。",
        "waiting": "正在等待模型…",
        "loading": "正在加载模型（首次运行还需下载）…",
        "progress": "采样第 {step}/{total} 步 · 已用 {elapsed} · {rate} it/s · 剩余 {eta}",
        "done": "完成：{count} 张，用时 {seconds} 秒 · {rate} it/s · 种子 {seeds}",
        "failed": "生成失败（{name}）。服务器仍在运行，请重试。",
        "oom": "显存不足，已用最省显存的方案：请减小尺寸或张数。",
        "unavailable": "本服务器上的模型暂不可用；详情见服务器日志。",
        "status_model": "模型",
        "title_images": "图片",
        "give_again": "请重新提供这些图片：{names}。",
        "control_choose_type": "请先选择 Canny、深度或姿态",
        "control_no_map": "还没有控制图：请先点击“显示控制图”。",
        "control_map_used": "控制图已用作该单元的图像，并关闭了“由图像生成控制图”。",
    },
}
# Field and tab names as the visitor sees them, for messages that name one.
NAMES = {
    "en": {"width": "Width", "height": "Height", "text_to_image": "Text to image", "image_to_image": "Image to image",
           "ip_adapter": "IP-Adapter", "image": "image", "ip_adapter_image": "ip_adapter_image", "inpaint": "Inpaint"},
    "zh": {"width": "宽度", "height": "高度", "text_to_image": "文生图", "image_to_image": "图生图",
           "ip_adapter": "参考图 IP-Adapter", "image": "初始图片", "ip_adapter_image": "参考图片",
           "inpaint": "局部重绘", "mask": "蒙版", "control_image": "控制图（单元 1）",
           "control_image_2": "控制图（单元 2）", "control_image_3": "控制图（单元 3）"},
}
# The manager's status line is technical; its plain words have a Chinese form.
STATUS_ZH = [(re.compile(r"^not loaded"), "未加载"), (re.compile(r"^downloading "), "正在下载 "),
             (re.compile(r"^loading IP-Adapter "), "正在加载 IP-Adapter "),
             (re.compile(r"loading the depth estimator"), "正在加载深度估计模型"),
             (re.compile(r"loading the pose estimator"), "正在加载姿态估计模型"),
             (re.compile(r"ControlNet depth\b"), "ControlNet 深度"),
             (re.compile(r"ControlNet pose\b"), "ControlNet 姿态"),
             (re.compile(r"ControlNet canny\b"), "ControlNet Canny"), (re.compile(r"^loading "), "正在加载 "),
             (re.compile(r"^load failed: "), "加载失败："), (re.compile(r" of (?=[\d.]+ GB)"), " / "),
             (re.compile(r" · last run peak "), " · 上次峰值 "),
             (re.compile(r"\bplan (\S+): "), r"方案 \1："), (re.compile(r"everything on the CPU"), "全部在 CPU 上"),
             (re.compile(r"text encoder "), "文本编码器 "), (re.compile(r"U-Net and VAE "), "U-Net 与 VAE "),
             (re.compile(r"\bon the CPU\b"), "在 CPU 上"), (re.compile(r"\bon (cuda\S*|mps)"), r"在 \1 上"),
             (re.compile(r"sequential offload"), "逐层卸载"), (re.compile(r"model offload"), "模型卸载"),
             (re.compile(r"stepped down from (\S+): out of GPU memory"), r"因显存不足从 \1 降级")]


def language(request: gr.Request | None) -> str:
    """'zh' when the visitor's browser asks for Chinese first, else 'en'."""
    headers = getattr(request, "headers", None) or {}
    accept = str(headers.get("accept-language", "") or "")
    first = accept.split(",", 1)[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def refusal_text(request_or_lang, error) -> str:
    """A refused value (a ValidationError: field, code, allowed) in the visitor's language; English as raised."""
    lang = request_or_lang if isinstance(request_or_lang, str) else language(request_or_lang)
    key = f"refused_{getattr(error, 'code', '')}"
    if key in MESSAGES[lang] and isinstance(getattr(error, "allowed", None), dict):
        return MESSAGES[lang][key].format(field=error.field, **error.allowed)
    return str(error)


def tr(request_or_lang, key: str, **values) -> str:
    """A run-time message in the visitor's language."""
    lang = request_or_lang if isinstance(request_or_lang, str) else language(request_or_lang)
    return MESSAGES[lang][key].format(**values)


def name_of(lang: str, name: str) -> str:
    """A field or tab name as shown to the visitor."""
    return NAMES[lang].get(name, name)


def status_text(lang: str, text: str) -> str:
    """The manager's status in the visitor's language."""
    if lang == "zh":
        for pattern, replacement in STATUS_ZH:
            text = pattern.sub(replacement, text)
    return text
