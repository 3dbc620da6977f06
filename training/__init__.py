"""depthmine's trainer: model, losses, dataset mixing, training loop and zero-shot evaluation."""
