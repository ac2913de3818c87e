"""Real data that installs with the project (no downloads at run time).

* :func:`digits` — scikit-learn's bundled handwritten digits (1,797 labelled 8×8 images), upsampled to
  28×28 so that the seed's TinyCNN (written for MNIST-sized input) runs on it unchanged.
* :func:`photo_crops` — 224×224 crops of scikit-image's bundled photographs, ImageNet-normalised, for
  calibrating and evaluating ImageNet models without ImageNet; ``split='extra'`` draws from the other photos
  installed with the project's packages (never evaluated on: more varied unlabelled training inputs).
* :func:`augment_crops` — mixup of two crops and colour jitter, for label-free distillation (the teacher is
  run on the augmented inputs, so no label has to survive the augmentation).

Both return float32 NCHW NumPy arrays. scikit-learn / scikit-image are imported inside the functions, so
``import minquant`` does not need them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["digits", "photo_crops", "augment_crops", "IMAGENET_MEAN", "IMAGENET_STD"]

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
    by column), so calibration and evaluation never share pixels. ``split='extra'`` draws from whole photos
    that are in neither (:func:`_extra_photos`: scikit-learn's two sample images, matplotlib's Grace Hopper,
    scikit-image's cell) — more varied training inputs, never evaluation data."""
    import skimage.data as skd
    from skimage.transform import resize

    if split not in ("calib", "eval", "extra"):
        raise ValueError(f"split must be 'calib', 'eval' or 'extra', got {split!r}")
    mean, std = (np.broadcast_to(np.asarray(v, np.float32), (3,)) for v in (mean, std))
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"std must be positive and finite per channel, got {std.tolist()}")
    rng = np.random.default_rng(seed + {"calib": 0, "eval": 10_000, "extra": 20_000}[split])
    photos = _extra_photos() if split == "extra" else []
    for name in (() if split == "extra" else _PHOTOS):
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
    for i in range(n):       # (the draws per crop are fixed: the first k of n crops are photo_crops(k)'s)
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


def _extra_photos() -> list:
    """RGB uint8 photos installed with the project's packages and not in ``_PHOTOS``: scikit-learn's
    ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``, scikit-image's ``cell`` (grey, as
    RGB). Ones that cannot be loaded are skipped."""
    photos = []
    loaders = []
    try:
        from sklearn.datasets import load_sample_image
        loaders += [lambda: load_sample_image("china.jpg"), lambda: load_sample_image("flower.jpg")]
    except ImportError:
        pass
    try:
        import matplotlib.cbook as cbook
        from PIL import Image
        loaders.append(lambda: np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))))
    except ImportError:
        pass
    try:
        import skimage.data as skd
        loaders.append(skd.cell)
    except ImportError:
        pass
    for load in loaders:
        try:
            im = np.asarray(load())
        except Exception:  # a missing optional file: skipped
            continue
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        photos.append(np.ascontiguousarray(im[..., :3].astype(np.uint8)))
    return photos


def augment_crops(x, *, seed: int = 0, mix: float = 0.5, jitter: float = 0.2, mean=IMAGENET_MEAN,
                  std=IMAGENET_STD) -> np.ndarray:
    """Augmented copies of normalised crops ``x`` (N, 3, H, W), for distillation without labels:

    * **mixup** (with probability ``mix`` per crop): ``λ·a + (1 − λ)·b`` with ``b`` another crop of ``x`` and
      ``λ ~ U(0.3, 0.7)`` — a new input whose teacher output the student must match (Beyer et al. 2022,
      "Knowledge distillation: A good teacher is patient and consistent": function matching on mixed inputs);
    * **colour jitter**: brightness, contrast (about the crop's mean) and saturation (about its grey) each
      scaled by a factor in ``[1 − jitter, 1 + jitter]``, in RGB [0, 1] (un-normalised with ``mean`` /
      ``std``, clipped to [0, 1], normalised again).

    Deterministic for a ``seed``. Returns float32 (N, 3, H, W)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"augment_crops needs (N, 3, H, W) crops, got shape {x.shape}")
    if not (0 <= mix <= 1 and 0 <= jitter < 1):
        raise ValueError(f"augment_crops needs 0 ≤ mix ≤ 1 and 0 ≤ jitter < 1, got mix={mix}, jitter={jitter}")
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    rgb = x * s + m
    rng = np.random.default_rng(seed)
    n = len(x)
    out = rgb.copy()
    for i in range(n):
        if n > 1 and rng.random() < mix:
            j = (i + rng.integers(1, n)) % n
            lam = np.float32(rng.uniform(0.3, 0.7))
            out[i] = lam * rgb[i] + (1 - lam) * rgb[j]
        b, c, sat = (np.float32(rng.uniform(1 - jitter, 1 + jitter)) for _ in range(3))
        im = out[i] * b
        im = (im - im.mean()) * c + im.mean()
        grey = im.mean(axis=0, keepdims=True)
        out[i] = (im - grey) * sat + grey
    return ((np.clip(out, 0.0, 1.0) - m) / s).astype(np.float32)
