"""Control maps from pictures: canny edges (OpenCV), depth (DPT / MiDaS) and pose (ViTPose, OpenPose colours)."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from kolors_app.hub import downloads
from kolors_app.core.addons import DEPTH_REPO, PATTERNS, POSE_REPO

# OpenPose's 18-point body (COCO's 17 plus a neck between the shoulders) and its limb colours.
COCO_TO_OPENPOSE = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
KEYPOINT_THRESHOLD = 0.3


def canny_map(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """OpenCV's Canny edges of the image, white on black, stacked to three channels (as upstream)."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def depth_map(image: Image.Image, model, processor) -> Image.Image:
    """Relative depth (near = white) from a DPT depth-estimation model, at the image's size."""
    # At the model's square size: DPT-Hybrid's embeddings refuse any other (transformers passes no
    # interpolate_pos_encoding to them), so a 3:2 photo failed; the map is stretched back below.
    inputs = processor(images=image.convert("RGB"), keep_aspect_ratio=False, return_tensors="pt")
    with torch.no_grad():
        depth = model(pixel_values=inputs["pixel_values"].to(model.dtype)).predicted_depth
    depth = torch.nn.functional.interpolate(depth[:, None].float(), size=(image.height, image.width),
                                            mode="bicubic", align_corners=False)[0, 0]
    low, high = depth.min(), depth.max()
    scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
    grey = (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def pose_map(image: Image.Image, model, processor) -> Image.Image:
    """The body's keypoints (ViTPose, the whole picture as the person's box) drawn as an OpenPose skeleton."""
    image = image.convert("RGB")
    boxes = [[[0.0, 0.0, float(image.width), float(image.height)]]]  # COCO boxes: x, y, width, height
    inputs = processor(images=image, boxes=boxes, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype))
    found = processor.post_process_pose_estimation(outputs, boxes=boxes)[0][0]
    points, scores = found["keypoints"].numpy(), found["scores"].numpy()
    canvas = Image.new("RGB", image.size)
    draw = ImageDraw.Draw(canvas)
    body = [_openpose_point(points, scores, index) for index in COCO_TO_OPENPOSE]
    width = max(2, round(min(image.size) / 128))
    for (start, end), colour in zip(LIMBS, COLOURS):
        if body[start] is not None and body[end] is not None:
            draw.line([body[start], body[end]], fill=tuple(c * 6 // 10 for c in colour), width=width * 2)
    for point, colour in zip(body, COLOURS):
        if point is not None:
            x, y = point
            draw.ellipse([x - width, y - width, x + width, y + width], fill=colour)
    return canvas


def _openpose_point(points, scores, index):
    if index is None:  # the neck: between the shoulders, when both are found
        shoulders = [5, 6]
        if all(scores[i] >= KEYPOINT_THRESHOLD for i in shoulders):
            return tuple(float(v) for v in points[shoulders].mean(axis=0))
        return None
    return tuple(float(v) for v in points[index]) if scores[index] >= KEYPOINT_THRESHOLD else None


class Estimators:
    """The depth and pose models, loaded on first use (downloaded with progress) and kept on the CPU.

    They are small (0.5 and 0.4 GB) and run once per map, so the GPU budget stays the generation's.
    """

    def __init__(self, source: Callable[[str], str], on_status: Callable[[str | None], None] = lambda text: None):
        self._source = source  # repo id -> local folder or Hub repo id
        self._on_status = on_status
        self._models: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def get(self, kind: str):
        """(model, processor) for "depth" or "pose"."""
        with self._lock:
            if kind not in self._models:
                self._models[kind] = self._load(kind)
            return self._models[kind]

    def _load(self, kind: str):
        from transformers import (DPTForDepthEstimation, DPTImageProcessor, VitPoseForPoseEstimation,
                                  VitPoseImageProcessor)

        repo = DEPTH_REPO if kind == "depth" else POSE_REPO
        folder = self._source(repo)
        if downloads.is_hub_repo(folder):
            folder = str(downloads.fetch_files(folder, PATTERNS[kind], on_progress=self._progress(folder)))
        self._on_status(f"loading the {kind} estimator")
        model_class, processor_class = ((DPTForDepthEstimation, DPTImageProcessor) if kind == "depth"
                                        else (VitPoseForPoseEstimation, VitPoseImageProcessor))
        loaded = model_class.from_pretrained(folder).eval(), processor_class.from_pretrained(folder)
        self._on_status(None)
        return loaded

    def _progress(self, repo: str):
        def on_progress(done: int, total: int) -> None:
            percent = f" ({100 * done // total}%)" if total else ""
            self._on_status(f"downloading {repo}: {done / 1e9:.2f} of {total / 1e9:.2f} GB{percent}")

        return on_progress

    def loaded(self) -> list[str]:
        """The estimators in memory."""
        return list(self._models)


def control_map(unit, image: Image.Image, estimators: Estimators) -> Image.Image:
    """The map a unit feeds its ControlNet: made from the image, or the image itself when preprocess is off."""
    if not unit.preprocess:
        return image.convert("RGB")
    if unit.type == "canny":
        return canny_map(image, unit.low_threshold, unit.high_threshold)
    model, processor = estimators.get(unit.type)
    return depth_map(image, model, processor) if unit.type == "depth" else pose_map(image, model, processor)
