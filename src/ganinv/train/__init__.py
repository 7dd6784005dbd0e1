"""Training for ganinv's embedded models: the StyleGAN2 trainer (`trainer`), DiffAugment (`augment`),
the dataset label classifier (`classifier`), sample-quality measures (`quality`) and the builder of
embedded model folders (`export`). Modules are imported where used; nothing registers on import."""
