"""What the ``minquant`` command line reads: models and input data given as names or files.

A MODEL argument is one of

==========================  =====================================================================
``tinycnn``                 :func:`minquant.data.zoo.tiny_cnn_digits` (the seed's TinyCNN, trained on digits)
``mobilenet_v2``            :func:`minquant.data.zoo.mobilenet_v2_imagenet` (torchvision's ImageNet weights)
a state dict ``.pt/.pth``   ``torch.load(weights_only=True)`` — weights only, so ``--arch`` names the
                            architecture (tinycnn, mobilenet_v2, resnet18, mobilenet_v3_small; the
                            torchvision ones are built with ``weights=None``: nothing is downloaded)
a ``.npz`` state dict       :func:`minquant.data.zoo.save_state_npz` or a structurally pruned model
                            (:func:`minquant.prune.save_pruned`, channel counts in the file) + ``--arch``
a TorchScript file          with ``--arch``: its weights go into that architecture (its module tree must
                            match); without: exported to ONNX by torch and read like an ONNX file
an ONNX float model         :func:`minquant.interop.onnx.importer.from_onnx`
==========================  =====================================================================

The file kind is read from the content, not the name: ``.npz``, torch checkpoints and TorchScript are
zip archives told apart by their member names (``*.npy``; ``data.pkl``; ``code/``). Nothing is unpickled
beyond what ``torch.load(weights_only=True)`` allows; ``.npz`` files load with ``allow_pickle=False``.

An input-data argument (``--calib`` / ``--data``) is ``digits`` (:func:`minquant.data.datasets.digits`),
``photos`` (:func:`minquant.data.datasets.photo_crops`) or a folder of images (PNG/JPEG/BMP/TIFF, read with
scikit-image) and/or ``.npy`` arrays, searched recursively in sorted order. Images are converted to the
model's channel count, center-cropped to a square and resized to the model's H×W (bilinear, anti-aliased,
as ``photo_crops`` does), scaled to [0, 1] and normalised: ImageNet mean/std for 3-channel models, the
digits training split's mean/std for 1-channel ones. ``.npy`` files are taken as model-ready input:
shape (C, H, W) or (N, C, H, W) equal to the model's.

Every problem with the input raises :class:`InputError` (a ``ValueError``) with one readable sentence
naming the file. This module imports torch inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_path

__all__ = ["InputError", "UsageError", "FloatModel", "ARCHS", "BUILTINS", "file_kind", "load_float_model",
           "load_inputs", "input_files", "data_shape", "build_arch", "atomic_output"]

#: architectures ``--arch`` can build (no weights downloaded), with their input shape and normalisation
ARCHS = {"tinycnn": ((1, 1, 28, 28), "digits"), "mobilenet_v2": ((1, 3, 224, 224), "imagenet"),
         "resnet18": ((1, 3, 224, 224), "imagenet"), "mobilenet_v3_small": ((1, 3, 224, 224), "imagenet")}
#: built-in trained models (offline)
BUILTINS = ("tinycnn", "mobilenet_v2")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_CLASSIFIER_KEY = {"mobilenet_v2": "classifier.1.weight", "resnet18": "fc.weight",
                   "mobilenet_v3_small": "classifier.3.weight"}


class InputError(ValueError):
    """A bad model or data file (exit code 1)."""


class UsageError(ValueError):
    """A missing or contradictory option discovered after parsing (exit code 2)."""


@dataclass
class FloatModel:
    """A float model ready for :func:`minquant.quantize_static` / :func:`minquant.compare`: a torch
    ``nn.Module`` in eval mode or a minquant Graph; ``input_shape`` (1, C, H, W) if known; ``norm``:
    'digits', 'imagenet' or None (how image files are normalised for it); ``kind``: where it came from."""
    model: object
    input_shape: tuple | None
    norm: str | None
    kind: str
    name: str

    @property
    def is_torch(self) -> bool:
        return not _is_graph(self.model)


def _is_graph(obj) -> bool:
    from ..graph import Graph
    return isinstance(obj, Graph)


# ------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------
def file_kind(path) -> str:
    """'minquant' (a saved QuantizedModel), 'pruned-npz', 'state-npz', 'torchscript', 'checkpoint',
    'onnx'. Raises InputError for a missing, empty, truncated or unrecognised file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder, expected a model file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if not head:
        raise InputError(f"{path} is empty")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"{path} is a damaged zip archive ({e})") from None
        if any(n.endswith(".npy") for n in names):
            from ..prune.architecture import ARCH_KEY
            from ..quantized.model import _JSON_KEY
            if f"{_JSON_KEY}.npy" in names:
                return "minquant"
            return "pruned-npz" if f"{ARCH_KEY}.npy" in names else "state-npz"
        if any("/code/" in n or n.startswith("code/") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        raise InputError(f"{path} is a zip archive but not an .npz, a torch checkpoint or a TorchScript file")
    if head[:2] == b"PK":
        raise InputError(f"{path} is a truncated or corrupt zip archive (.npz / torch checkpoint / TorchScript)")
    if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin"):
        return "checkpoint"          # torch's legacy (non-zip) serialization
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(path):
        return "onnx"
    raise InputError(f"{path}: unrecognised model file (expected a minquant .npz, a torch state dict, a "
                     "TorchScript file or an ONNX model)")


def _looks_like_onnx(path) -> bool:
    try:
        import onnx
        m = onnx.load(str(path), load_external_data=False)
        return len(m.graph.node) > 0
    except Exception:
        return False


def check_writable(path) -> Path:
    """Say now — before any work is done — if a file cannot be written at ``path``: a folder, a missing
    folder, or a folder where no file can be created (read-only, ``/proc``...). Raises :class:`InputError`
    naming ``path`` (never a temporary name)."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise InputError(f"cannot write {out}: files cannot be created in {out.parent} "
                         f"({e.strerror or type(e).__name__})") from None
    os.close(fd)
    os.unlink(probe)
    return out


#: Set by the CLI's Ctrl-C handler (:func:`minquant.lesson.cli._interrupted`). The handler raises
#: ``SystemExit(130)``, but a third-party import that guards itself with a bare ``except:`` can swallow it (seen
#: once in ~20 interrupts 0.1 s after start, inside ``abc.register`` during an import); the command would then
#: run on. So :func:`atomic_output` refuses to publish a file once it is set, and ``main`` still exits 130.
INTERRUPTED = threading.Event()


@contextlib.contextmanager
def atomic_output(path):
    """``with atomic_output(out) as tmp: write(tmp)`` — the file appears at ``out`` only if the block
    succeeds (:func:`minquant.files.atomic_path`: a unique temporary file in the same folder with ``out``'s
    suffix, fsync, rename); on failure no file is left. A folder, a missing parent folder or one where no
    file can be created is an :class:`InputError` (:func:`check_writable`), said before anything is
    computed; an error writing the temporary file is reported under ``out``'s name."""
    out = check_writable(path)
    try:
        with atomic_path(out, suffix=out.suffix) as tmp:
            yield tmp
            if INTERRUPTED.is_set():           # Ctrl-C came and was swallowed: no file
                raise SystemExit(130)
    except OSError as e:
        if e.filename is not None and Path(str(e.filename)).name.startswith(f".{out.name}."):
            raise InputError(f"cannot write {out}: {e.strerror or type(e).__name__}") from None
        raise


# ------------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------------
def build_arch(arch: str, state: dict | None = None):
    """An untrained ``arch`` (nn.Module, eval mode). torchvision models get ``num_classes`` from the
    classifier weight in ``state`` when given."""
    if arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    if arch == "tinycnn":
        from ..data.zoo import TinyCNN
        return TinyCNN().eval()
    import torchvision
    kw = {}
    key = _CLASSIFIER_KEY[arch]
    if state is not None and key in state and getattr(state[key], "ndim", 0) == 2:
        kw["num_classes"] = int(state[key].shape[0])
    return getattr(torchvision.models, arch)(weights=None, **kw).eval()


def _load_state(model, state, path, arch):
    import torch
    state = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split("\n\t")[1:2]).strip() or str(e).splitlines()[0]
        raise InputError(f"{path} does not hold the weights of --arch {arch}: {first}") from None
    return model.eval()


def _torch_state(path):
    """A state dict from ``torch.load(weights_only=True)``; unwraps {'state_dict': ...} / {'model': ...}
    and DataParallel's 'module.' prefixes."""
    import pickle

    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path} holds pickled Python objects that weights_only loading refuses (a whole "
                         "model saved with torch.save(model)?); save model.state_dict() or a TorchScript file "
                         "instead") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): "
                         f"{str(e).splitlines()[0][:160]}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _require_arch(path, arch, what):
    if arch is None:
        raise UsageError(f"{path} is {what}: it holds weights only — name the architecture with --arch "
                         f"({', '.join(ARCHS)})")
    if arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")


def _check_torchscript_modules(ts, path) -> None:
    """Refuse a TorchScript model with a torch.nn layer minquant has no import for, naming it."""
    import torch.nn as nn

    from ..interop.torch import fx_import as torch_import
    torch_import._ensure_tables()
    supported = {t.__name__ for t in torch_import.MODULE_HANDLERS} | {"Sequential", "ModuleList", "ModuleDict",
                                                                     "Dropout", "Dropout2d", "Identity"}
    for name, m in ts.named_modules():
        kind = getattr(m, "original_name", type(m).__name__)
        if hasattr(nn, kind) and kind not in supported:
            raise InputError(f"{path}: unsupported layer {kind} at {name or '(top)'!r}; minquant imports "
                             f"{', '.join(sorted(supported - {'Sequential', 'ModuleList', 'ModuleDict'}))}")


def _torchscript_into_arch(ts, path, arch):
    model = build_arch(arch, dict(ts.state_dict()))
    mine = {n: type(m).__name__ for n, m in model.named_modules()}
    for n, m in ts.named_modules():
        kind = getattr(m, "original_name", "")
        if n and n in mine and kind and kind != mine[n]:
            raise InputError(f"{path}: module {n!r} is {kind}, but --arch {arch} has {mine[n]} there")
        if n and n not in mine:
            raise InputError(f"{path}: module {n!r} ({kind}) does not exist in --arch {arch}")
    return _load_state(model, dict(ts.state_dict()), path, arch)


def _torchscript_to_graph(ts, path, input_shape):
    """TorchScript → ONNX (torch's TorchScript exporter,
    :func:`minquant.frameworks.torch_oracle.export_onnx`) → :func:`minquant.interop.onnx.importer.from_onnx`."""
    import tempfile

    from ..frameworks.torch_oracle import export_onnx
    if input_shape is None:
        raise UsageError(f"{path} is a TorchScript model of unknown input size: give --input-shape C,H,W "
                         "(or --arch)")
    with tempfile.TemporaryDirectory() as d:
        onnx_path = Path(d) / "model.onnx"
        try:
            export_onnx(ts, input_shape, onnx_path, input_name="input", output_name="output", dynamic_batch=False)
        except Exception as e:
            raise InputError(f"{path}: torch could not export the TorchScript model to ONNX: "
                             f"{str(e).splitlines()[0][:200]}") from None
        return _onnx_graph(onnx_path, shown=path)


def _onnx_graph(path, shown=None):
    shown = shown or path
    try:
        from ..interop.onnx.importer import from_onnx, onnx_is_quantized
    except ImportError:
        raise InputError(f"{shown}: reading ONNX models needs minquant.interop.onnx.importer, which this installation "
                         "does not have yet") from None
    try:
        quantized = onnx_is_quantized(str(path))
        g = None if quantized else from_onnx(str(path))
    except ValueError as e:
        raise InputError(f"{shown}: {e}") from None
    if quantized:
        raise InputError(f"{shown} is already a quantized model; give the float model")
    return g


def _arch_shape(arch: str, default, shape):
    """The input shape of a model of a known architecture: ``--input-shape`` (``shape``, with batch) when
    given — its channel count must be the architecture's, the size is free (the models end in adaptive
    pooling) — else the architecture's ``default``."""
    if shape is None:
        return default
    if shape[1] != default[1]:
        want = "×".join(map(str, default[1:]))
        raise UsageError(f"--input-shape {','.join(map(str, shape[1:]))} does not fit {arch}: it takes {default[1]} "
                         f"input channel(s) ({want} by default)")
    return shape


def load_float_model(spec: str, arch: str | None = None, input_shape=None, fallback_shape=None) -> FloatModel:
    """Resolve a MODEL argument (module docstring). ``input_shape``: (C, H, W) from ``--input-shape`` or
    None; ``fallback_shape``: (C, H, W) to use when neither it nor the model says (e.g. the calibration
    data's, :func:`data_shape`). Raises InputError / UsageError."""
    shape = (1,) + tuple(input_shape) if input_shape else None
    path = Path(spec)
    if spec in BUILTINS and not path.exists():
        if arch is not None and arch != spec:
            raise UsageError(f"--arch {arch} contradicts the built-in model {spec}")
        if spec == "tinycnn":
            from ..data.zoo import tiny_cnn_digits
            model, _DIGITS["data"] = tiny_cnn_digits()      # the digits come along: keep them
        else:
            from ..data.zoo import mobilenet_v2_imagenet
            model = mobilenet_v2_imagenet()
        s, norm = ARCHS[spec]
        return FloatModel(model, _arch_shape(spec, s, shape), norm, "builtin", spec)
    if not path.exists():
        raise InputError(f"{spec}: no such file (and not a built-in model: {', '.join(BUILTINS)})")
    kind = file_kind(path)
    if kind == "minquant":
        raise InputError(f"{path} is an already quantized minquant model; give the float model")
    if kind in ("state-npz", "pruned-npz"):
        _require_arch(path, arch, "an .npz state dict")
        try:
            if kind == "pruned-npz":
                from ..prune import load_pruned
                model = load_pruned(build_arch(arch), path)
            else:
                with np.load(path, allow_pickle=False) as f:
                    state = {k: f[k] for k in f.files}
                model = build_arch(arch, state)
                _load_state(model, state, path, arch)
        except InputError:
            raise
        except (ValueError, RuntimeError, zipfile.BadZipFile, OSError, EOFError) as e:
            raise InputError(f"{path} could not be loaded into --arch {arch}: {str(e).splitlines()[0][:200]}") \
                from None
        s, norm = ARCHS[arch]
        return FloatModel(model.eval(), _arch_shape(arch, s, shape), norm, kind, f"{arch} ({path.name})")
    if kind == "checkpoint":
        _require_arch(path, arch, "a torch checkpoint")
        state = _torch_state(path)
        model = _load_state(build_arch(arch, state), state, path, arch)
        s, norm = ARCHS[arch]
        return FloatModel(model, _arch_shape(arch, s, shape), norm, kind, f"{arch} ({path.name})")
    if kind == "torchscript":
        import torch
        try:
            ts = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise InputError(f"{path} is not a readable TorchScript file: {str(e).splitlines()[0][:160]}") from None
        ts.eval()
        _check_torchscript_modules(ts, path)
        if arch is not None:
            if arch not in ARCHS:
                raise UsageError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
            s, norm = ARCHS[arch]
            return FloatModel(_torchscript_into_arch(ts, path, arch), _arch_shape(arch, s, shape), norm, kind, f"{arch} ({path.name})")
        shape = shape or ((1,) + tuple(fallback_shape) if fallback_shape else None)
        return FloatModel(_torchscript_to_graph(ts, path, shape), shape, _norm_for(shape), kind, path.name)
    # ONNX
    g = _onnx_graph(path)
    gshape = g.input_shapes.get(g.inputs[0]) if g.inputs else None
    s = shape or ((1,) + tuple(gshape[1:]) if gshape else None)
    return FloatModel(g, s, _norm_for(s), kind, path.name)


def _norm_for(shape):
    if shape is None:
        return None
    return {1: "digits", 3: "imagenet"}.get(shape[1])


# ------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------
_DIGITS: dict = {}


def digits_data():
    """:func:`minquant.data.datasets.digits` (x_train, y_train, x_test, y_test), computed once per process."""
    if "data" not in _DIGITS:
        from ..data.datasets import digits
        _DIGITS["data"] = digits()
    return _DIGITS["data"]


def digits_normalization() -> tuple[float, float]:
    """(mean, std) that :func:`minquant.data.datasets.digits` subtracts/divides by: those of the training
    split's [0, 1] images upsampled to 28×28 (same split, same zoom)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = np.stack([zoom(im, 28 / 8.0, order=1) for im in d.images.astype(np.float32) / 16.0])
    x_tr, _ = train_test_split(imgs.astype(np.float32), test_size=0.3, random_state=0, stratify=d.target)
    return float(x_tr.mean()), float(x_tr.std())


def _read_image(path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image file → float32 (C, H, W) in [0, 1] (before normalisation)."""
    from skimage import io
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb
    from skimage.transform import resize

    try:
        im = np.asarray(io.imread(str(path)))
    except Exception as e:
        raise InputError(f"{path} is not a readable image: {str(e).splitlines()[0][:160]}") from None
    if im.ndim not in (2, 3) or im.size == 0:
        raise InputError(f"{path}: expected a 2-D grayscale or colour image, got an array of shape {im.shape}")
    if im.dtype.kind == "f":
        f = im.astype(np.float32)
        if not np.isfinite(f).all():
            raise InputError(f"{path} contains NaN or infinite pixel values")
    else:
        f = im.astype(np.float32) / float(np.iinfo(im.dtype).max if im.dtype.kind in "iu" else 1)
    if f.ndim == 3 and f.shape[-1] == 4:
        f = rgba2rgb(f).astype(np.float32)
    if f.ndim == 3 and f.shape[-1] == 1:
        f = f[..., 0]
    if channels == 1 and f.ndim == 3:
        f = rgb2gray(f).astype(np.float32)
    elif channels == 3 and f.ndim == 2:
        f = gray2rgb(f)
    elif channels not in (1, 3):
        raise InputError(f"images can feed 1- or 3-channel models, this one takes {channels} channels")
    h, w = f.shape[:2]
    side = min(h, w)                                  # center square crop, then resize (as photo_crops)
    f = f[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    f = resize(f, size, order=1, anti_aliasing=True).astype(np.float32)
    return f[None] if f.ndim == 2 else f.transpose(2, 0, 1)


def data_shape(source: str):
    """Check a data argument before any model loads, and return the (C, H, W) it implies or None: digits
    1×28×28, photos 3×224×224, a folder with .npy files the shape they hold (images fit any size).
    Every .npy file is read and checked here (readable, real, finite, (C, H, W) or (N, C, H, W), one
    shape), so bad data fails in a second rather than after a model has loaded."""
    files = input_files(source)
    if files is None:
        return (1, 28, 28) if source == "digits" else (3, 224, 224)
    shape = None
    for p in files:
        if p.suffix.lower() != ".npy":
            continue
        a = _read_npy(p)
        if a.ndim not in (3, 4):
            raise InputError(f"{p} has shape {a.shape}; .npy inputs must be (C, H, W) or (N, C, H, W)")
        if shape is not None and tuple(a.shape[-3:]) != shape:
            raise InputError(f"{p} holds {'×'.join(map(str, a.shape[-3:]))} inputs, other files "
                             f"{'×'.join(map(str, shape))}")
        shape = tuple(int(d) for d in a.shape[-3:])
    return shape


def input_files(source: str) -> list[Path] | None:
    """The files a data argument names: None for ``digits`` / ``photos``, else the sorted image and .npy
    files under the folder. Cheap (no file is read): commands call it before loading a model, so a
    missing or empty folder fails at once. Raises InputError."""
    if source in ("digits", "photos") and not Path(source).is_dir():
        return None
    folder = Path(source)
    if not folder.exists():
        raise InputError(f"{source}: no such folder (and not 'digits' or 'photos')")
    if not folder.is_dir():
        raise InputError(f"{source} is a file; give a folder of images / .npy files, 'digits' or 'photos'")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and
                   (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() == ".npy"))
    if not files:
        raise InputError(f"{folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or .npy files: "
                         "the set of inputs is empty")
    return files


def _folder_inputs(files: list[Path], sample_shape, norm, n, progress) -> np.ndarray:
    from tqdm.auto import tqdm

    if sample_shape is None:
        first_npy = next((p for p in files if p.suffix.lower() == ".npy"), None)
        if first_npy is None:
            raise UsageError("the model's input size is unknown: give --input-shape C,H,W")
        a = _read_npy(first_npy)
        sample_shape = tuple(a.shape[-3:]) if a.ndim >= 3 else None
        if sample_shape is None:
            raise InputError(f"{first_npy}: expected (C, H, W) or (N, C, H, W), got shape {a.shape}")
    c, h, w = sample_shape
    mean = std = None
    if norm == "imagenet" and c == 3:
        from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD
        mean, std = IMAGENET_MEAN[:, None, None], IMAGENET_STD[:, None, None]
    batches, count = [], 0
    for p in tqdm(files, desc="read inputs", unit="file", disable=not progress, leave=False):
        if n is not None and count >= n:
            break
        if p.suffix.lower() == ".npy":
            a = _read_npy(p)
            if a.ndim == 3:
                a = a[None]
            if a.ndim != 4 or tuple(a.shape[1:]) != tuple(sample_shape):
                raise InputError(f"{p} has shape {a.shape}; .npy inputs must be model-ready, (C, H, W) or "
                                 f"(N, C, H, W) with C, H, W = {c}, {h}, {w}")
        else:
            im = _read_image(p, c, (h, w))
            if norm == "digits" and c == 1:
                if mean is None:
                    mean, std = digits_normalization()
                im = (im - mean) / std
            elif mean is not None:
                im = (im - mean) / std
            a = im[None].astype(np.float32)
        batches.append(a)
        count += a.shape[0]
    x = np.concatenate(batches).astype(np.float32)
    return x if n is None else x[:n]


def _read_npy(p) -> np.ndarray:
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{p} is not a readable .npy array: {str(e).splitlines()[0][:160]}") from None
    if a.dtype.kind not in "fiu":
        raise InputError(f"{p} holds {a.dtype} values; inputs must be real numbers")
    a = a.astype(np.float32)
    if a.size == 0:
        raise InputError(f"{p} is an empty array (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"{p} contains {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite "
                         "value(s); inputs must be finite")
    return a


def load_inputs(source: str, sample_shape, norm, *, n=None, split="calib", progress=False) -> np.ndarray:
    """float32 (N, C, H, W) model inputs from ``digits``, ``photos`` or a folder (module docstring).
    ``sample_shape``: the model's (C, H, W) or None if unknown; ``n``: at most this many samples
    (``digits``: the first n of the split; ``photos``: n crops, default 64); ``split``: 'calib' draws
    from digits' training split / the photos' calibration halves, 'eval' from the held-out ones."""
    if n is not None and n < 1:
        raise UsageError(f"the number of samples must be ≥ 1, got {n}")
    if source == "digits" and not Path(source).is_dir():
        if sample_shape is not None and tuple(sample_shape) != (1, 28, 28):
            raise UsageError(f"digits are 1×28×28 images but the model takes {'×'.join(map(str, sample_shape))}")
        x_tr, _, x_te, _ = digits_data()
        x = x_tr if split == "calib" else x_te
        return x if n is None else x[:n]
    if source == "photos" and not Path(source).is_dir():
        if sample_shape is not None and (sample_shape[0] != 3 or sample_shape[1] != sample_shape[2]):
            raise UsageError(f"photos are 3×S×S crops but the model takes {'×'.join(map(str, sample_shape))}")
        from ..data.datasets import photo_crops
        size = sample_shape[1] if sample_shape is not None else 224
        return photo_crops(64 if n is None else n, split="calib" if split == "calib" else "eval", size=size)
    return _folder_inputs(input_files(source), sample_shape, norm, n, progress)
