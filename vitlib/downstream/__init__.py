"""Downstream tasks at every layer: k-NN, retrieval, DAVIS propagation, keypoint PCK."""
