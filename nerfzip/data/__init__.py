"""Scenes: posed images and cameras from Blender, LLFF, nerfstudio / instant-ngp folders, or the
built-in procedural scene."""
