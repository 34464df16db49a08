"""Server side of fedsim: the Flower ServerApp and its strategies."""
