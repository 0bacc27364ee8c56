"""Training: the ImageBind recipe (contrastive alignment of modality towers to frozen anchors)."""
