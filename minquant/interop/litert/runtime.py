"""Running a .tflite model with the LiteRT interpreter (``ai_edge_litert``), one kernel path at a time.

The interpreter's ``experimental_op_resolver_type`` chooses the kernels (:data:`RESOLVERS`):

``"xnnpack"``   ``OpResolverType.AUTO`` — the optimized builtin kernels with the XNNPACK delegate applied
                (the interpreter's default; ops XNNPACK takes run in XNNPACK, the rest on the builtins);
``"builtin"``   ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`` — the optimized builtin kernels only;
``"reference"`` ``OpResolverType.BUILTIN_REF`` — the reference kernels.

(``OpResolverType.BUILTIN`` is the same resolver as ``AUTO``; :func:`interpreter` accepts it under the name
``"builtin+xnnpack"``.) Every interpreter here runs on one thread.
"""
from __future__ import annotations

import numpy as np

__all__ = ["RESOLVERS", "interpreter", "run_tflite"]

#: kernel path name → OpResolverType member name
RESOLVERS = {"xnnpack": "AUTO", "builtin+xnnpack": "BUILTIN", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
             "reference": "BUILTIN_REF"}


def interpreter(data: bytes, path: str = "xnnpack"):
    """An allocated ``ai_edge_litert`` Interpreter for the .tflite bytes ``data`` on kernel path ``path``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    if path not in RESOLVERS:
        raise ValueError(f"unknown LiteRT kernel path {path!r}; expected one of {sorted(RESOLVERS)}")
    it = Interpreter(model_content=bytes(data), num_threads=1,
                     experimental_op_resolver_type=getattr(OpResolverType, RESOLVERS[path]))
    it.allocate_tensors()
    return it


def run_tflite(data_or_interpreter, x, path: str = "xnnpack"):
    """Run a one-input model on ``x`` (its input dtype and layout, batch included), one sample at a time if
    the model's batch is 1; returns the first output (its dtype)."""
    it = interpreter(data_or_interpreter, path) if isinstance(data_or_interpreter, (bytes, bytearray)) \
        else data_or_interpreter
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = np.asarray(x)
    if x.dtype != inp["dtype"]:
        raise TypeError(f"the model's input is {np.dtype(inp['dtype']).name}, got {x.dtype}")
    batch = int(inp["shape"][0])
    outs = []
    for i in range(0, x.shape[0], batch):
        it.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + batch]))
        it.invoke()
        outs.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(outs)
