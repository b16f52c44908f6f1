"""Adapters: exact nearest-neighbour banks; the only package importing faiss."""
