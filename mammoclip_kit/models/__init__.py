"""Model towers, the MammoClip model, presets, released-checkpoint loading and the one loader (:mod:`.loader`)."""
