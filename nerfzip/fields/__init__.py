"""Radiance fields behind one interface (``base.Field``): TensoRF VM / CP, the MLP NeRF and
Instant-NGP's hash grid."""

# Importing the modules registers their families: mlp-nerf; tensorf-vm and tensorf-cp;
# hash-grid.
from nerfzip.fields import hash_grid, mlp_nerf, tensorf  # noqa: F401
