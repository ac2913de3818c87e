"""torch → minquant: :func:`from_torch` (a float ``nn.Module`` traced with torch.fx into a :class:`~minquant.graph.Graph`)
and :func:`from_torch_quantized` (torch's eager-mode int8 models, run bit-exactly on minquant's kernels) and
:func:`from_torch_pt2e` (torchao pt2e Q/DQ graphs, as Inductor lowers them)."""
from .fx_import import from_torch
from .pt2e_import import from_torch_pt2e
from .quantized_import import engine_target, from_torch_quantized

__all__ = ["from_torch", "from_torch_quantized", "engine_target", "from_torch_pt2e"]
