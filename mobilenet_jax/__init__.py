"""mobilenet-jax: MobileNet V1 and V2 in JAX/Flax, trained the way the papers did."""

__version__ = "0.1.0"
