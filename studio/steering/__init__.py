"""Modality-preference steering, one module per concern:

- :mod:`~studio.steering.vectors`: a steering setting and the interventions it makes;
- :mod:`~studio.steering.preference`: answering conflict items and counting which side wins;
- :mod:`~studio.steering.fit`: preference directions, the per-layer probe, the saved fit;
- :mod:`~studio.steering.sweep`: the alpha sweep and the alpha chosen from it;
- :mod:`~studio.steering.split`: the alpha chosen on a validation split, reported on another;
- :mod:`~studio.steering.train`: a steering vector trained toward the image;
- :mod:`~studio.steering.mc2`: MC²'s direction from instruction-paired contrasts, and its layer window.
"""
