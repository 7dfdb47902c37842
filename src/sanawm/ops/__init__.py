"""Numerical kernels of the model: PyTorch (also the references for faster kernels) and Triton.

- `sanawm.ops.gdn`: the frame-wise Gated DeltaNet (`gdn`, `delta_rule`, dispatching on
  `backend`), with `reference.py` (the plain recurrence), `scan.py` (the PyTorch path) and
  `fused.py` (the Triton kernels; CUDA, inference).
- `sanawm.ops.temporal`: convolutions along frames (`key_conv`, `frame_conv_channels_first`).
"""
