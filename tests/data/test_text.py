"""Report text: sections, the paper's cleaning, sentence split, per-breast selection, augmentation, label → text, prompts."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from mammoclip_kit.data import text as T

REPORT = (
    "HISTORY: Screening, asymptomatic.\n"
    "FINDINGS: The breasts are heterogeneously dense, which may obscure small masses. "
    "Right breast, 10 o'clock, middle depth: irregular mass measuring 14 mm. "
    "Left breast: no suspicious calcifications. No skin thickening is seen.\n"
    "IMPRESSION: BI-RADS 4: biopsy of the right breast mass is recommended."
)


def test_extract_sections_finds_headers_and_aliases():
    sections = T.extract_sections(REPORT)
    assert list(sections) == ["HISTORY", "FINDINGS", "IMPRESSION"]
    assert sections["HISTORY"] == "Screening, asymptomatic."
    assert sections["FINDINGS"].startswith("The breasts are") and sections["FINDINGS"].endswith("is seen.")
    assert T.extract_sections("Intro text. ASSESMENT: b2. RECOMENDATION: annual.") == {
        "PREAMBLE": "Intro text.", "ASSESSMENT": "b2.", "RECOMMENDATION": "annual."}
    assert T.extract_sections("Findings: no significant findings: stable.\nImpression: benign.") == {
        "FINDINGS": "no significant findings: stable.", "IMPRESSION": "benign."}
    assert T.extract_sections(None) == {}


def test_paper_cleaning_hand_written_cases():
    assert T.clean_text("BI-RADS: 4, patient is 69 years old.") == "birads : 4 , patient is 69 years old"
    # every period ends a sentence; sentences of <= 2 tokens are dropped; non-ASCII is stripped from tokens
    assert T.clean_text("No change. Ok. Stable  mass\nin the LEFT breast.") == "stable mass in the left breast"
    assert T.clean_text("Caf\u00e9 noted \u00e9 here.") == "caf noted here"
    # the paper cuts at decimal points ("5 cm" is then too short and dropped); the kit option keeps them
    assert T.clean_text("Mass measuring 1.5 cm.") == "mass measuring 1"
    assert T.clean_text("Mass measuring 1.5 cm.", keep_decimals=True) == "mass measuring 1 . 5 cm"
    assert T.clean_text(float("nan")) == ""


def test_wordpunct_tokenize_matches_nltk_regex():
    assert T.wordpunct_tokenize("10 o'clock, (r-mlo)...") == ["10", "o", "'", "clock", ",", "(", "r", "-", "mlo", ")..."]


def test_clean_sentences_join_equals_paper_cleaning():
    findings = T.extract_sections(REPORT)["FINDINGS"]
    assert " ".join(T.clean_sentences(findings)) == T.clean_text(findings)
    assert len(T.clean_sentences(findings)) == 4


def test_split_sentences_protects_decimals_and_abbreviations():
    text = "Mass of approx. 1.5 cm, e.g. benign.  Dr. Who agrees! Is it stable?\n\nNew paragraph"
    assert T.split_sentences(text) == ["Mass of approx. 1.5 cm, e.g. benign.", "Dr. Who agrees!", "Is it stable?",
                                       "New paragraph"]
    assert T.split_sentences("") == []


def test_per_breast_selection_keeps_this_side_both_and_neutral():
    sentences = T.split_sentences(T.extract_sections(REPORT)["FINDINGS"])
    left = T.select_breast_sentences(sentences, "L")
    right = T.select_breast_sentences(sentences, "right")
    assert left == [sentences[0], sentences[2], sentences[3]]
    assert right == [sentences[0], sentences[1], sentences[3]]
    assert T.sentence_sides("Bilateral CC and MLO views.") == {"R", "L"}
    assert T.sentence_sides("Masses in the right and left breast.") == {"R", "L"}
    assert T.sentence_sides("RMLO view is positioned well.") == {"R"}
    assert T.sentence_sides("Routine screening.") == set()
    with pytest.raises(ValueError, match="laterality 'X'"):
        T.select_breast_sentences(sentences, "X")


def test_sentence_shuffle_really_changes_order_and_keeps_multiset():
    sentences = ["a b c", "d e f", "g h i"]
    for seed in range(20):
        shuffled = T.shuffle_sentences(sentences, seed)
        assert shuffled != sentences
        assert Counter(shuffled) == Counter(sentences)
    assert T.shuffle_sentences(sentences, 3) == T.shuffle_sentences(sentences, 3)
    assert T.shuffle_sentences(["only one"], 0) == ["only one"]


def test_drop_keeps_order_and_minimum():
    sentences = [f"s{i} x y" for i in range(6)]
    kept = T.drop_sentences(sentences, 1.0, random.Random(0), min_sentences=2)
    assert len(kept) == 2 and kept == [s for s in sentences if s in kept]
    assert T.drop_sentences(sentences, 0.0, 0) == sentences


def test_paraphrase_replaces_within_group():
    out = T.paraphrase("a mass is seen , biopsy recommended", random.Random(1), prob=1.0)
    assert out != "a mass is seen , biopsy recommended"
    assert "is seen" not in out and "recommended" not in out and "biopsy" not in out
    assert T.paraphrase("a mass is seen", random.Random(1), prob=0.0) == "a mass is seen"


def test_augment_is_seeded():
    sentences = T.clean_sentences(T.extract_sections(REPORT)["FINDINGS"])
    first = T.augment_sentences(sentences, 7)
    assert first == T.augment_sentences(sentences, 7)
    assert first != sentences
    with pytest.raises(TypeError, match="shufle"):
        T.TextAugmentConfig.from_dict({"shufle": True})


def test_every_vindr_finding_has_positive_and_negative_templates():
    assert len(T.FINDING_NAMES) == 11
    for name in T.FINDING_NAMES:
        templates = T.FINDING_TEMPLATES[name]
        assert templates["positive"] and templates["negative"], name
        for polarity in ("positive", "negative"):
            for template in templates[polarity]:
                for side in ("right", "left"):
                    sentence = template.format(side=side, where="")
                    assert side in sentence and sentence == sentence.lower() and "  " not in sentence


def test_label_to_text_deterministic_is_stable_and_random_varies_with_seed():
    labels = {"pos_right": ["Mass", "Suspicious_Calcification"], "neg_right": ["Architectural Distortion"]}
    fixed = T.labels_to_text(labels, deterministic=True)
    assert fixed == ("a mass is seen in the right breast suspicious calcifications are seen in the right breast "
                     "no architectural distortion is seen in the right breast")
    assert T.labels_to_text(labels, deterministic=True, rng=123) == fixed
    draws = {T.labels_to_text(labels, deterministic=False, rng=seed) for seed in range(10)}
    assert len(draws) > 5
    assert T.labels_to_text(labels, deterministic=False, rng=4) == T.labels_to_text(labels, deterministic=False, rng=4)
    # the flat form used by the datasets, with a numpy generator
    flat = T.labels_to_text(["Mass"], "L", deterministic=False, rng=np.random.default_rng(0))
    assert "left" in flat and "right" not in flat


def test_no_finding_clears_negatives_and_positions_are_used():
    assert T.labels_to_text({"pos_left": ["No Finding"], "neg_left": ["Mass"]}) == "no significant finding in the left breast"
    text = T.labels_to_text({"pos_right": ["Mass"]}, positions={"Mass": "upper outer quadrant"})
    assert text == "a mass is seen in the upper outer quadrant in the right breast"
    with pytest.raises(ValueError, match="unknown finding 'Tumour'"):
        T.labels_to_text({"pos_right": ["Tumour"]})
    with pytest.raises(ValueError, match="unknown label slot"):
        T.labels_to_text({"positive": ["Mass"]})


def test_breast_findings_slots():
    slots = T.breast_findings(["Mass"], "R")
    assert slots["pos_right"] == ["Mass"] and slots["pos_left"] == [] and slots["neg_left"] == []
    assert len(slots["neg_right"]) == 9 and "No Finding" not in slots["neg_right"]
    assert T.breast_findings([], "L")["pos_left"] == ["No Finding"]


def test_prompt_sets():
    assert T.PAPER_PROMPTS["mass"] == (["no mass"], ["mass"])
    assert T.PAPER_PROMPTS["suspicious_calcification"] == (["no suspicious calcification"], ["suspicious calcification"])
    assert T.PAPER_PROMPTS["malignancy"] == (["no malignancy"], ["malignancy"])
    for task in ("mass", "suspicious_calcification", "malignancy"):
        names, prompts = T.prompt_classes(T.PROMPTS, task)
        assert names == ["negative", "positive"] and all(len(p) >= 3 for p in prompts)
        assert not set(prompts[0]) & set(prompts[1])
    names, prompts = T.prompt_classes(T.PROMPTS, "density")
    assert names == ["A", "B", "C", "D"] and all(len(p) >= 3 for p in prompts)
    for phrases in prompts:  # prompts are already in the cleaned form the text encoder is trained on
        assert all(" ".join(T.wordpunct_tokenize(p.lower())) == p for p in phrases)
    with pytest.raises(KeyError, match="birads"):
        T.prompt_classes(T.PROMPTS, "birads")


def test_back_translator_needs_local_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local MarianMT model folder"):
        T.BackTranslator(tmp_path / "en-it", tmp_path / "it-en")
