"""Model families and their one option set: from options to a ready model, whatever the weights are.

    options.py   `ModelOptions`: every model option (weights, preset, device, speed, sampling), defined
                 once; the CLI's flags are generated from it (`model.options`). Light: no torch.
    registry.py  `ModelFamily` and the registry: a family (InfiniteTalk with SoulX-FlashTalk today) is a
                 package under model/ with a `family.py` declaring its weights kinds, presets, detection,
                 builder and follower; `build_model(options)` picks the family and returns its ready model.
"""

from .options import ModelOptions

__all__ = ["ModelOptions"]
