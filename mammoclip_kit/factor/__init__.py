"""Mammo-FActOR: which channels of the image tower speak about a finding, and where they look (the paper's §2.3).

The authors released the attribute embeddings and the mapper training only; the heatmaps and their localisation
evaluation were never published, so the kit completes the method from the paper's description. One module per job:

========================  ==============================================================================================
``factor.data``           attributes, their report sentences and text embeddings; the images, labels and boxes
``factor.features``       the frozen tower's feature maps (the last or an earlier stage's; cached, eval mode), stitching
``factor.mapper``         :class:`FactorConfig`, the per-attribute :class:`AttributeMapper`, its loss and training
``factor.heatmaps``       FActOR heatmaps (per-image alignments or the channel contrast), the Grad-CAM baseline
``factor.localization``   heatmap → boxes in original pixels; mAP at IoU 0.25 / 0.5, pointing game, patient bootstrap
``factor.ceilings``       box oracle, channel hit rates, box-supervised weights; the table of methods and ceilings
``factor.figures``        :func:`show_heatmap` and :func:`heatmap_viewer` (ipywidgets, with a static fallback)
========================  ==============================================================================================

The steps: attribute embeddings (:func:`attribute_text_sets`, :func:`attribute_embeddings`) → cached feature maps
(:func:`feature_maps`) → one mapper trained with the contrastive loss on image-level labels (:func:`train_mapper`,
early stopping on held-out training patients) → channel alignment and heatmaps (:func:`channel_alignment`,
:func:`factor_heatmaps`) → boxes and metrics (:func:`evaluate_localization`) beside Grad-CAM
(:func:`gradcam_heatmaps`) and the ceilings (:func:`localisation_table`).

Departures from the authors' released code, on purpose: the two heads' outputs are kept apart per channel (that code
paired consecutive channels of one head, see :class:`AttributeMapper`); the tower runs once in eval mode and its maps
are cached (that code let a "frozen" encoder's BatchNorm statistics move); early stopping uses held-out training
patients (that code stopped on the test split).

Documented variants, each a profile setting chosen on validation images (notebook 09 re-measures the choice): the map
of an earlier stage (``stride``), channel weights from the contrast between training images with and without the
finding (``channel_weights: contrast``, :func:`channel_contrast`), and a band along the skin line left out of the
breast mask (``margin``), the number of channels (``top_k_choices``), the mapper's seed among ``restarts`` (the
best-channel loss settles on different channels from different starts), and what a mapper sees of a channel
(``descriptor: sorted``: its largest activations in decreasing order, where it peaks left out; see
:class:`AttributeMapper`). The paper's recipe stays the reference the
notebook reports beside them; :func:`peak_contrast` (image labels, no text) is the label-only reference.

Public names are re-exported here (``from mammoclip_kit import factor as FA``).
"""

from mammoclip_kit.factor.ceilings import (
    CEILING_METHODS,
    TABLE_COLUMNS,
    FeatureGrid,
    alignment_agreement,
    box_oracle_heatmaps,
    box_supervised_weights,
    ceiling_metrics,
    chance_pointing,
    channel_hit_rates,
    localisation_table,
)
from mammoclip_kit.factor.data import (
    ATTRIBUTES,
    SENTENCE_RULES,
    FactorData,
    attribute_embeddings,
    attribute_sentences,
    attribute_text_sets,
    boxes_for,
    factor_data,
    image_labels,
    stack_attributes,
)
from mammoclip_kit.factor.features import feature_maps, stitched_features, tap_for_stride, tower_map
from mammoclip_kit.factor.figures import heatmap_viewer, show_heatmap, widgets_available
from mammoclip_kit.factor.heatmaps import (
    channel_contrast,
    factor_heatmaps,
    gradcam_head,
    gradcam_heatmaps,
    peak_contrast,
)
from mammoclip_kit.factor.localization import (
    LocalizationBootstrap,
    LocalizationResult,
    evaluate_localization,
    heatmap_to_boxes,
    localization_bootstrap,
    localize,
    tissue_mask,
    upsample,
)
from mammoclip_kit.factor.mapper import (
    AttributeMapper,
    FactorConfig,
    MapperHistory,
    channel_alignment,
    factor_loss,
    train_mapper,
)

__all__ = [
    "ATTRIBUTES", "CEILING_METHODS", "SENTENCE_RULES", "TABLE_COLUMNS", "AttributeMapper", "FactorConfig",
    "FactorData", "FeatureGrid", "LocalizationBootstrap", "LocalizationResult", "MapperHistory",
    "alignment_agreement", "attribute_embeddings", "attribute_sentences", "attribute_text_sets",
    "box_oracle_heatmaps", "box_supervised_weights", "boxes_for", "ceiling_metrics", "chance_pointing",
    "channel_alignment", "channel_contrast", "channel_hit_rates", "evaluate_localization", "factor_data",
    "factor_heatmaps", "factor_loss", "feature_maps", "gradcam_head", "gradcam_heatmaps", "heatmap_to_boxes",
    "heatmap_viewer", "image_labels", "localisation_table", "localization_bootstrap", "localize", "peak_contrast",
    "show_heatmap", "stack_attributes", "stitched_features", "tap_for_stride", "tissue_mask", "tower_map", "train_mapper",
    "upsample", "widgets_available",
]
