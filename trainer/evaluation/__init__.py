"""One-shot evaluation: feature extraction, nearest neighbour, distribution calibration, results."""
