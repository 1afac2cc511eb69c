"""Report text: sections, the paper's cleaning, sentence splitting, per-breast selection, augmentation, label → text,
and the zero-shot prompt sets.

Everything here is plain Python + regular expressions: no NLTK, no download at run time
(docs/reference-notes.md §7.3, §10).

* :func:`extract_sections` finds ``HISTORY:`` / ``FINDINGS:`` / ``IMPRESSION:`` … blocks in free text.
* :func:`clean_text` is the paper's cleaning (docs/reference-notes.md §7.3): every period ends a sentence,
  each sentence is lowercased and split into word / punctuation runs (the regex of
  ``nltk.wordpunct_tokenize``), non-ASCII characters are stripped, sentences with two tokens or fewer are
  dropped and the rest are joined with spaces (the result has no periods). ``BI-RADS`` becomes ``birads`` (the
  reference does this for IMPRESSION; the kit does it for every section).
* :func:`split_sentences` splits raw text into sentences (decimals, abbreviations and ``o'clock`` are protected);
  :func:`clean_sentences` cleans each sentence separately so that later steps can still shuffle or select sentences.
* :func:`select_breast_sentences` keeps the sentences of a bilateral report that concern one breast.
* :func:`augment_sentences` is the offline augmentation (a *real* sentence shuffle, sentence drop, paraphrase
  templates); :class:`BackTranslator` adds MarianMT back-translation when local model folders are given.
* :func:`labels_to_text` turns image-level finding labels into report-like text with the kit's own templates
  (:data:`FINDING_TEMPLATES`); :data:`PROMPTS` / :data:`PAPER_PROMPTS` are the zero-shot prompt sets.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------------------------
# Sections

#: Canonical section names, in report order.
SECTION_NAMES: tuple[str, ...] = (
    "HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION", "ASSESSMENT", "RECOMMENDATION", "CONCLUSION",
)

#: Header spellings (upper case) → canonical section name. Includes the reference table's misspellings.
SECTION_ALIASES: dict[str, str] = {
    "HISTORY": "HISTORY", "CLINICAL HISTORY": "HISTORY", "INDICATION": "HISTORY", "INDICATIONS": "HISTORY",
    "TECHNIQUE": "TECHNIQUE", "COMPARISON": "COMPARISON", "FINDINGS": "FINDINGS", "FINDING": "FINDINGS",
    "IMPRESSION": "IMPRESSION", "IMPRESSIONS": "IMPRESSION", "ASSESSMENT": "ASSESSMENT", "ASSESMENT": "ASSESSMENT",
    "RECOMMENDATION": "RECOMMENDATION", "RECOMMENDATIONS": "RECOMMENDATION", "RECOMENDATION": "RECOMMENDATION",
    "CONCLUSION": "CONCLUSION",
}

_HEADER_RE = re.compile(
    r"(?:^|(?<=[\s.;]))(" + "|".join(sorted((re.escape(a) for a in SECTION_ALIASES), key=len, reverse=True))
    + r")\s*:", re.IGNORECASE)


def extract_sections(text: str | None) -> dict[str, str]:
    """Split free text with ``HEADER:`` markers into ``{canonical section: body}``.

    A header is followed by a colon and is either written in capitals (``FINDINGS:``, anywhere after white space or a
    period) or starts a line (``Findings:`` in any case), so that "no significant findings: ..." inside a sentence is
    not mistaken for a header. Text before the first header goes to ``"PREAMBLE"`` (omitted when empty). A section that
    appears twice is concatenated. Returns ``{}`` for empty input.
    """
    if not text or not isinstance(text, str):
        return {}
    sections: dict[str, str] = {}
    matches = [m for m in _HEADER_RE.finditer(text)
               if m.group(1).isupper() or not text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip()]
    preamble = text[: matches[0].start()] if matches else text
    if preamble.strip():
        sections["PREAMBLE"] = preamble.strip()
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        name = SECTION_ALIASES[re.sub(r"\s+", " ", match.group(1).upper())]
        body = text[match.end():end].strip()
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


#: A report written for the kit (our wording), used when a data root has no image-report table.
EXAMPLE_REPORT = (
    "HISTORY: 58-year-old woman, screening mammography. Prior exam from 2023 available.\n"
    "FINDINGS: Standard CC and MLO views of both breasts were acquired. The breasts are heterogeneously dense, which "
    "may obscure small masses. In the right breast at 10 o'clock, middle third, there is an irregular mass with "
    "spiculated margins measuring 1.4 cm. No suspicious calcifications are seen in the right breast. The left breast "
    "shows no suspicious mass, calcification or architectural distortion. No skin thickening or nipple retraction.\n"
    "IMPRESSION: Suspicious right breast mass. BI-RADS 4: ultrasound-guided biopsy is recommended. Left breast: "
    "negative.\n"
    "RECOMMENDATION: Biopsy of the right breast mass."
)


# --------------------------------------------------------------------------------------------------------------------
# Paper cleaning (docs/reference-notes.md §7.3)

#: ``nltk.wordpunct_tokenize`` is ``RegexpTokenizer(r"\w+|[^\w\s]+")``: runs of word characters or of punctuation.
_WORDPUNCT_RE = re.compile(r"\w+|[^\w\s]+")
_BIRADS_RE = re.compile(r"BI\s*-\s*RADS", re.IGNORECASE)


def wordpunct_tokenize(text: str) -> list[str]:
    """Tokens as ``nltk.wordpunct_tokenize`` returns them (word runs and punctuation runs)."""
    return _WORDPUNCT_RE.findall(text)


def normalize_birads(text: str) -> str:
    """``BI-RADS`` (any case, optional spaces around the hyphen) → ``BIRADS`` (lowercased later by the cleaning)."""
    return _BIRADS_RE.sub("BIRADS", text)


def _clean_piece(piece: str) -> str:
    """The reference's per-sentence cleaning; returns "" for a dropped sentence."""
    piece = piece.replace("\ufffd\ufffd", " ")
    tokens = wordpunct_tokenize(piece.lower())
    if len(tokens) <= 1:
        return ""
    kept = [t for t in (tok.encode("ascii", "ignore").decode("ascii") for tok in tokens) if t]
    return " ".join(kept) if len(kept) > 2 else ""


def clean_text(text: str | None, birads: bool = True, keep_decimals: bool = False) -> str:
    """The paper's report cleaning (docs/reference-notes.md §7.3), e.g.
    ``"BI-RADS: 4, patient is 69 years old."`` → ``"birads : 4 , patient is 69 years old"``.

    Newlines become spaces, every ``.`` ends a sentence (also inside decimals, as in the reference), each sentence is
    lowercased and tokenised into word / punctuation runs, sentences of ≤ 2 ASCII tokens are dropped, and the kept
    sentences are joined with single spaces. ``None`` / NaN give ``""``. ``keep_decimals=True`` (a kit option, not the
    paper's behaviour) keeps ``1.5 cm`` as the tokens ``1 . 5 cm`` instead of cutting the sentence at the decimal point.
    """
    if not isinstance(text, str):
        return ""
    if birads:
        text = normalize_birads(text)
    text = text.replace("\n", " ").replace("\r", " ")
    if keep_decimals:
        text = _PROTECT_RES[0].sub(lambda m: m.group(1) + _PLACEHOLDER, text)
    text = text.replace(". ", ".").replace(".", ". ")
    pieces = (_clean_piece(piece.replace(_PLACEHOLDER, ".")) for piece in text.split(". "))
    return " ".join(p for p in pieces if p)


_ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "approx", "e.g", "i.e", "vs", "no", "fig", "st", "cf", "etc", "prof")
_PROTECT_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(\d)\.(?=\d)"),  # decimals: 1.5 cm
    re.compile(r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")\.(?=\s+[a-z0-9])", re.IGNORECASE),
    re.compile(r"\b([A-Z])\.(?=[A-Z]\.|\s+[a-z])"),  # initials such as U.S.
)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n\s*\n+")
_PLACEHOLDER = "\u2024"  # ONE DOT LEADER stands in for a protected period while splitting


def split_sentences(text: str | None) -> list[str]:
    """Split raw report text into sentences without any download (no NLTK ``punkt``).

    Splits after ``.``, ``!`` or ``?`` followed by white space, and at blank lines. Periods in decimals (``1.5``),
    common abbreviations (``approx.``, ``e.g.``, ``Dr.``) and initials are not sentence ends. Returns stripped,
    non-empty sentences in order.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    protected = text.strip()
    for pattern in _PROTECT_RES:
        protected = pattern.sub(lambda m: m.group(1) + _PLACEHOLDER, protected)
    parts = _SENTENCE_END_RE.split(protected)
    return [p.replace(_PLACEHOLDER, ".").replace("\n", " ").strip() for p in parts if p and p.strip()]


def clean_sentences(text: str | Sequence[str] | None, birads: bool = True, keep_decimals: bool = False) -> list[str]:
    """Split ``text`` (or take a list of raw sentences) and clean each sentence with :func:`clean_text`.

    Sentences that the cleaning drops entirely are left out. ``" ".join(clean_sentences(t))`` equals
    ``clean_text(t)`` whenever the sentences end with periods, as in the reports.
    """
    sentences = split_sentences(text) if isinstance(text, str) or text is None else list(text)
    cleaned = (clean_text(s, birads=birads, keep_decimals=keep_decimals) for s in sentences)
    return [c for c in cleaned if c]


# --------------------------------------------------------------------------------------------------------------------
# Per-breast selection

_SIDE_PATTERNS: dict[str, re.Pattern[str]] = {
    "R": re.compile(r"\bright\b|\brt\b|\br\s*(?:cc|mlo|breast)\b|\b(?:cc|mlo)\s*r\b", re.IGNORECASE),
    "L": re.compile(r"\bleft\b|\blt\b|\bl\s*(?:cc|mlo|breast)\b|\b(?:cc|mlo)\s*l\b", re.IGNORECASE),
}
_BOTH_RE = re.compile(r"\bbilateral(?:ly)?\b|\bboth\s+breasts?\b|\bbreasts\b|\beach\s+breast\b", re.IGNORECASE)


def sentence_sides(sentence: str) -> frozenset[str]:
    """Which breasts a sentence is about: ``{"R"}``, ``{"L"}``, ``{"R", "L"}`` (both / bilateral) or ``{}`` (no side)."""
    if _BOTH_RE.search(sentence):
        return frozenset({"R", "L"})
    return frozenset(side for side, pattern in _SIDE_PATTERNS.items() if pattern.search(sentence))


def normalize_laterality(laterality: str) -> str:
    """``"R"``/``"right"`` → ``"R"``, ``"L"``/``"left"`` → ``"L"``; anything else raises ``ValueError``."""
    value = str(laterality).strip().upper()
    if value in ("R", "RIGHT"):
        return "R"
    if value in ("L", "LEFT"):
        return "L"
    raise ValueError(f"laterality {laterality!r} is not one of R, L, right, left")


def select_breast_sentences(text: str | Sequence[str] | None, laterality: str) -> list[str]:
    """Keep the sentences about breast ``laterality`` or about both breasts / no side; drop those only about the other.

    ``text`` is raw text (split with :func:`split_sentences`) or a list of sentences. A sentence naming both sides
    (``"masses in the right and left breast"``) is kept for both breasts.
    """
    side = normalize_laterality(laterality)
    sentences = split_sentences(text) if isinstance(text, str) or text is None else list(text)
    kept = []
    for sentence in sentences:
        sides = sentence_sides(sentence)
        if not sides or side in sides:
            kept.append(sentence)
    return kept


# --------------------------------------------------------------------------------------------------------------------
# Offline augmentation

#: Groups of interchangeable phrases in *cleaned* text (lowercase, punctuation as separate tokens). The paraphrase step
#: replaces a matched phrase by another member of its group; no group changes what a report says.
PARAPHRASES: tuple[tuple[str, ...], ...] = (
    ("is seen", "is noted", "is identified", "is present"),
    ("are seen", "are noted", "are identified", "are present"),
    ("there is no", "no evidence of", "there is no evidence of"),
    ("recommended", "advised", "suggested"),
    ("the breasts are", "the breast tissue is", "breast tissue is"),
    ("compared with", "compared to", "in comparison with"),
    ("stable", "unchanged"),
    ("measuring", "measuring approximately", "which measures"),
    ("additional imaging", "further imaging", "additional evaluation", "further evaluation"),
    ("routine screening", "routine screening mammography", "routine mammographic screening"),
    ("biopsy", "tissue sampling"),
    ("within normal limits", "unremarkable"),
    ("suspicious for malignancy", "concerning for malignancy", "worrisome for malignancy"),
    ("probably benign", "likely benign"),
)
_PARAPHRASE_RES = [
    (group, re.compile(r"\b(" + "|".join(re.escape(p) for p in sorted(group, key=len, reverse=True)) + r")\b"))
    for group in PARAPHRASES
]


@dataclass
class TextAugmentConfig:
    """Offline text augmentation (all steps act on cleaned sentences)."""

    shuffle: bool = True  # permute the sentence order (always a different order when ≥ 2 distinct sentences)
    drop_prob: float = 0.1  # drop each sentence with this probability (at least ``min_sentences`` stay)
    paraphrase_prob: float = 0.5  # replace each matched phrase by another of its PARAPHRASES group with this probability
    min_sentences: int = 1  # never drop below this many sentences

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TextAugmentConfig:
        """Build from a profile section (unknown keys raise ``TypeError`` naming them)."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown augmentation setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


def _as_rng(rng: Any) -> random.Random:
    """``random.Random`` as is; a ``numpy.random.Generator`` seeds a new one from its stream; else ``Random(seed)``."""
    if isinstance(rng, random.Random):
        return rng
    if hasattr(rng, "integers"):
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    return random.Random(rng)


def shuffle_sentences(sentences: Sequence[str], rng: random.Random | int | None = None) -> list[str]:
    """A seeded permutation of ``sentences`` that differs from the input order whenever that is possible.

    (The reference's shuffle assigns to a loop variable and changes nothing, docs/reference-notes.md §7.5.)
    The multiset of sentences is always kept.
    """
    rng = _as_rng(rng)
    items = list(sentences)
    if len(set(items)) < 2:
        return items
    while True:
        permuted = items[:]
        rng.shuffle(permuted)
        if permuted != items:
            return permuted


def drop_sentences(sentences: Sequence[str], prob: float, rng: random.Random | int | None = None,
                   min_sentences: int = 1) -> list[str]:
    """Drop each sentence with probability ``prob``, keeping at least ``min_sentences`` (in their original order)."""
    rng = _as_rng(rng)
    items = list(sentences)
    keep = [rng.random() >= prob for _ in items]
    while sum(keep) < min(min_sentences, len(items)):
        keep[rng.choice([i for i, k in enumerate(keep) if not k])] = True
    return [s for s, k in zip(items, keep, strict=True) if k]


def paraphrase(sentence: str, rng: random.Random | int | None = None, prob: float = 1.0) -> str:
    """Replace phrases of :data:`PARAPHRASES` in a cleaned sentence; each match is replaced with probability ``prob``."""
    rng = _as_rng(rng)
    for group, pattern in _PARAPHRASE_RES:
        def replace(match: re.Match[str], group: tuple[str, ...] = group) -> str:
            if rng.random() >= prob:
                return match.group(0)
            return rng.choice([p for p in group if p != match.group(0)])
        sentence = pattern.sub(replace, sentence)
    return sentence


def augment_sentences(sentences: Sequence[str], rng: random.Random | int | None = None,
                      config: TextAugmentConfig | None = None) -> list[str]:
    """Offline augmentation of cleaned sentences: drop → paraphrase → shuffle (each as configured)."""
    rng = _as_rng(rng)
    config = config or TextAugmentConfig()
    out = drop_sentences(sentences, config.drop_prob, rng, config.min_sentences) if config.drop_prob > 0 else list(sentences)
    if config.paraphrase_prob > 0:
        out = [paraphrase(s, rng, config.paraphrase_prob) for s in out]
    if config.shuffle:
        out = shuffle_sentences(out, rng)
    return out


class BackTranslator:
    """Back-translation English → pivot → English with two local MarianMT folders
    (docs/reference-notes.md §7.3: ``opus-mt-en-it`` and ``opus-mt-it-en``, beam 5, sampling at temperature
    1.5).

    Nothing is downloaded: both folders must exist (``local_files_only=True``). MarianMT's tokenizer needs the
    ``sentencepiece`` package (``pip install sentencepiece``), which the kit does not install by default.
    """

    def __init__(self, forward_dir: str | Path, backward_dir: str | Path, *, num_beams: int = 5,
                 temperature: float = 1.5, batch_size: int = 16, max_length: int = 256, device: Any = None) -> None:
        self.dirs = (Path(forward_dir), Path(backward_dir))
        for folder in self.dirs:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(
                    f"{folder}: not a local MarianMT model folder (no config.json); back-translation needs two local "
                    "folders (e.g. opus-mt-en-it and opus-mt-it-en saved with save_pretrained) and downloads nothing")
        try:
            import sentencepiece  # noqa: F401
        except ImportError as error:
            raise ImportError("back-translation needs MarianMT's tokenizer package: pip install sentencepiece") from error
        from transformers import MarianMTModel, MarianTokenizer

        self.num_beams, self.temperature, self.batch_size, self.max_length = num_beams, temperature, batch_size, max_length
        self.device = device or "cpu"
        self.models = [MarianMTModel.from_pretrained(d, local_files_only=True).to(self.device).eval() for d in self.dirs]
        self.tokenizers = [MarianTokenizer.from_pretrained(d, local_files_only=True) for d in self.dirs]

    def _translate(self, texts: list[str], which: int) -> list[str]:
        import torch

        model, tokenizer = self.models[which], self.tokenizers[which]
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=self.max_length).to(self.device)
            with torch.no_grad():
                generated = model.generate(**batch, num_beams=self.num_beams, do_sample=True,
                                           temperature=self.temperature, max_length=self.max_length)
            out += tokenizer.batch_decode(generated, skip_special_tokens=True)
        return out

    def __call__(self, texts: Sequence[str], seed: int = 42) -> list[str]:
        """Back-translate ``texts`` (seeded); outputs are lowercased as in the reference."""
        import torch

        torch.manual_seed(seed)
        texts = [t if t else " " for t in texts]
        return [t.lower() for t in self._translate(self._translate(list(texts), 0), 1)]


# --------------------------------------------------------------------------------------------------------------------
# Labels → text (the kit's own templates)

#: The VinDr-Mammo finding categories (``finding_categories`` values), in the kit's canonical order.
FINDING_NAMES: tuple[str, ...] = (
    "Mass", "Suspicious Calcification", "Architectural Distortion", "Asymmetry", "Focal Asymmetry", "Global Asymmetry",
    "Suspicious Lymph Node", "Nipple Retraction", "Skin Retraction", "Skin Thickening", "No Finding",
)
#: One-hot column name of each finding (spaces → underscores), as in the built VinDr tables.
FINDING_COLUMNS: dict[str, str] = {name: name.replace(" ", "_") for name in FINDING_NAMES}

#: finding → {"positive": [...], "negative": [...]}. ``{side}`` is "right" or "left"; ``{where}`` is an optional
#: location phrase (" in the upper outer quadrant", or "" when no position is known). Written for this kit.
FINDING_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "Mass": {
        "positive": ["a mass is seen{where} in the {side} breast", "{side} breast : mass{where}",
                     "there is a mass{where} in the {side} breast", "a {side} breast mass is identified{where}",
                     "the {side} breast shows a mass{where}"],
        "negative": ["no mass is seen in the {side} breast", "{side} breast : no mass",
                     "there is no mass in the {side} breast", "no {side} breast mass is identified"],
    },
    "Suspicious Calcification": {
        "positive": ["suspicious calcifications are seen{where} in the {side} breast",
                     "{side} breast : suspicious calcifications{where}",
                     "there are suspicious calcifications{where} in the {side} breast",
                     "the {side} breast shows suspicious microcalcifications{where}"],
        "negative": ["no suspicious calcifications are seen in the {side} breast",
                     "{side} breast : no suspicious calcifications",
                     "there are no suspicious calcifications in the {side} breast"],
    },
    "Architectural Distortion": {
        "positive": ["architectural distortion is seen{where} in the {side} breast",
                     "{side} breast : architectural distortion{where}",
                     "there is architectural distortion{where} in the {side} breast"],
        "negative": ["no architectural distortion is seen in the {side} breast",
                     "{side} breast : no architectural distortion",
                     "there is no architectural distortion in the {side} breast"],
    },
    "Asymmetry": {
        "positive": ["an asymmetry is seen{where} in the {side} breast", "{side} breast : asymmetry{where}",
                     "there is an asymmetry{where} in the {side} breast"],
        "negative": ["no asymmetry is seen in the {side} breast", "{side} breast : no asymmetry",
                     "there is no asymmetry in the {side} breast"],
    },
    "Focal Asymmetry": {
        "positive": ["a focal asymmetry is seen{where} in the {side} breast", "{side} breast : focal asymmetry{where}",
                     "there is a focal asymmetry{where} in the {side} breast"],
        "negative": ["no focal asymmetry is seen in the {side} breast", "{side} breast : no focal asymmetry",
                     "there is no focal asymmetry in the {side} breast"],
    },
    "Global Asymmetry": {
        "positive": ["a global asymmetry is seen in the {side} breast", "{side} breast : global asymmetry",
                     "there is a global asymmetry of the {side} breast"],
        "negative": ["no global asymmetry is seen in the {side} breast", "{side} breast : no global asymmetry",
                     "there is no global asymmetry of the {side} breast"],
    },
    "Suspicious Lymph Node": {
        "positive": ["a suspicious lymph node is seen{where} in the {side} breast",
                     "{side} breast : suspicious lymph node{where}",
                     "there is a suspicious lymph node{where} on the {side} side"],
        "negative": ["no suspicious lymph node is seen in the {side} breast",
                     "{side} breast : no suspicious lymph node",
                     "there is no suspicious lymph node on the {side} side"],
    },
    "Nipple Retraction": {
        "positive": ["the {side} nipple is retracted", "{side} breast : nipple retraction",
                     "there is retraction of the {side} nipple"],
        "negative": ["the {side} nipple is not retracted", "{side} breast : no nipple retraction",
                     "there is no retraction of the {side} nipple"],
    },
    "Skin Retraction": {
        "positive": ["skin retraction is seen{where} in the {side} breast", "{side} breast : skin retraction{where}",
                     "there is retraction of the skin{where} of the {side} breast"],
        "negative": ["no skin retraction is seen in the {side} breast", "{side} breast : no skin retraction",
                     "there is no skin retraction of the {side} breast"],
    },
    "Skin Thickening": {
        "positive": ["skin thickening is seen{where} in the {side} breast", "{side} breast : skin thickening{where}",
                     "the skin of the {side} breast is thickened{where}"],
        "negative": ["no skin thickening is seen in the {side} breast", "{side} breast : no skin thickening",
                     "the skin of the {side} breast is not thickened"],
    },
    "No Finding": {
        "positive": ["no significant finding in the {side} breast", "{side} breast : negative",
                     "the {side} breast is unremarkable", "no suspicious abnormality in the {side} breast"],
        # "No Finding" is never a negative: a breast with findings simply lists them.
        "negative": ["the {side} breast has at least one finding", "{side} breast : not negative"],
    },
}

#: Location phrases that ``positions`` may use in :func:`labels_to_text` (the kit never invents a position).
POSITIONS: tuple[str, ...] = (
    "upper outer quadrant", "upper inner quadrant", "lower outer quadrant", "lower inner quadrant", "retroareolar region",
    "axillary tail", "central region", "upper half", "lower half", "outer half", "inner half",
)

_SIDE_WORD = {"R": "right", "L": "left"}
_SLOTS = ("pos_right", "pos_left", "neg_right", "neg_left")


def canonical_finding(name: str) -> str:
    """Map ``"Suspicious_Calcification"`` / ``"suspicious calcification"`` to the VinDr name; unknown names raise."""
    key = re.sub(r"[\s_]+", " ", str(name)).strip().lower()
    for finding in FINDING_NAMES:
        if finding.lower() == key:
            return finding
    raise ValueError(f"unknown finding {name!r}; expected one of {', '.join(FINDING_NAMES)}")


def breast_findings(positive: Iterable[str], laterality: str) -> dict[str, list[str]]:
    """The four-slot label dict ``{pos_right, pos_left, neg_right, neg_left}`` of one breast (README format of the
    reference): positives of this side and negatives = every other finding except ``No Finding``."""
    side = normalize_laterality(laterality)
    pos = [canonical_finding(f) for f in positive]
    pos = list(dict.fromkeys(pos))
    if not pos:
        pos = ["No Finding"]
    neg = [f for f in FINDING_NAMES if f != "No Finding" and f not in pos]
    key = "right" if side == "R" else "left"
    other = "left" if side == "R" else "right"
    return {f"pos_{key}": pos, f"pos_{other}": [], f"neg_{key}": neg, f"neg_{other}": []}


def labels_to_text(findings: Mapping[str, Sequence[str]] | Sequence[str], laterality: str | None = None,
                   deterministic: bool = True, rng: Any = None, positions: Mapping[str, str] | None = None,
                   max_negatives: int | None = None) -> str:
    """Report-like text from finding labels with the kit's templates.

    Args:
        findings: either the four-slot dict ``{pos_right, pos_left, neg_right, neg_left}`` → lists of finding names
            (missing slots = empty), or a flat list of the positive findings of one breast together with
            ``laterality`` (turned into slots by :func:`breast_findings`). When ``No Finding`` is positive on either
            side, the negatives are cleared (as in the reference).
        laterality: ``"R"`` / ``"L"``, needed with a flat list.
        deterministic: validation mode — the first template of each finding, fixed order, no sampling.
            Otherwise (training) a random template per finding and a shuffled sentence order, drawn from ``rng``.
        rng: ``random.Random``, ``numpy.random.Generator`` or a seed (training mode).
        positions: optional finding → location phrase (e.g. one of :data:`POSITIONS`) used in positive sentences.
        max_negatives: in training mode, keep at most this many randomly chosen negative sentences (None = all).

    Returns:
        Cleaned, lowercase sentences joined by spaces (the form the paper's text encoder sees).
    """
    if not isinstance(findings, Mapping):
        if laterality is None:
            raise ValueError("labels_to_text: a flat list of findings needs the breast's laterality ('R' or 'L')")
        findings = breast_findings(findings, laterality)
    unknown = sorted(set(findings) - set(_SLOTS))
    if unknown:
        raise ValueError(f"unknown label slot(s) {unknown}; expected {', '.join(_SLOTS)}")
    slots = {slot: [canonical_finding(f) for f in findings.get(slot, [])] for slot in _SLOTS}
    if "No Finding" in slots["pos_right"] + slots["pos_left"]:
        slots["neg_right"], slots["neg_left"] = [], []
    rng = None if deterministic else _as_rng(rng)
    positions = {canonical_finding(k): v for k, v in (positions or {}).items()}
    positives, negatives = [], []
    for slot in _SLOTS:
        polarity = "positive" if slot.startswith("pos") else "negative"
        side = slot.split("_")[1]
        for finding in slots[slot]:
            templates = FINDING_TEMPLATES[finding][polarity]
            template = templates[0] if rng is None else rng.choice(templates)
            where = f" in the {positions[finding]}" if polarity == "positive" and finding in positions else ""
            sentence = template.format(side=side, where=where)
            (positives if polarity == "positive" else negatives).append(sentence)
    if rng is not None and max_negatives is not None and len(negatives) > max_negatives:
        negatives = rng.sample(negatives, max_negatives)
    sentences = list(dict.fromkeys(positives + negatives))  # ordered de-duplication (the reference used set())
    if rng is not None:
        sentences = shuffle_sentences(sentences, rng)
    return " ".join(sentences)


# --------------------------------------------------------------------------------------------------------------------
# Zero-shot prompt sets

#: Kit prompt sets for zero-shot classification, in cleaned form: binary tasks map to (negative prompts, positive
#: prompts); density maps each BI-RADS category to its prompts. Several phrasings each, for prompt ensembles.
PROMPTS: dict[str, Any] = {
    "mass": (
        ["no mass", "no mass is seen", "there is no mass in the breast", "no suspicious mass"],
        ["mass", "a mass is seen", "there is a mass in the breast", "suspicious mass"],
    ),
    "suspicious_calcification": (
        ["no suspicious calcification", "no suspicious calcifications are seen",
         "there are no suspicious calcifications in the breast", "no microcalcifications"],
        ["suspicious calcification", "suspicious calcifications are seen",
         "there are suspicious calcifications in the breast", "suspicious microcalcifications"],
    ),
    "malignancy": (
        ["no malignancy", "no evidence of malignancy", "benign findings", "negative mammogram"],
        ["malignancy", "findings suspicious for malignancy", "breast cancer", "highly suggestive of malignancy"],
    ),
    "density": {
        "A": ["the breasts are almost entirely fatty", "almost entirely fatty breast tissue", "fatty breasts",
              "breast density category a"],
        "B": ["there are scattered areas of fibroglandular density", "scattered fibroglandular tissue",
              "scattered fibroglandular densities", "breast density category b"],
        "C": ["the breasts are heterogeneously dense , which may obscure small masses",
              "heterogeneously dense breast tissue", "heterogeneously dense breasts", "breast density category c"],
        "D": ["the breasts are extremely dense , which lowers the sensitivity of mammography",
              "extremely dense breast tissue", "extremely dense breasts", "breast density category d"],
    },
}

#: The paper's single prompts (docs/reference-notes.md §8.1, ``zs_clip.yaml``), same structure as
#: :data:`PROMPTS`. The reference configures no density prompts, so density has none here.
PAPER_PROMPTS: dict[str, Any] = {
    "mass": (["no mass"], ["mass"]),
    "suspicious_calcification": (["no suspicious calcification"], ["suspicious calcification"]),
    "malignancy": (["no malignancy"], ["malignancy"]),
}


def prompt_classes(prompts: Mapping[str, Any], task: str) -> tuple[list[str], list[list[str]]]:
    """Class names and prompt lists of one task: binary → ``(["negative", "positive"], [neg, pos])``;
    density → ``(["A", "B", "C", "D"], [...])``."""
    if task not in prompts:
        raise KeyError(f"no prompts for task {task!r}; available: {', '.join(prompts)}")
    value = prompts[task]
    if isinstance(value, Mapping):
        return list(value), [list(v) for v in value.values()]
    negative, positive = value
    return ["negative", "positive"], [list(negative), list(positive)]
