"""Radiance fields behind one interface (``base.Field``): TensoRF VM / CP and the MLP NeRF."""

# Importing the modules registers their families: mlp-nerf; tensorf-vm and tensorf-cp.
from nerfzip.fields import mlp_nerf, tensorf  # noqa: F401
