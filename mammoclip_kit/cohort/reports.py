"""A small screening-report grammar for the synthetic cohort (our own wording, BI-RADS 5th-edition lexicon).

One report per exam covers both breasts. Sections: HISTORY, FINDINGS, IMPRESSION, ASSESMENT, RECOMENDATION and
CONCLUSION (the column spellings of the paper's raw image-report table). Rules that downstream code relies on:

- every sentence about a finding names its breast ("left" / "right"); statements about both breasts say "both
  breasts" or "bilateral(ly)", so a per-breast text can be selected sentence by sentence;
- sentences that describe a present finding never contain a negation word (no / not / without / negative); absent
  findings are stated with one;
- each fact has several phrasings, and optional statements (comparison, skin, axillae, negations) come and go, so normal
  reports are not one identical string;
- the report is generated from the truth (placed lesions), so it is consistent with the images by construction.
"""

from __future__ import annotations

import numpy as np

from mammoclip_kit.cohort.lesions import Lesion

BIRADS_NAMES = {0: "Incomplete", 1: "Negative", 2: "Benign", 3: "Probably benign", 4: "Suspicious",
                5: "Highly suggestive of malignancy"}
SIDE = {"L": "left", "R": "right"}
SUSPICIOUS_CALC_WORDS = ("amorphous", "coarse heterogeneous", "fine pleomorphic", "fine linear")
BENIGN_CALC_WORDS = ("benign", "vascular", "rim", "round")
NEGATION_WORDS = ("no", "not", "without", "negative")

_DENSITY = {
    "A": ["Both breasts are almost entirely fatty.",
          "The breast tissue is almost entirely fatty bilaterally (ACR category A).",
          "Breast composition: both breasts are predominantly fatty."],
    "B": ["There are scattered areas of fibroglandular density in both breasts.",
          "Both breasts show scattered fibroglandular densities (ACR category B).",
          "Breast composition: scattered fibroglandular tissue bilaterally."],
    "C": ["Both breasts are heterogeneously dense, which may obscure small masses.",
          "The breast tissue is heterogeneously dense bilaterally (ACR category C), which can hide small lesions.",
          "Breast composition: heterogeneously dense tissue in both breasts."],
    "D": ["Both breasts are extremely dense, which lowers the sensitivity of mammography.",
          "The breast tissue is extremely dense bilaterally (ACR category D).",
          "Breast composition: extremely dense tissue in both breasts, limiting sensitivity."],
}
_TECHNIQUE = ["Bilateral craniocaudal and mediolateral oblique views were obtained.",
              "Standard CC and MLO views of both breasts were acquired.",
              "Digital screening mammography, four standard views of both breasts.",
              "Routine bilateral two-view digital mammogram."]
_COMPARISON = ["Comparison is made with the prior examination from {year}.",
               "Compared with the study of {year}, the appearance is stable apart from the findings below.",
               "There are no prior studies available for comparison.",
               "Prior mammograms from {year} were reviewed."]
_HISTORY = ["{age}-year-old woman presenting for screening mammography.",
            "Screening examination. Patient is {age} years old and asymptomatic.",
            "{age} year old female, routine annual screening.",
            "Annual screening, age {age}. No current breast complaints."]
_HISTORY_EXTRA = ["Family history of breast cancer in a first-degree relative.",
                  "Prior benign biopsy of the {side} breast.", "On hormone replacement therapy.",
                  "Patient reports no new lumps.", "History of benign cysts.", ""]
_BILATERAL_NEGATIVE = [
    "There is no suspicious mass, calcification or architectural distortion in both breasts.",
    "No dominant mass, suspicious calcifications or architectural distortion are seen bilaterally.",
    "Both breasts show no suspicious mass, microcalcification or distortion.",
    "No mammographic features of malignancy are identified in both breasts.",
]
_NEG = {
    "Mass": ["No suspicious mass is seen in the {side} breast.", "The {side} breast shows no dominant mass.",
             "There is no mass in the {side} breast."],
    "Suspicious Calcification": ["There are no suspicious calcifications in the {side} breast.",
                                 "No suspicious microcalcifications are seen in the {side} breast.",
                                 "The {side} breast has no suspicious calcifications."],
    "Architectural Distortion": ["No architectural distortion is seen in the {side} breast.",
                                 "There is no distortion of the {side} breast architecture."],
}
_EXTRAS = ["The skin and nipples are unremarkable bilaterally.",
           "No skin thickening or nipple retraction in both breasts.",
           "No enlarged axillary lymph nodes are seen bilaterally.",
           "Both axillae are unremarkable.", ""]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _where(rng: np.random.Generator, lesion: Lesion, side: str) -> str:
    """A location phrase naming the breast: clock face, quadrant or region, with depth or nipple distance."""
    quadrant = "the retroareolar region" if lesion.quadrant == "retroareolar" else f"the {lesion.quadrant} quadrant"
    options = [
        f"the {side} breast at {lesion.clock} o'clock, {lesion.depth} depth",
        f"{quadrant} of the {side} breast, {lesion.nipple_cm} cm from the nipple",
        f"the {side} breast, {lesion.clock} o'clock position, {lesion.nipple_cm} cm from the nipple",
        f"{quadrant} of the {side} breast, {lesion.depth} third",
    ]
    return _pick(rng, options)


def finding_sentence(rng: np.random.Generator, lesion: Lesion, laterality: str) -> str:
    """One FINDINGS sentence describing ``lesion`` in the breast ``laterality`` (never contains a negation)."""
    side = SIDE[laterality]
    where = _where(rng, lesion, side)
    size = int(round(lesion.size_mm))
    if lesion.finding == "Mass":
        margin = {"obscured": "partially obscured"}.get(lesion.margin, lesion.margin)
        article = "an" if lesion.shape[0] in "aeiou" else "a"
        options = [f"There is {article} {lesion.shape} mass with {margin} margins in {where}, measuring {size} mm.",
                   f"In {where} there is a {size} mm {lesion.shape} mass with {margin} margins.",
                   f"A {lesion.shape} {margin} mass of {size} mm is seen in {where}.",
                   f"{side.capitalize()} breast: {lesion.shape} mass, {margin} margins, {size} mm, at "
                   f"{lesion.clock} o'clock."]
        return _pick(rng, options)
    if lesion.finding == "Suspicious Calcification":
        morph, dist = lesion.shape, lesion.margin
        group = "a cluster of" if dist == "grouped" else f"{dist}ly distributed"
        options = [f"There are {morph} calcifications in a {dist} distribution in {where}, spanning {size} mm.",
                   f"{group.capitalize()} {morph} microcalcifications over {size} mm in {where}.",
                   f"{side.capitalize()} breast, {lesion.quadrant} region: {dist} {morph} calcifications "
                   f"extending {size} mm.",
                   f"In {where}, {morph} calcifications are present in a {dist} pattern, {size} mm in extent."]
        return _pick(rng, options)
    if lesion.finding == "Architectural Distortion":
        options = [f"Architectural distortion is seen in {where}.",
                   f"There is an area of architectural distortion with radiating spicules in {where}.",
                   f"{side.capitalize()} breast: focal architectural distortion at {lesion.clock} o'clock, "
                   f"{lesion.nipple_cm} cm from the nipple.",
                   f"Radiating lines converging to a point, consistent with architectural distortion, in {where}."]
        return _pick(rng, options)
    if lesion.finding == "Focal Asymmetry":
        options = [f"A focal asymmetry is present in {where}, seen on the CC and MLO views.",
                   f"There is a focal asymmetry in {where}, measuring about {size} mm.",
                   f"{side.capitalize()} breast: focal asymmetry at {lesion.clock} o'clock, {lesion.depth} depth.",
                   f"An area of focal asymmetric density is seen in {where}."]
        return _pick(rng, options)
    if lesion.finding == "Intramammary Lymph Node":
        options = [f"An intramammary lymph node is noted in {where}.",
                   f"A {size} mm benign-appearing intramammary lymph node with a fatty hilum is seen in {where}.",
                   f"{side.capitalize()} breast: typical intramammary lymph node, {lesion.quadrant} quadrant."]
        return _pick(rng, options)
    if lesion.finding == "Benign Calcification":
        if lesion.shape == "vascular":
            options = [f"Vascular calcifications are seen in the {side} breast.",
                       f"Benign vascular calcifications are present in {where}.",
                       f"Tram-track vascular calcifications in the {side} breast."]
        else:
            options = [f"Scattered benign round calcifications are seen in the {side} breast.",
                       f"Benign-appearing rim calcifications are present in {where}.",
                       f"A few coarse round benign calcifications in the {side} breast."]
        return _pick(rng, options)
    raise ValueError(f"no grammar for finding {lesion.finding!r}")


def _impression_sentence(rng: np.random.Generator, lesion: Lesion, laterality: str) -> str:
    side = SIDE[laterality]
    what = {"Mass": f"{lesion.shape} {lesion.margin} mass", "Focal Asymmetry": "focal asymmetry",
            "Architectural Distortion": "architectural distortion",
            "Suspicious Calcification": f"{lesion.shape} calcifications"}[lesion.finding]
    verdict = {3: "probably benign", 4: "suspicious", 5: "highly suggestive of malignancy"}[lesion.birads]
    options = [f"{side.capitalize()} breast {what} at {lesion.clock} o'clock, {verdict} (BI-RADS {lesion.birads}).",
               f"{what.capitalize()} in the {side} breast: {verdict}.",
               f"The {what} of the {side} breast is {verdict}."]
    return _pick(rng, options)


def generate_report(rng: np.random.Generator, age: int, density: str, lesions: dict[str, list[Lesion]],
                    year: int) -> dict[str, object]:
    """The report of one exam: section texts, exam BI-RADS (0–5 numeric and as text) and the per-breast category."""
    history = _pick(rng, _HISTORY).format(age=age)
    extra = _pick(rng, _HISTORY_EXTRA).format(side=SIDE[str(rng.choice(["L", "R"]))])
    history = f"{history} {extra}".strip()

    sentences = [_pick(rng, _TECHNIQUE)]
    if rng.random() < 0.7:
        sentences.append(_pick(rng, _COMPARISON).format(year=year - int(rng.integers(1, 4))))
    sentences.append(_pick(rng, _DENSITY[density]))
    findings_by_side: dict[str, list[str]] = {}
    for lat in ("R", "L"):
        findings_by_side[lat] = [finding_sentence(rng, lesion, lat) for lesion in lesions.get(lat, [])]
    any_suspicious = any(lesion.vindr for lat in lesions for lesion in lesions[lat])
    order = ["R", "L"] if rng.random() < 0.5 else ["L", "R"]
    for lat in order:
        sentences.extend(findings_by_side[lat])
    if not any_suspicious:
        sentences.append(_pick(rng, _BILATERAL_NEGATIVE))
    else:
        for lat in order:
            present = {lesion.finding for lesion in lesions.get(lat, [])}
            for finding, options in _NEG.items():
                if finding not in present and rng.random() < 0.6:
                    sentences.append(_pick(rng, options).format(side=SIDE[lat]))
    extra = _pick(rng, _EXTRAS)
    if extra:
        sentences.append(extra)

    per_side = {lat: max([lesion.birads for lesion in lesions.get(lat, [])], default=1) for lat in ("L", "R")}
    category = max(per_side.values())
    impression: list[str] = []
    suspicious = [(lat, lesion) for lat in order for lesion in lesions.get(lat, []) if lesion.vindr]
    if suspicious:
        impression.extend(_impression_sentence(rng, lesion, lat) for lat, lesion in suspicious)
        clean = [lat for lat in ("R", "L") if not any(lesion.vindr for lesion in lesions.get(lat, []))]
        for lat in clean:
            impression.append(f"No mammographic evidence of malignancy in the {SIDE[lat]} breast.")
    elif category == 2:
        impression.append(_pick(rng, ["Benign findings in both breasts.", "Benign mammographic findings bilaterally.",
                                      "Bilateral benign findings as described, with no evidence of malignancy."]))
    else:
        impression.append(_pick(rng, ["Negative bilateral mammogram.", "No mammographic evidence of malignancy "
                                      "in both breasts.", "Normal screening mammogram of both breasts."]))
    impression.append(f"BI-RADS {category}: {BIRADS_NAMES[category]}.")
    recommendation = {
        1: "Routine screening mammography in one year.", 2: "Routine annual screening mammography.",
        3: "Short-interval follow-up mammogram in six months.",
        4: "Tissue sampling is recommended.", 5: "Biopsy is recommended; appropriate action should be taken.",
    }[category]
    return {
        "HISTORY": history, "FINDINGS": " ".join(sentences), "IMPRESSION": " ".join(impression),
        "ASSESMENT": f"BI-RADS {category}", "RECOMENDATION": recommendation,
        "CONCLUSION": BIRADS_NAMES[category] + ".", "BIRADS_CATEGORY": f"BIRADS {category}: {BIRADS_NAMES[category]}",
        "BIRADS_numeric": category, "per_side": per_side,
    }
