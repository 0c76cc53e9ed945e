"""The nerfzip command line."""
