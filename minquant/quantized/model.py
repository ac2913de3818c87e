"""``QuantizedModel``: a quantized graph ready to run, measure, print, save and load.

    qm = minquant.quantize_static(model, calib)        # or from_torch_quantized / quantize_dynamic
    logits = qm(x)                                     # float32 in, float32 out
    out, acts = qm.run(x, intermediates=True)          # every activation, dequantized to float
    qm.size_bytes(); print(qm.summary())
    qm.save("model.mq.npz"); qm2 = minquant.quantized.load("model.mq.npz")   # bit-identical

**File format** (``save`` / :func:`load`; no pickle anywhere). One NumPy ``.npz`` archive (a zip of
``.npy`` files, read with ``allow_pickle=False``) holding

* ``__model__`` — a uint8 array: UTF-8 JSON text of the model description::

      {"format": "minquant.quantized", "version": 2, "name": ...,
       "target": {"framework": "x86", "cpu": {"name": "avx512-vnni", "avx512": true, ...}},
       "inputs": [...], "input_shapes": {name: [dims]}, "outputs": [...],
       "nodes": [{"name", "op", "inputs": [...], "attrs": {"class": ..., field: value, ...} | null,
                  "params": {param: array key}, "shape": [...] | null, "source": "..."}, ...],
       "arrays": {array key: {"dtype": "int8", "shape": [...], "sha256": "..."}},
       "float_names": {value: float value}, "meta": {...}, "channel_scales": {value: [per channel]}}

* ``__model_sha256__`` — the SHA-256 of those JSON bytes (hex, as uint8), so that an edited description
  (a changed ``y_scale``, another target) is refused on load rather than silently computing other codes;

* one array per node parameter, key ``"<node index>.<param name>"`` (int8 weights, float32 scales,
  int8 weight zero points, float32 bias...). Integer weights are stored in the smallest of the dense,
  bitmask, CSR and int4 encodings of :mod:`minquant.sparse` — a pruned layer's zero codes cost one bit each
  (or nothing) instead of a byte, int4 codes held in int8 (W4A8 per channel on the int8 kernels) half a
  byte — as arrays ``"<key>.<part>"``; the description then says ``"encoding": "bitmask" | "csr" |
  "int4"`` and names the parts, and the SHA-256 is that of the decoded array.

The target is recorded whole — framework *and* CPU (:meth:`minquant.target.Target.to_dict`) — so a model
saved on one machine computes, when loaded on a host with another CPU, the codes of the machine it was made
for. Version 1 files (which stored only a name, ``"emulate": "fbgemm"``) still load: their name is taken
as that framework on the loading host, which is what version 1 computed.

Attribute values (scales, zero points, clamps...) are JSON numbers: Python floats round-trip exactly, so a
loaded model computes bit-identical outputs. On load every array's dtype, shape and SHA-256 are checked
and the graph is re-validated; a truncated, corrupt or edited file, or a file that is not a minquant model,
raises ``ValueError`` saying which part. ``save`` writes all or nothing (:mod:`minquant.files`: a unique
temporary file in the same folder, fsync, rename), so a reader never sees a partial file and two writers
never share a temporary name.

This module imports NumPy only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..affine import dequantize
from ..executor import Schedule, run as run_graph, value_info
from ..files import atomic_write
from ..graph import Graph, Node, format_graph, shape_text
from ..sparse import decode, encoded_nbytes, smallest_encoding
from . import ops, precision_ops
from ..target import Target, as_target
from .executor import prepare_kernels
from .layout import channels_last_graph

__all__ = ["QuantizedModel", "DeferredModel", "load", "FORMAT", "VERSION"]

FORMAT = "minquant.quantized"
VERSION = 2
_JSON_KEY = "__model__"
_JSON_HASH_KEY = "__model_sha256__"     # SHA-256 of the description's bytes (version 2): an edit is detected


def _sparse_candidate(param: str, arr) -> bool:
    """Integer weight codes are stored sparsely (zero point 0: a pruned weight is 0) or as int4 nibbles when that
    is smaller."""
    return param == "weight" and np.asarray(arr).dtype.kind in "iu" and np.asarray(arr).ndim >= 1


def _stored_nbytes(param: str, arr) -> int:
    if _sparse_candidate(param, arr):
        return encoded_nbytes(smallest_encoding(arr))
    return int(np.asarray(arr).nbytes)


def _qparam_pairs(attrs) -> int:
    """How many (scale, zero point) pairs an attribute object stores."""
    if attrs is None:
        return 0
    if isinstance(attrs, ops.QCatAttrs):
        return len(attrs.in_scales) + 1
    return sum(1 for f in dataclasses.fields(attrs)
               if (f.name == "scale" or f.name.endswith("_scale")) and getattr(attrs, f.name) is not None)


class QuantizedModel:
    """A quantized :class:`~minquant.graph.Graph` plus the target whose arithmetic it reproduces.

    ``graph``: nodes of :mod:`minquant.quantized.ops` (and float ops); ``target``: a
    :class:`~minquant.target.Target` (framework × CPU) or a framework name ('x86', 'fbgemm', 'qnnpack',
    'onnxruntime', 'minquant'; on this host), kept as a Target; ``float_names``: for each value of this graph, the value of the float
    model it approximates (used by :func:`minquant.quantized.compare`; default: the same name);
    ``meta``: JSON-able facts about how it was made (calibrator, per_channel...); ``channel_scales``: for
    values whose channels cross-layer equalization rescaled, the per-channel factor back to the float
    model's units (``original = value · scale`` along axis 1; applied by :meth:`run` to intermediates);
    ``channels_last``: run the int8 layers on channels-last codes between layers (the execution plan of
    :func:`~minquant.quantized.layout.channels_last_graph`; the same codes, faster) — ``False`` runs the graph
    as it is, NCHW. Intermediate values (:meth:`run` with ``intermediates=True``) are always NCHW."""

    def __init__(self, graph: Graph, target="fbgemm", *, float_names=None, meta=None, channel_scales=None,
                 channels_last: bool = True):
        if not isinstance(graph, Graph):
            raise ValueError(f"QuantizedModel needs a minquant Graph, got {type(graph).__name__}")
        graph.validate()
        self.graph = graph
        self.target = as_target(target)
        self.float_names = dict(float_names or {})
        self.meta = dict(meta or {})
        self.channel_scales = {k: np.asarray(v, np.float64) for k, v in (channel_scales or {}).items()}
        self._kernels = prepare_kernels(graph, self.target)
        unknown = sorted({n.op for n in graph.nodes if n.op not in self._kernels})
        if unknown:
            raise ValueError(f"no kernel for op(s) {unknown} in a quantized model")
        self.qparams = ops.value_qparams(graph)
        self._shapes = None
        self.channels_last = bool(channels_last)
        self._plan = None      # the channels-last execution plan: made on first use
        self._schedule = None  # the executor's loop over the plan (:class:`~minquant.executor.Schedule`)
        #: what a quantizer reports about how it made this model (:func:`quantize_dynamic` sets a
        #: :class:`~minquant.quantized.dynamic.QuantizationReport`); None otherwise. Not saved.
        self.report = None

    # -- running --------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.graph.name

    def _float(self, name, v):
        if isinstance(v, np.ndarray) and v.dtype == np.uint8 and name in self.qparams:
            s, z = self.qparams[name]
            return dequantize(v, s, z)
        if isinstance(v, np.ndarray) and v.dtype == np.float16:   # float16 activations: widened exactly
            return v.astype(np.float32)
        return v

    def _check_input(self, x):
        """A nested Python list (``x.tolist()``) is not a list of inputs: say so instead of miscounting."""
        if isinstance(x, (list, tuple)) and any(isinstance(v, (list, tuple, int, float)) for v in x):
            raise ValueError(f"QuantizedModel {self.name!r} takes a NumPy array (N, ...) per input, got a nested "
                             f"Python {type(x).__name__}; pass np.asarray(x, dtype=np.float32)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run on a float32 batch; returns float32 (graph outputs that are codes are dequantized)."""
        self._check_input(x)
        plan = self.execution_plan
        sched = self._schedule
        if sched is None or sched.graph is not plan or sched.nodes != tuple(plan.nodes):
            sched = self._schedule = Schedule(plan, self._kernels)     # the loop worked out once per plan
        out = sched.run(x)
        if isinstance(out, tuple):
            return tuple(self._float(v, o) for v, o in zip(self.graph.outputs, out))
        return self._float(self.graph.outputs[0], out)

    @property
    def execution_plan(self) -> Graph:
        """The graph :meth:`__call__` runs: with :attr:`channels_last`, ``graph`` with its channels-last regions
        and their transposes (:func:`~minquant.quantized.layout.channels_last_graph`); else ``graph``."""
        if not self.channels_last:
            return self.graph
        if self._plan is None:
            self._plan = channels_last_graph(self.graph, self._kernels.nhwc_ok)
        return self._plan

    def run(self, x: np.ndarray, *, intermediates: bool = False, raw: bool = False):
        """``run(x)`` = ``self(x)``. With ``intermediates=True``: ``(output, values)`` where ``values`` maps
        the input and every node to its value, in execution order — dequantized to float32
        (``r = s·(q − z)``) and, for equalized channels, multiplied back into the float model's units
        (``channel_scales``); or the raw values (uint8 codes) with ``raw=True``."""
        if not intermediates:
            return self(x)
        self._check_input(x)
        out, env = run_graph(self.graph, x, kernels=self._kernels, intermediates=True)
        if isinstance(out, tuple):
            out = tuple(self._float(v, o) for v, o in zip(self.graph.outputs, out))
        else:
            out = self._float(self.graph.outputs[0], out)
        if raw:
            return out, dict(env)
        values = {}
        for k, v in env.items():
            v = self._float(k, v)
            if k in self.channel_scales:
                sc = self.channel_scales[k].astype(np.float32)
                v = v * sc.reshape((1, -1) + (1,) * (v.ndim - 2))
            values[k] = v
        return out, values

    # -- size -----------------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """Bytes of stored numbers: every parameter array as :meth:`save` stores it (int8 weights in the
        smallest of dense / bitmask / CSR / int4 — so pruned weights really shrink, and int4 codes cost half
        a byte — float32 scales, int8 weight zero points, float32 bias), plus 8 bytes (float32 scale + int32 zero point) for every activation
        (scale, zero point) pair held in node attributes. Graph structure is not counted."""
        arrays = sum(_stored_nbytes(p_name, p) for n in self.graph.nodes for p_name, p in n.params.items())
        return int(arrays + 8 * sum(_qparam_pairs(n.attrs) for n in self.graph.nodes))

    def fp32_param_bytes(self) -> int:
        """Bytes the same layers take in float32: 4 per weight and bias element (and per parameter of
        nodes left in float) — the baseline :meth:`size_bytes` is compared with."""
        total = 0
        for n in self.graph.nodes:
            if n.op in ops.WEIGHT_OPS:
                total += 4 * (n.params["weight"].size + (n.params["bias"].size if "bias" in n.params else 0))
            elif n.op in precision_ops.PRECISION_OPS:
                total += 4 * precision_ops.float_param_count(n)
            else:
                total += 4 * n.num_params()
        return int(total)

    def node_bytes(self, node: Node) -> int:
        return int(sum(p.nbytes for p in node.params.values()) + 8 * _qparam_pairs(node.attrs))

    # -- printing -------------------------------------------------------------------------------------
    def shapes(self):
        """{value: (shape, dtype)} from one batch-1 run on zeros (cached)."""
        if self._shapes is None:
            self._shapes = value_info(self.graph, self._kernels)
        return self._shapes

    def summary(self) -> str:
        """One line per node: name, op, input → output shape and dtype, output (scale, zero point), extra
        (weight scheme, fused activation, clamp), parameter count and bytes."""
        info = self.shapes() if all(v in self.graph.input_shapes for v in self.graph.inputs) else {}

        def shp(v):
            return shape_text(info, v, dtype_first=False)

        def details(n):
            a, extra = n.attrs, []
            if n.op in ops.WEIGHT_OPS:
                w = n.params["weight"]
                extra.append(f"w {w.dtype.name}{list(w.shape)} "
                             + ("per-channel" if a.per_channel else f"s_w={float(n.params['w_scale'][0]):.4g}"))
            if n.op in ("qconv2d", "qlinear"):
                extra.append(f"in {a.x_scale:.4g}/{a.x_zp}")
                if a.activation:
                    extra.append(f"{a.activation} clamp {list(a.clamp)}")
                if "clamp_hi" in n.params:
                    hc = n.params["clamp_hi"]
                    extra.append(f"per-channel top, codes {int(hc.min())}…{int(hc.max())}")
            elif n.op == "qadd":
                extra.append(f"a {a.a_scale:.4g}/{a.a_zp} b {a.b_scale:.4g}/{a.b_zp}" + (" relu" if a.relu else ""))
            elif n.op == "qclamp":
                if "hi_channels" in n.params:
                    hc = n.params["hi_channels"]
                    extra.append(f"{a.activation} per-channel top, codes {int(hc.min())}…{int(hc.max())}")
                else:
                    extra.append(f"{a.activation} [{a.lo}, {a.hi}]")
            elif n.op in precision_ops.PRECISION_OPS:
                extra.append(precision_ops.describe(n))
            elif n.op not in ops.QUANTIZED_OPS:
                extra.append("float")
            return "; ".join(extra)

        def scale_zp(n):
            qp = self.qparams.get(n.name)
            return f"{qp[0]:.6g} / {qp[1]}" if qp else ""

        columns = [("name", lambda n: n.name), ("op", lambda n: n.op),
                   ("input", lambda n: ", ".join(shp(v) for v in n.inputs[:1])), ("output", lambda n: shp(n.name)),
                   ("scale / zp", scale_zp), ("details", details), ("params", lambda n: f"{n.num_params():,}"),
                   ("bytes", lambda n: f"{self.node_bytes(n):,}")]
        fp32 = self.fp32_param_bytes()
        header = (f"QuantizedModel {self.name!r} (target={str(self.target)!r}): {len(self.graph.nodes)} nodes, "
                  f"{self.graph.num_params():,} params, {self.size_bytes():,} bytes "
                  f"(fp32 params: {fp32:,} bytes, {fp32 / max(self.size_bytes(), 1):.2f}×)")
        return format_graph(self.graph, header=header, columns=columns)

    def __repr__(self) -> str:
        return (f"QuantizedModel({self.name!r}, target={str(self.target)!r}, {len(self.graph.nodes)} nodes, "
                f"{self.size_bytes():,} bytes)")

    # -- saving ---------------------------------------------------------------------------------------
    def to_json_and_arrays(self):
        arrays, nodes, described = {}, [], {}
        for i, n in enumerate(self.graph.nodes):
            keys = {}
            for p, arr in n.params.items():
                key = f"{i}.{p}"
                arr = np.ascontiguousarray(arr)
                keys[p] = key
                described[key] = {"dtype": arr.dtype.str, "shape": list(arr.shape),
                                  "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
                enc = smallest_encoding(arr) if _sparse_candidate(p, arr) else None
                if enc is None or str(enc["format"]) == "dense":
                    arrays[key] = arr
                else:
                    parts = {part: f"{key}.{part}" for part in enc if part not in ("format", "shape")}
                    described[key].update(encoding=str(enc["format"]), parts=parts)
                    for part, part_key in parts.items():
                        arrays[part_key] = enc[part]
            nodes.append({"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": ops.attrs_to_json(n.attrs),
                          "params": keys, "shape": list(n.shape) if n.shape is not None else None,
                          "source": n.source})
        doc = {"format": FORMAT, "version": VERSION, "name": self.graph.name, "target": self.target.to_dict(),
               "inputs": self.graph.inputs, "input_shapes": {k: list(v) for k, v in self.graph.input_shapes.items()},
               "outputs": self.graph.outputs, "nodes": nodes, "arrays": described,
               "float_names": self.float_names, "meta": self.meta,
               "channel_scales": {k: [float(t) for t in v] for k, v in self.channel_scales.items()}}
        return doc, arrays

    def save(self, path) -> Path:
        """Write the model to ``path`` (module docstring; the name is used as given). Returns the path."""
        path = Path(path)
        doc, arrays = self.to_json_and_arrays()
        text = json.dumps(doc, indent=1, allow_nan=False).encode("utf-8")
        arrays[_JSON_KEY] = np.frombuffer(text, dtype=np.uint8)
        arrays[_JSON_HASH_KEY] = np.frombuffer(hashlib.sha256(text).hexdigest().encode("ascii"), dtype=np.uint8)
        with atomic_write(path) as f:        # unique temporary file, fsync, rename: all or nothing
            np.savez(f, **arrays)
        return path

    def to_tflite(self, path) -> Path:
        """Write the model as an int8 .tflite file (a LiteRT target's model); see
        :func:`minquant.interop.litert.exporter.to_tflite` (imports tflite only when called). Returns the path."""
        from ..interop.litert.exporter import to_tflite
        return to_tflite(self, path)

    def to_onnx(self, path, format: str = "qdq", **kwargs) -> Path:
        """Write the model as an ONNX file (``format`` 'qdq' or 'qoperator'); see
        :func:`minquant.interop.onnx.exporter.to_onnx` (imports onnx only when called). Returns the path."""
        from ..interop.onnx.exporter import to_onnx
        return to_onnx(self, path, format=format, **kwargs)


class DeferredModel:
    """A quantized model whose graph is built at its first call, from that input's shape — what
    :func:`~minquant.interop.torch.quantized_import` and :func:`~minquant.quantized.quantize_dynamic` return
    for a torch model given without ``input_shape`` (minquant imports a torch model by running it once, so
    it needs one input to see the layer shapes). After the first call it behaves as the
    :class:`QuantizedModel` it built (``.model``); before, anything but calling it raises a ``ValueError``
    saying so. The graph accepts any batch size; a later input of other non-batch dimensions is refused by
    that model as usual."""

    def __init__(self, build, what: str):
        self._build, self._what, self._model = build, what, None

    @property
    def model(self) -> QuantizedModel:
        if self._model is None:
            raise ValueError(f"{self._what} was given no input_shape: its layer shapes are taken from the first "
                             "input, so call it once on a batch first (or pass input_shape=(1, C, H, W))")
        return self._model

    def __call__(self, x):
        if self._model is None:
            shape = np.shape(x)
            if len(shape) < 2:
                raise ValueError(f"{self._what}: the first input must be a batch (N, ...), got shape {shape}")
            self._model = self._build((1,) + tuple(shape[1:]))
        return self._model(x)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self):
        return repr(self._model) if self._model is not None else f"DeferredModel({self._what}, built at first call)"


def _corrupt(path, why):
    return ValueError(f"{path} is not a readable minquant quantized model: {why}")


def load(path) -> QuantizedModel:
    """Read a model written by :meth:`QuantizedModel.save` (no pickle; every array checked)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load needs the path (str or os.PathLike) of a file written by QuantizedModel.save, "
                        f"got {type(path).__name__}")
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            files = set(f.files)
            if _JSON_KEY not in files:
                raise _corrupt(path, f"no {_JSON_KEY!r} entry (not a file written by QuantizedModel.save)")
            raw_text = f[_JSON_KEY].tobytes()
            stored_hash = f[_JSON_HASH_KEY].tobytes().decode("ascii") if _JSON_HASH_KEY in files else None
            text = raw_text.decode("utf-8")
            arrays = {k: f[k] for k in files if k not in (_JSON_KEY, _JSON_HASH_KEY)}
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, UnicodeDecodeError, zipfile.LargeZipFile) as e:
        raise _corrupt(path, f"truncated or damaged archive ({type(e).__name__}: {e})") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _corrupt(path, f"model description is not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _corrupt(path, f"format tag is {doc.get('format') if isinstance(doc, dict) else None!r}, "
                             f"expected {FORMAT!r}")
    if doc.get("version") not in (1, VERSION):
        raise _corrupt(path, f"format version {doc.get('version')!r}; this minquant reads versions 1 and {VERSION}")
    if doc["version"] >= 2:
        if stored_hash is None:
            raise _corrupt(path, f"the SHA-256 of the model description ({_JSON_HASH_KEY!r}) is missing")
        if hashlib.sha256(raw_text).hexdigest() != stored_hash:
            raise _corrupt(path, "the model description (JSON) was modified: its SHA-256 does not match the one "
                                 "stored with it")
    try:
        described = doc["arrays"]
        for key, d in described.items():
            if "encoding" in d:           # a sparse- or int4-stored weight: decode it from its parts
                missing = [k for k in d["parts"].values() if k not in arrays]
                if missing:
                    raise _corrupt(path, f"array parts {missing} are missing")
                enc = {"format": np.array(d["encoding"]), "shape": np.array(d["shape"], dtype=np.int64)}
                enc.update({part: arrays[k] for part, k in d["parts"].items()})
                try:
                    arrays[key] = decode(enc)
                except (ValueError, IndexError) as e:
                    raise _corrupt(path, f"encoded array {key!r} ({d['encoding']}) does not decode ({e})") from e
            if key not in arrays:
                raise _corrupt(path, f"array {key!r} is missing")
            a = arrays[key]
            if a.dtype.str != d["dtype"] or list(a.shape) != d["shape"]:
                raise _corrupt(path, f"array {key!r} is {a.dtype.str}{list(a.shape)}, the description says "
                                     f"{d['dtype']}{d['shape']}")
            if hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() != d["sha256"]:
                raise _corrupt(path, f"array {key!r} does not match its SHA-256 (corrupted)")
        nodes = []
        for nd in doc["nodes"]:
            params = {p: arrays[k] for p, k in nd["params"].items()}
            nodes.append(Node(nd["name"], nd["op"], nd["inputs"], ops.attrs_from_json(nd["attrs"]), params,
                              tuple(nd["shape"]) if nd["shape"] is not None else None, nd.get("source", "")))
        graph = Graph(doc["inputs"], nodes, doc["outputs"], doc["input_shapes"], doc["name"])
        if doc["version"] == 1:
            target = Target(doc["emulate"], "host")   # version 1: a name, computed on the loading host
        else:
            target = Target.from_dict(doc["target"])
        return QuantizedModel(graph, target, float_names=doc.get("float_names"), meta=doc.get("meta"),
                              channel_scales=doc.get("channel_scales"))
    except (KeyError, TypeError) as e:
        raise _corrupt(path, f"model description is incomplete ({type(e).__name__}: {e})") from e
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise _corrupt(path, str(e)) from e
