"""Pure-numpy scoring core: no torch, faiss or I/O."""
