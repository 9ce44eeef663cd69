"""ml_collections config files; each exposes `get_config(arg: str)`.

They import only from `mobilenet_jax` (config_recipes, config_files): an installed
copy carries this folder as `mobilenet_jax.configs`, never as a package `configs`.
"""
