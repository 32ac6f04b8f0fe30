"""Published hallucination benchmarks, scored as their reference code scores them.

- :mod:`studio.benchmarks.pope`: POPE question files and the official yes/no scoring;
- :mod:`studio.benchmarks.chair`: CHAIR_s, CHAIR_i and recall of captions, for COCO's
  vocabulary with synonyms or any folder's own categories;
- :mod:`studio.benchmarks.coco`: the ground truth of a COCO-format folder;
- :mod:`studio.benchmarks.answers`: a resumable answer log, so a long run can be stopped and resumed.

Each scorer keeps per-item counts, so a paired bootstrap can resample items and rescore them.
"""
