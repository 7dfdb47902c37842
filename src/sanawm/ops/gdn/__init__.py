"""Frame-wise Gated DeltaNet (GDN): the linear-attention recurrence of SANA-WM.

One recurrence step per latent frame; every frame inserts all of its S tokens at once.
Per head (width D) the state is a D x D matrix `kv` (indexed [value dim, key dim]) and, for
the main branch, a D-vector normaliser `z`. For frame t with tokens as rows
(q, k, v, q_rot, k_rot: S x D; beta: S; gamma: scalar):

    kv <- gamma * kv
    kv <- kv + ((v^T - kv k_rot^T) * beta) k_rot          # delta rule on the rotated keys
    z  <- gamma * z
    z  <- z + k^T ((1 - k z) * beta)                       # same rule with target 1
    num_t = q_rot kv^T        (S x D)      den_t = q z      (S)

Directions:
- forward (causal): the output of frame t reads the state after inserting frames ..t;
- reverse (exclusive): the output of frame t reads frames t+1.. of its own chunk only.
`gdn` combines them as (num_fwd + num_rev) / (den_fwd + den_rev + eps); the camera branch's
`delta_rule` has no normaliser and returns num_fwd + num_rev.

Layout (all functions): q, k, v, q_rot, k_rot: (B, H, T, S, D); beta: (B, H, T, S);
gamma: (B, H, T). `chunk_starts` lists the first frame of every chunk (`sanawm.chunks`);
`None` means one chunk, i.e. fully bidirectional; `range(T)` makes the op causal.

Implementations (one module each, none imports another):
- `reference.py`: the plain recurrence above, frame by frame (`gdn_reference`, `recurrent_scan`);
- `scan.py`: the PyTorch path, batched per-frame transitions and a D x D scan; differentiable,
  what training runs;
- `fused.py`: the Triton kernels (CUDA, inference only: no autograd);
- this file: `gdn` / `delta_rule`, which dispatch on `backend`: "torch", "triton" or "auto"
  (triton where it applies: CUDA tensors, triton importable, no gradient needed; torch
  otherwise). `select_backend` says which one a call takes and why; with logging at DEBUG,
  every "auto" call logs its choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sanawm.ops.gdn.common import GDNState, check_shapes
from sanawm.ops.gdn.reference import gdn_reference, recurrent_scan
from sanawm.ops.gdn.scan import torch_scan

BACKENDS = ("auto", "torch", "triton")

_log = logging.getLogger(__name__)


class BackendChoice(NamedTuple):
    """The implementation a call runs ("torch" or "triton") and why."""

    name: str
    reason: str


def select_backend(backend: str, q: Tensor, beta: Tensor, gamma: Tensor, tensors: Sequence[Tensor]) -> BackendChoice:
    """Which implementation `gdn` / `delta_rule` run for these inputs (q, beta, gamma and the
    other per-token tensors `tensors`).

    "triton" that cannot run here (no triton package, CPU tensors, gradients needed, an
    unsupported dtype) raises RuntimeError naming the reason.
    """
    assert backend in BACKENDS, f"GDN backend must be one of {BACKENDS}, got {backend!r}"
    if backend == "torch":
        return BackendChoice("torch", "asked for")
    if backend == "auto" and not q.is_cuda:
        return BackendChoice("torch", f"tensors on {q.device}")
    try:
        from sanawm.ops.gdn import fused
    except ImportError as err:
        if backend == "triton":
            raise RuntimeError(f"GDN backend 'triton' needs the triton package ({err})") from err
        return BackendChoice("torch", f"triton not importable ({err})")
    reason = fused.unsupported_reason(q, beta, gamma, tensors)
    if reason is None:
        return BackendChoice("triton", "asked for" if backend == "triton" else "CUDA tensors, no gradient")
    if backend == "triton":
        raise RuntimeError(f"GDN backend 'triton' cannot run these inputs: {reason}")
    return BackendChoice("torch", reason)


def _select(backend: str, q: Tensor, beta: Tensor, gamma: Tensor, tensors: Sequence[Tensor]) -> BackendChoice:
    choice = select_backend(backend, q, beta, gamma, tensors)
    # Logging calls break torch.compile graphs (sanawm.model.compile): skip them while tracing.
    if backend == "auto" and not torch.compiler.is_compiling():
        _log.debug("GDN backend auto -> %s (%s)", choice.name, choice.reason)
    return choice


def gdn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_rot: Tensor,
    k_rot: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    eps: float,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    backend: str = "auto",
    precision: str = "auto",
) -> tuple[Tensor, GDNState]:
    """Main-branch GDN: forward scan over all frames plus reverse scan within each chunk.

    q/k feed the normaliser, q_rot/k_rot (RoPE applied) the numerator. Returns the output
    (B, H, T, S, D) = (num_fwd + num_rev) / (den_fwd + den_rev + eps) in q's dtype and the
    forward state after the last frame (seed it as `initial_state` of the next chunk).
    Computes in float32 (float64 for float64 inputs). `backend`: see the module docstring;
    `precision`: the fused kernels' tensor-core precision (`sanawm.ops.gdn.fused`; the torch
    path computes in float32 or float64 whatever it says).
    """
    check_shapes("gdn", dict(q=q, k=k, v=v, q_rot=q_rot, k_rot=k_rot), beta, gamma)
    if _select(backend, q, beta, gamma, (q, k, v, q_rot, k_rot)).name == "triton":
        from sanawm.ops.gdn.fused import gdn_triton

        return gdn_triton(
            q, k, v, q_rot, k_rot, beta, gamma, eps=eps, chunk_starts=chunk_starts, initial_state=initial_state,
            precision=precision,
        )
    return torch_scan(
        q, k, v, q_rot, k_rot, beta, gamma, eps=eps, chunk_starts=chunk_starts, initial_state=initial_state
    )


def delta_rule(
    q_rot: Tensor,
    k_rot: Tensor,
    v: Tensor,
    beta: Tensor,
    gamma: Tensor,
    *,
    chunk_starts: Sequence[int] | None = None,
    initial_state: GDNState | None = None,
    backend: str = "auto",
    precision: str = "auto",
) -> tuple[Tensor, GDNState]:
    """Camera-branch delta rule: numerator only, forward plus reverse-within-chunk.

    Returns (B, H, T, S, D) = num_fwd + num_rev and the forward state (z is None).
    `backend`, `precision`: as for `gdn`.
    """
    check_shapes("delta_rule", dict(q=q_rot, k=k_rot, v=v), beta, gamma)
    if _select(backend, q_rot, beta, gamma, (q_rot, k_rot, v)).name == "triton":
        from sanawm.ops.gdn.fused import delta_rule_triton

        return delta_rule_triton(
            q_rot, k_rot, v, beta, gamma, chunk_starts=chunk_starts, initial_state=initial_state, precision=precision
        )
    return torch_scan(
        q_rot, k_rot, v, q_rot, k_rot, beta, gamma, eps=None, chunk_starts=chunk_starts, initial_state=initial_state
    )


def use_gdn_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Set the fused kernels' precision ("auto", "ieee" or "tf32") of every GDN layer of `model`
    (in place; what `SanaWMConfig.gdn_precision` sets at construction)."""
    assert precision in ("auto", "ieee", "tf32"), f"GDN precision must be auto, ieee or tf32, got {precision!r}"
    for module in model.modules():
        if hasattr(module, "precision") and hasattr(module, "backend"):  # GDN layers
            module.precision = precision
    return model


__all__ = [
    "BACKENDS",
    "use_gdn_precision",
    "BackendChoice",
    "GDNState",
    "delta_rule",
    "gdn",
    "gdn_reference",
    "recurrent_scan",
    "select_backend",
]
