"""Per-modality preprocessing in numpy: sensor units in, model-ready arrays out."""
