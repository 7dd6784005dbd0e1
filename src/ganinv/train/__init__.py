"""Training for ganinv's embedded models: one training loop (`loop`: stop flag, signals, rolling resume
checkpoint, snapshots, stats) under the StyleGAN2 trainer (`trainer`, with DiffAugment in `augment`) and
the inversion encoder's trainer (`encoder_trainer`); the dataset label classifier (`classifier`),
sample-quality measures (`quality`) and the builder of embedded model folders (`export`). Modules are
imported where used; nothing registers on import."""
