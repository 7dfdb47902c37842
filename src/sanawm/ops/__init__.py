"""Numerical kernels of the model, pure PyTorch (also the references for faster kernels).

- `sanawm.ops.gdn`: the frame-wise Gated DeltaNet (`gdn`, `delta_rule`, `gdn_reference`).
- `sanawm.ops.temporal`: convolutions along frames (`key_conv`, `frame_conv`).
"""
