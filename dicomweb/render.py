"""Rendered and thumbnail resources (PS3.18 8.3.5 and 10.4.1.1.4): a frame as a JPEG or PNG picture."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from .errors import BadRequest
from .pixels import FrameSource, PixelError

RENDERED_TYPES = ["image/jpeg", "image/png"]
PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL_SIZE = (128, 128)
# Accepted on rendered resources; annotation is accepted and ignored (we burn nothing into pictures).
RENDER_PARAMETERS = {"window", "viewport", "quality", "annotation", "accept", "charset"}


@dataclass(frozen=True)
class RenderOptions:
    window: tuple[float, float] | None = None  # center, width
    viewport: tuple[int, int] | None = None  # width, height
    quality: int = 90

    @classmethod
    def from_query(cls, params, default_viewport: tuple[int, int] | None = None) -> "RenderOptions":
        unknown = sorted(set(params.keys()) - RENDER_PARAMETERS)
        if unknown:
            raise BadRequest(f"unknown parameter(s) for a rendered resource: {', '.join(unknown)} "
                             f"(supported: {', '.join(sorted(RENDER_PARAMETERS))})")
        window = None
        if params.get("window"):
            parts = params["window"].split(",")
            try:
                center, width = float(parts[0]), float(parts[1])
            except (IndexError, ValueError):
                raise BadRequest("window must be center,width[,function], e.g. window=40,400") from None
            if width <= 0:
                raise BadRequest("window width must be positive")
            window = (center, width)
        viewport = default_viewport
        if params.get("viewport"):
            try:
                vw, vh = (int(v) for v in params["viewport"].split(",")[:2])
            except ValueError:
                raise BadRequest("viewport must be width,height in pixels, e.g. viewport=256,256") from None
            if not (1 <= vw <= 8192 and 1 <= vh <= 8192):
                raise BadRequest("viewport sizes must be from 1 to 8192 pixels")
            viewport = (vw, vh)
        quality = 90
        if params.get("quality"):
            if not params["quality"].isdigit() or not 1 <= int(params["quality"]) <= 100:
                raise BadRequest("quality must be a whole number from 1 to 100")
            quality = int(params["quality"])
        return cls(window, viewport, quality)


def render(source: FrameSource, number: int, media_type: str, options: RenderOptions) -> bytes:
    image = Image.fromarray(_eight_bit(source.array(number), source.ds, options.window))
    if options.viewport:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if media_type == "image/jpeg":
        image.save(out, "JPEG", quality=options.quality)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def _eight_bit(array: np.ndarray, ds: Dataset, window: tuple[float, float] | None) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if array.ndim == 3 and array.shape[-1] == 3:  # colour (already RGB: the decoder converts YBR)
        return _stretch(array.astype(np.float64), 0, float(2 ** int(ds.BitsStored) - 1))
    if array.ndim != 2:
        raise PixelError(f"cannot render pixel data of shape {array.shape}")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        return _stretch(rgb.astype(np.float64), 0, float(rgb.max() or 1))
    values = apply_modality_lut(array, ds).astype(np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = ds.WindowCenter, ds.WindowWidth
        center = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
        width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
        window = (center, width) if width > 0 else None
    if window is not None:
        # Linear VOI function of PS3.3 C.11.2.1.2.1.
        center, width = window
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        out = _stretch(values, low, high)
    elif "VOILUTSequence" in ds:
        voi = apply_voi_lut(array, ds).astype(np.float64)
        out = _stretch(voi, float(voi.min()), float(voi.max()))
    else:
        out = _stretch(values, float(values.min()), float(values.max()))
    return 255 - out if photometric == "MONOCHROME1" else out


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)
