"""mcl_fast: motion-focused video loading and Motion-Focused Contrastive Learning (MCL)."""

__version__ = "0.1.0"
