"""Detector heads on frozen CLIP features: kNN (UnivFD NN), linear probe (UnivFD LC), MLP (Santosh et al.)."""
