"""Training the backbones with Ray Train, and evaluating their checkpoints with Ray Data."""
