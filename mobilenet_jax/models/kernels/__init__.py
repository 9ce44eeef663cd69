"""How the networks' operations are computed, apart from what the networks are.

Pure functions, no Flax modules: the formulations of the depthwise and 1x1
convolutions and their registries (depthwise.py, pointwise.py), train-mode BatchNorm
with its hand-written VJP (batch_norm.py), and the C++ XLA:CPU kernels (*.cc) with
their `jax.ffi` wrappers (depthwise_ffi.py, batchnorm_ffi.py) and their build
(cpu_kernels.py). The layers in `models.layers` and `models.depthwise` own the
parameters and call these; `models.layers.Ops` says which formulation each uses.
"""
