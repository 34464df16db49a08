"""Client side of fedsim: the Flower ClientApp and the local trainer."""
