"""Serving: the batched workers that load bundled checkpoints (TRM/HRM grids, CfC/LTC series) and the verifier pool."""
