"""Model zoo: shipped small models, synthetic test graphs, real-zoo build scripts."""
