"""ml_collections config files; each exposes `get_config(arg: str)`."""
