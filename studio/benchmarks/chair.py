"""CHAIR (Rohrbach et al. 2018, "Object Hallucination in Image Captioning") for any object vocabulary.

For each caption the object words are found and mapped to canonical object names; a mention
is *hallucinated* when its object is not in the image's ground truth, which is (as in the
reference) the union of the image's instance categories and the objects its reference
captions name. Then

- CHAIR_i = hallucinated mentions / all mentions,
- CHAIR_s = captions with at least one hallucinated mention / all captions,
- recall = ground-truth objects the caption mentions / ground-truth objects (summed over
  captions), the number OPERA and VCD report beside CHAIR.

Mentions are counted per occurrence, as the reference code (``utils/chair.py``, and OPERA's
and VCD's copies of it) counts them: "a dog next to a dog" is two mentions of dog, and
"a man and a woman" next to no person is two hallucinated mentions. Recall counts objects once.

Finding mentions follows the reference: lower-case, tokenise, singularise, merge word runs
(``hot dog`` is not a dog, ``teddy bear`` not a bear, ``baby bird`` is a bird and no person,
``bow tie`` a tie, ``toilet seat`` a toilet, ``home plate`` nothing), drop ``seat`` when a
caption also says ``toilet``, and keep the tokens the vocabulary knows. Departures, by name:

- tokens are runs of letters and digits (hyphenated words kept whole), not ``nltk.word_tokenize``
  tokens, so no NLTK data is needed; they differ only around punctuation, e.g. ``cat/dog``;
- singularisation needs no NLTK data either: an irregular list and suffix rules
  (``-ies``, ``-ves``, ``-es``, ``-s``) whose result is accepted only if the vocabulary knows
  it, like WordNet's ``morphy`` accepts a form only if WordNet knows it. The reference used
  ``pattern.en.singularize``; OPERA/VCD use a POS-tagged WordNet lemmatizer, which also turns
  verbs into nouns ("skiing" -> ski -> skis, "seated" -> seat -> chair). Verbs are not lemmatised here;
- word runs of any length are merged, longest first (the reference merges pairs only), and
  every multi-word surface form of the vocabulary is a run; for COCO this changes nothing,
  since the three-word synonym "stove top oven" (never matched by the reference) is left out;
- the synonym list has the reference's slips fixed: " motor bike" and " cheesecake" (a
  double space made them unmatchable), "iPhone" (upper case never matches lower-cased
  captions); the rule ``wine glas`` -> wine glass (an artefact of ``singularize``) is not needed;
- a ratio whose denominator is zero is 0.0, not an exception.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources

SYNONYMS_FILE = "chair_synonyms.json"
TOKEN = re.compile(r"[^\W_]+(?:-[^\W_]+)*")

# singular -> plural, for the nouns whose plural no suffix rule makes
IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
    "goose": "geese", "tooth": "teeth", "foot": "feet", "ox": "oxen", "louse": "lice",
    "knife": "knives", "wife": "wives", "life": "lives", "leaf": "leaves", "loaf": "loaves",
    "half": "halves", "calf": "calves", "wolf": "wolves", "shelf": "shelves", "thief": "thieves",
    "scarf": "scarves", "elf": "elves", "cactus": "cacti", "fungus": "fungi",
}
SINGULAR_OF = {plural: singular for singular, plural in IRREGULAR_PLURALS.items()}


def name_key(name: str) -> str:
    """A category name as captions are read: lower case, its tokens joined by single spaces."""
    return " ".join(TOKEN.findall(name.lower()))


@dataclass(frozen=True)
class Vocabulary:
    """Which words and phrases name which objects.

    ``objects`` maps a lower-case surface form (a word, or words joined by single spaces) to
    its canonical object name; ``phrases`` maps further word runs to the token they are read
    as (one that is no surface form, e.g. ``home plate``, just keeps its words from counting);
    ``dropped_with`` maps a word to another whose presence in a caption discards it.
    """

    objects: Mapping[str, str]
    phrases: Mapping[str, str] = field(default_factory=dict)
    dropped_with: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        """The canonical object names."""
        return frozenset(self.objects.values())

    @cached_property
    def runs(self) -> dict[tuple[str, ...], str]:
        """Every multi-word run to merge, as a word tuple, and the token it becomes."""
        runs = {tuple(form.split()): form for form in self.objects if " " in form}
        runs.update((tuple(run.split()), token) for run, token in self.phrases.items())
        return runs

    @cached_property
    def known_words(self) -> frozenset[str]:
        """Every word of a surface form or run: the forms singularisation may produce."""
        forms = [*self.objects, *self.phrases, *self.phrases.values(), *self.dropped_with, *self.dropped_with.values()]
        return frozenset(word for form in forms for word in form.split())

    def canonical(self, name: str) -> str:
        """The canonical object of a category name (its :func:`name_key` if the vocabulary lacks it)."""
        key = name_key(name)
        return self.objects.get(key, key)


@cache
def coco_vocabulary() -> Vocabulary:
    """COCO's 80 categories with Rohrbach et al.'s synonyms and word-run rules (shipped data)."""
    data = json.loads(resources.files("studio.benchmarks").joinpath(f"data/{SYNONYMS_FILE}").read_text(encoding="utf-8"))
    objects = {name: name for name in data["objects"]}
    objects.update((synonym, name) for name, synonyms in data["objects"].items() for synonym in synonyms)
    return Vocabulary(objects=objects, phrases=data["phrases"], dropped_with=data["dropped_with"])


def pluralize(noun: str) -> str:
    """English plural of a noun or noun phrase (its last word): irregular list, then suffix rules."""
    head, _, last = noun.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        plural = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def vocabulary_from_categories(names: Iterable[str]) -> Vocabulary:
    """A vocabulary of arbitrary category names: each name (as :func:`name_key` reads it) and its
    plural name the category, multi-word names matched as runs; there are no synonyms."""
    objects: dict[str, str] = {}
    for name in names:
        canonical = name_key(name)
        objects[canonical] = canonical
        objects.setdefault(pluralize(canonical), canonical)
    return Vocabulary(objects=objects)


def vocabulary_for(category_names: Iterable[str]) -> Vocabulary:
    """The COCO vocabulary (with synonyms) when the categories are exactly COCO's 80, else
    :func:`vocabulary_from_categories` of them."""
    names = list(category_names)
    coco = coco_vocabulary()
    if {name_key(n) for n in names} == coco.names:
        return coco
    return vocabulary_from_categories(names)


def singularize(word: str, known: frozenset[str]) -> str:
    """``word`` itself if ``known``, else the first singular candidate that is known, else ``word``."""
    if word in known:
        return word
    candidates = [SINGULAR_OF[word]] if word in SINGULAR_OF else []
    if word.endswith("ies"):
        candidates += [word[:-3] + "y", word[:-3] + "ie"]
    if word.endswith("ves"):
        candidates += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        candidates.append(word[:-1])
    return next((c for c in candidates if c in known), word)


def _merge_runs(words: list[str], runs: Mapping[tuple[str, ...], str]) -> list[str]:
    """``words`` with every run replaced by its token, longest run first, scanning left to right."""
    longest = max((len(run) for run in runs), default=1)
    merged: list[str] = []
    i = 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 1, -1):
            token = runs.get(tuple(words[i:i + size]))
            if token is not None:
                merged.append(token)
                i += size
                break
        else:
            merged.append(words[i])
            i += 1
    return merged


def mentioned_objects(caption: str, vocab: Vocabulary) -> list[str]:
    """The canonical objects a caption mentions, in order, once per mention."""
    words = [singularize(token, vocab.known_words) for token in TOKEN.findall(caption.lower())]
    tokens = _merge_runs(words, vocab.runs)
    dropped = {word for word, trigger in vocab.dropped_with.items() if trigger in tokens}
    return [vocab.objects[t] for t in tokens if t in vocab.objects and t not in dropped]


def ground_truth(categories: Iterable[str], reference_captions: Iterable[str], vocab: Vocabulary) -> frozenset[str]:
    """An image's ground-truth objects: its instance categories and what its reference captions mention."""
    truth = {vocab.canonical(name) for name in categories}
    for text in reference_captions:
        truth.update(mentioned_objects(text, vocab))
    return frozenset(truth)


@dataclass(frozen=True)
class CaptionCounts:
    """One caption's CHAIR counts; sums of them (e.g. over a bootstrap resample) give :class:`ChairScore`.

    ``hallucinated`` and ``mentions`` count mentions; ``recalled`` and ``objects`` count distinct
    ground-truth objects; ``bad_caption`` is 1 if anything was hallucinated.
    """

    hallucinated: int
    mentions: int
    recalled: int
    objects: int
    bad_caption: int
    hallucinated_objects: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChairScore:
    """CHAIR_s, CHAIR_i and recall of some captions, with the totals they come from."""

    chair_s: float
    chair_i: float
    recall: float
    n_captions: int
    n_bad_captions: int
    n_mentions: int
    n_hallucinated: int
    n_objects: int
    n_recalled: int


def caption_counts(caption: str, truth: frozenset[str], vocab: Vocabulary) -> CaptionCounts:
    """CHAIR counts of one generated caption of an image whose ground-truth objects are ``truth``."""
    mentioned = mentioned_objects(caption, vocab)
    hallucinated = [name for name in mentioned if name not in truth]
    return CaptionCounts(hallucinated=len(hallucinated), mentions=len(mentioned), recalled=len(truth & set(mentioned)),
                         objects=len(truth), bad_caption=int(bool(hallucinated)),
                         hallucinated_objects=tuple(dict.fromkeys(hallucinated)))


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def chair_from_counts(counts: Iterable[CaptionCounts]) -> ChairScore:
    """CHAIR of captions from their per-caption counts."""
    items = list(counts)
    bad, mentions = sum(c.bad_caption for c in items), sum(c.mentions for c in items)
    hallucinated = sum(c.hallucinated for c in items)
    objects, recalled = sum(c.objects for c in items), sum(c.recalled for c in items)
    return ChairScore(chair_s=_ratio(bad, len(items)), chair_i=_ratio(hallucinated, mentions),
                      recall=_ratio(recalled, objects), n_captions=len(items), n_bad_captions=bad, n_mentions=mentions,
                      n_hallucinated=hallucinated, n_objects=objects, n_recalled=recalled)


def chair_score(items: Iterable[tuple[str, frozenset[str]]], vocab: Vocabulary) -> ChairScore:
    """CHAIR of (generated caption, ground-truth objects of its image) pairs."""
    return chair_from_counts(caption_counts(caption, truth, vocab) for caption, truth in items)
