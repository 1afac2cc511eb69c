"""Downstream evaluation of the image and text towers, one module per job.

* :mod:`.metrics` — AUC, breast-level aggregation, bootstrap CIs, density metrics, recall@k, VOC AP;
* :mod:`.zero_shot` — the paper's zero-shot evaluation and image–report retrieval (:class:`ZeroShotConfig`);
* :mod:`.encoders` — the registry of image encoders compared below (``register_encoder``, ``create_encoders``);
* :mod:`.tasks` — the downstream tasks: labels, splits, labelled subsets, task metrics;
* :mod:`.features` — frozen features and their cache; :mod:`.linear_probe`; :mod:`.finetune`;
* :mod:`.sweep` — the data-efficiency sweep (resumable CSV); :mod:`.probe` re-exports all of it for notebook 06;
* :mod:`.detection` — RetinaNet on the image tower; :mod:`.robustness` — shifts and group hold-outs.
"""
