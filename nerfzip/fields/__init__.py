"""Radiance fields behind one interface (``base.Field``): TensoRF VM / CP, the MLP NeRF,
Instant-NGP's hash grid and the baked sparse voxel octree."""

# Importing the modules registers their families: mlp-nerf; tensorf-vm and tensorf-cp;
# hash-grid; octree.
from nerfzip.fields import hash_grid, mlp_nerf, octree, tensorf  # noqa: F401
