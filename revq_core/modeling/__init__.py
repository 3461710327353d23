"""The paper's model, one concept per file: normalizer, quantizer (with its split axes), reset, rectifiers, ReVQ."""
