"""Pruning: remove weights (unstructured, N:M) or whole channels (structured), once or gradually.

The ranking math is NumPy; models go in and come out as ordinary ``torch.nn.Module`` objects (no masks,
no hooks), ready for fine-tuning, quantization or export. One concept per file:

* :mod:`.magnitude`    — unstructured magnitude pruning, per layer or global (= torch.nn.utils.prune's
  ``l1_unstructured`` / ``global_unstructured`` masks), made permanent; :func:`masked_training`.
* :mod:`.nm`           — N:M semi-structured sparsity (2:4).
* :mod:`.graph`        — the torch.fx channel dependency graph (which layers shrink together).
* :mod:`.structured`   — L1/L2 filter pruning that physically removes channels; zero-channel removal.
* :mod:`.architecture` — save/reload a structurally pruned model (JSON sizes + npz, no pickle).
* :mod:`.schedule`     — Zhu & Gupta's gradual schedule, the seed's prune-10%-retrain loop.
* :mod:`.report`       — sparsity, parameters, FLOPs and storage bytes per layer.
* :mod:`.storage`      — bitmask and CSR encodings of sparse tensors.

torch is imported inside the functions that need it: the NumPy parts work without it.
"""
from .architecture import apply_architecture, describe_architecture, load_pruned, save_pruned
from .graph import ChannelGroup, DependencyGraph, build_graph
from .magnitude import (apply_masks, current_masks, global_magnitude_masks, magnitude_mask, masked_training,
                        prune_magnitude)
from .nm import is_nm_sparse, nm_mask, prune_nm
from .report import ModelReport, count_params, model_report, storage_report
from .schedule import (constant_step_targets, fit_fine_tune, gradual_prune, iterative_prune,
                       zhu_gupta_sparsity, zhu_gupta_targets)
from ..sparse import decode, encode_bitmask, encode_csr, encode_dense, encoded_nbytes, smallest_encoding
from .structured import (channel_importance, dead_channels, prune_channels, remove_channels,
                         remove_zero_channels, select_channels)

__all__ = [
    "magnitude_mask", "global_magnitude_masks", "prune_magnitude", "apply_masks", "current_masks",
    "masked_training", "nm_mask", "is_nm_sparse", "prune_nm", "build_graph", "DependencyGraph",
    "ChannelGroup", "channel_importance", "select_channels", "remove_channels", "prune_channels",
    "dead_channels", "remove_zero_channels", "describe_architecture", "apply_architecture", "save_pruned",
    "load_pruned", "zhu_gupta_sparsity", "zhu_gupta_targets", "constant_step_targets", "iterative_prune",
    "gradual_prune", "fit_fine_tune", "model_report", "ModelReport", "count_params", "storage_report", "encode_dense",
    "encode_bitmask", "encode_csr", "decode", "encoded_nbytes", "smallest_encoding",
]
