"""Real data that installs with the project (no downloads at run time).

* :func:`digits` — scikit-learn's bundled handwritten digits (1,797 labelled 8×8 images), upsampled to
  28×28 so that the seed's TinyCNN (written for MNIST-sized input) runs on it unchanged.
* :func:`photo_crops` — 224×224 crops of scikit-image's bundled photographs, ImageNet-normalised, for
  calibrating and evaluating ImageNet models without ImageNet.

Both return float32 NCHW NumPy arrays. scikit-learn / scikit-image are imported inside the functions, so
``import minquant`` does not need them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["digits", "photo_crops", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def digits(size: int = 28, test_fraction: float = 0.3, seed: int = 0):
    """scikit-learn's digits, split into (x_train, y_train, x_test, y_test).

    Images are scaled from [0, 16] to [0, 1], upsampled bilinearly from 8×8 to ``size``×``size`` and
    normalised with the training split's mean and std. The split is stratified and fixed by ``seed``
    (default: 1,257 train / 540 test). Shapes: x (N, 1, size, size) float32, y (N,) int64."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = d.images.astype(np.float32) / 16.0
    if size != 8:
        imgs = np.stack([zoom(im, size / 8.0, order=1) for im in imgs]).astype(np.float32)
        if imgs.shape[1:] != (size, size):
            raise ValueError(f"cannot upsample 8x8 digits to {size}x{size}")
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(imgs, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr = ((x_tr - mean) / std)[:, None].astype(np.float32)
    x_te = ((x_te - mean) / std)[:, None].astype(np.float32)
    return x_tr, y_tr, x_te, y_te


_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
           "motorcycle_left", "motorcycle_right", "camera", "moon", "page", "text", "coins", "horse",
           "brick", "grass", "gravel", "logo", "retina", "colorwheel", "clock", "microaneurysms")


def photo_crops(n: int, *, seed: int = 0, size: int = 224, split: str = "calib", mean=IMAGENET_MEAN,
                std=IMAGENET_STD):
    """``n`` random ``size``×``size`` crops (random position and scale, random flip) of scikit-image's
    bundled photos, RGB in [0, 1] normalised per channel as ``(x − mean) / std`` (default: torchvision's
    ImageNet statistics; EfficientNet-Lite uses 0.5 and 0.5): float32 (n, 3, size, size).

    ``split='calib'`` and ``split='eval'`` draw from disjoint halves of every photo (left/right half,
    by column), so calibration and evaluation never share pixels."""
    import skimage.data as skd
    from skimage.transform import resize

    if split not in ("calib", "eval"):
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")
    mean, std = (np.broadcast_to(np.asarray(v, np.float32), (3,)) for v in (mean, std))
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"std must be positive and finite per channel, got {std.tolist()}")
    rng = np.random.default_rng(seed + (0 if split == "calib" else 10_000))
    photos = []
    for name in _PHOTOS:
        try:
            im = np.asarray(getattr(skd, name)())
        except Exception:  # a photo that needs an optional download (pooch) is simply skipped
            continue
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        im = im[..., :3]
        if im.dtype != np.uint8:
            f = im.astype(np.float64)
            im = (255 * (f - f.min()) / max(f.max() - f.min(), 1e-12)).astype(np.uint8)
        half = im.shape[1] // 2
        im = im[:, :half] if split == "calib" else im[:, half:]
        if min(im.shape[:2]) >= 64:
            photos.append(im)
    if not photos:
        raise RuntimeError("no scikit-image photos could be loaded")
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        im = photos[rng.integers(len(photos))]
        h, w = im.shape[:2]
        side = int(rng.uniform(0.4, 1.0) * min(h, w))
        y0 = rng.integers(0, h - side + 1)
        x0 = rng.integers(0, w - side + 1)
        crop = im[y0:y0 + side, x0:x0 + side].astype(np.float32) / 255.0
        crop = resize(crop, (size, size), order=1, anti_aliasing=True).astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = ((crop - mean) / std).transpose(2, 0, 1)
    return out
