"""sslzoo.training: datasets, the training loop, pretext losses, the linear probe."""
