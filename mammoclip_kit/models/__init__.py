"""Model towers, the MammoClip model, presets and released-checkpoint loading."""
