"""Turning a trained field into a structure that renders fast: the sparse voxel octree."""
