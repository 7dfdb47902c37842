"""Numerical kernels of the model: PyTorch (also the references for faster kernels) and Triton.

- `sanawm.ops.gdn`: the frame-wise Gated DeltaNet (`gdn`, `delta_rule`, `gdn_reference`); the
  `backend` argument picks the PyTorch path or the fused kernels.
- `sanawm.ops.gdn_triton`: fused Triton kernels of `gdn` / `delta_rule` (CUDA, inference).
- `sanawm.ops.temporal`: convolutions along frames (`key_conv`, `frame_conv`).
"""
