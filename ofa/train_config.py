"""The training config: one dataclass per YAML section (``configs/train/*.yaml``), read strictly."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ofa.atomic import file_sha256
from ofa.config import apply_overrides, check_int, config_from_dict, load_yaml
from ofa.progressive import Phase
from ofa.sampling import SAMPLERS, SCORERS

DEFAULT_RUN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "digits_guided.yaml"  # ofa run
MIN_IMAGE_SIZE = 8  # smallest training image side (data.image_size)
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
AUGMENTATIONS = ("auto", "resized_crop", "crop_flip")  # auto: each data set's own protocol
CALIBRATION_IMAGES = 2000  # BN calibration images by default (once-for-all's setting)
DIGITS_CALIBRATION_IMAGES = 512  # the embedded digits' training split is small (1,257 images)
SEED_LIMIT = 2**32  # seeds lie in [0, SEED_LIMIT): every generator (torch, numpy, random) takes them

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DEFAULT_RUN_CONFIG",
    "CalibrationSection",
    "DataConfig",
    "GuideSection",
    "KdSection",
    "ModelSection",
    "OptimSection",
    "ProgressiveSection",
    "SamplerSection",
    "TrainConfig",
    "check_int",
    "load_train_config",
]


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where, at what size and how it is batched (the ``data`` section; see ``ofa.data``).

    ``root`` is required for cifar10, cifar100 and imagefolder and ignored for the embedded digits.
    ``image_size`` null: training produces the images at the space's largest resolution.
    """

    name: str = "digits"
    root: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    workers: int = 0
    download: bool = False
    augment: str = "auto"  # imagefolder: auto (= resized_crop) | resized_crop | crop_flip (small images)
    test_fraction: float = 0.0  # imagefolder without root/test: part of val held out as test

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(f"data.name: unknown data set {self.name!r}; allowed: {', '.join(DATASETS)}")
        size = self.image_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE):
            raise ValueError(
                f"data.image_size must be an integer >= {MIN_IMAGE_SIZE} (or null: the space's largest resolution), "
                f"got {size!r}"
            )
        check_int(self.batch_size, "data.batch_size", 1)
        check_int(self.eval_batch_size, "data.eval_batch_size", 1)
        check_int(self.workers, "data.workers", 0)
        if not isinstance(self.download, bool):
            raise ValueError(f"data.download must be true or false, got {self.download!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"data.augment: {self.augment!r} is not one of {', '.join(AUGMENTATIONS)}")
        if self.augment != "auto" and self.name != "imagefolder":
            raise ValueError(f"data.augment: {self.augment!r} applies to imagefolder only; {self.name} uses 'auto'")
        if isinstance(self.test_fraction, bool) or not (
            isinstance(self.test_fraction, (int, float)) and 0.0 <= self.test_fraction < 1.0
        ):
            raise ValueError(f"data.test_fraction must be a number in [0, 1), got {self.test_fraction!r}")
        if self.test_fraction and self.name != "imagefolder":
            raise ValueError(f"data.test_fraction applies to imagefolder without a test folder, not to {self.name}")
        if self.name != "digits" and not self.root:
            raise ValueError(f"data.root is required for data set {self.name!r} (a local folder), got {self.root!r}")


@dataclass(frozen=True)
class ModelSection:
    """The supernet."""

    space: str = "tiny"
    dropout: float = 0.1  # before the classifier, largest subnet only (paper spaces: 0.2)
    drop_path: float = 0.0  # drop-path on the largest subnet's residual branches (paper spaces: 0.2)
    zero_init_last_bn: bool = True

    def __post_init__(self) -> None:
        for name in ("dropout", "drop_path"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")


FLOAT_FIELDS = (
    "lr",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "min_lr",
    "label_smoothing",
    "grad_clip_value",
    "distill_label_weight",
)
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain folder name: no separators, no . or ..


@dataclass(frozen=True)
class OptimSection:
    """SGD with nesterov momentum, linear warm-up then cosine decay per step."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5  # not applied to BN and biases
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    grad_clip_value: float = 1.0  # 0 disables clipping
    distill_label_weight: float = 0.0  # distilled subnets: weight of the label loss beside the teacher's (0: pure KD)

    def __post_init__(self) -> None:
        for name in FLOAT_FIELDS:
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.distill_label_weight <= 1.0:
            raise ValueError(f"distill_label_weight must be in [0, 1], got {self.distill_label_weight}")
        for name in ("momentum", "warmup_epochs", "grad_clip_value", "weight_decay", "min_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0, got momentum 0; set nesterov: false or a momentum")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr ({self.lr}), got {self.min_lr}")


KD_LOSSES = ("kl", "alpha")


@dataclass(frozen=True)
class KdSection:
    """The distilled subnets' loss against the largest subnet: ``kl`` or AlphaNet's adaptive ``alpha``-divergence
    (per sample the larger of D at ``alpha_min`` and ``alpha_max``, importance weights clipped at ``iw_clip``)."""

    loss: str = "kl"
    alpha_min: float = -1.0
    alpha_max: float = 1.0
    iw_clip: float = 5.0

    def __post_init__(self) -> None:
        if self.loss not in KD_LOSSES:
            raise ValueError(f"kd.loss: {self.loss!r} is not one of {', '.join(KD_LOSSES)}")
        for name in ("alpha_min", "alpha_max", "iw_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"kd.{name} must be a finite number, got {value!r}")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"kd.alpha_min ({self.alpha_min}) must be <= kd.alpha_max ({self.alpha_max})")
        if self.iw_clip <= 0:
            raise ValueError(f"kd.iw_clip must be > 0, got {self.iw_clip}")


@dataclass(frozen=True)
class SamplerSection:
    """Which subnets a sandwich step trains: max, ``num_subnets - 2`` sampled, min."""

    name: str = "bestup"  # uniform | flops | bestup | worstup
    num_subnets: int = 4  # n >= 2
    num_candidates: int = 3  # k >= 1, for bestup / worstup
    scorer: str = "loss"  # loss | predictor
    predictor: str | None = None  # fitted predictor file for scorer=predictor (else the guide's own)
    flops_bin_mmacs: float | None = None  # FLOPs-target bin width; None: 25 on paper spaces, range / 70 on small
    flops_samples: int = 20000
    max_tries: int = 200

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name: {self.name!r} is not one of {', '.join(SAMPLERS)}")
        if self.scorer not in SCORERS:
            raise ValueError(f"sampler.scorer: {self.scorer!r} is not one of {', '.join(SCORERS)}")
        if self.num_subnets < 2:
            raise ValueError(f"sampler.num_subnets (n) must be >= 2 (max and min), got {self.num_subnets}")
        if self.num_candidates < 1:
            raise ValueError(f"sampler.num_candidates (k) must be >= 1, got {self.num_candidates}")
        for name in ("flops_samples", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"sampler.{name} must be >= 1, got {getattr(self, name)}")
        width = self.flops_bin_mmacs
        if width is not None and not (math.isfinite(width) and width > 0):
            raise ValueError(f"sampler.flops_bin_mmacs must be a positive number of MMACs (or null: auto), got {width}")


@dataclass(frozen=True)
class GuideSection:
    """Predictor-guided training: uniform warm-up, then the predictor scores BestUp/WorstUp candidates."""

    enabled: bool = False
    warmup_epochs: int = 2  # uniform sandwich epochs before the first fit
    num_archs: int = 64  # archs evaluated in the supernet per fit
    refit_every: int = 2  # epochs between refits (0: never refit)
    model: str = "lightgbm"
    calibration_batches: int | None = None  # BN calibration batches per guide measurement (None: the run's all)
    val_images: int | None = None  # a fixed subset of val the guide measures on (None: the whole split)

    def __post_init__(self) -> None:
        for name in ("warmup_epochs", "refit_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"guide.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("calibration_batches", "val_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"guide.{name} must be >= 1 (or null: all), got {value}")
        if self.num_archs < 8:
            raise ValueError(f"guide.num_archs must be >= 8 to fit a predictor, got {self.num_archs}")


@dataclass(frozen=True)
class CalibrationSection:
    """BN recalibration batches: a cached, seeded set of training images.

    ``num_batches`` unset: ``num_images // batch_size`` batches (once-for-all calibrates on 2,000 training
    images), or 512 images on the embedded digits, whose training split holds 1,257. ``augment``: the
    images are augmented as in training (seeded), the distribution the BN layers saw while the weights
    were trained, as once-for-all's calibration loader does; measured on the CIFAR-10 dev supernet, 8 archs:
    +1.0 point val accuracy on average (+0.05 to +2.2, never lower) over un-augmented images.
    """

    num_batches: int | None = None
    batch_size: int = 200
    seed: int = 0
    augment: bool = True  # calibrate on the images as training augments them (false: as evaluation sees them)

    def __post_init__(self) -> None:
        if self.num_batches is not None and self.num_batches < 1:
            raise ValueError(f"calibration.num_batches must be >= 1, got {self.num_batches}")
        if self.batch_size < 1:
            raise ValueError(f"calibration.batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"calibration.seed must be an integer in [0, 2**32), got {self.seed}")

    def batches_for(self, data_name: str) -> int:
        """How many calibration batches of ``batch_size`` a run on data set ``data_name`` uses."""
        if self.num_batches is not None:
            return self.num_batches
        images = DIGITS_CALIBRATION_IMAGES if data_name == "digits" else CALIBRATION_IMAGES
        return max(1, -(-images // self.batch_size))


@dataclass(frozen=True)
class ProgressiveSection:
    """Progressive shrinking (:mod:`ofa.progressive`) instead of the sandwich rule: phases of uniformly sampled
    subnets distilled from the frozen full network of the first phase. ``phases`` null: once-for-all's
    schedule for the dimensions the space makes elastic. The ``sampler`` section and ``optim.warmup_epochs`` are not
    used (each phase has its own warm-up); ``optim.lr`` is the full-network phase's rate."""

    enabled: bool = False
    phases: tuple[Phase, ...] | None = None
    kd_ratio: float = 1.0  # loss = labels + kd_ratio x distillation from the teacher (once-for-all's 1.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.kd_ratio) and self.kd_ratio >= 0):
            raise ValueError(f"progressive.kd_ratio must be a finite number >= 0, got {self.kd_ratio}")
        if self.phases is not None and not self.phases:
            raise ValueError("progressive.phases must list at least one phase (or be null: once-for-all's)")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    epochs: int = 10
    out_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0 keeps torch's default
    max_steps_per_epoch: int | None = None  # cap steps per epoch (quick runs, tests)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    kd: KdSection = field(default_factory=KdSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    guide: GuideSection = field(default_factory=GuideSection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    progressive: ProgressiveSection = field(default_factory=ProgressiveSection)

    def __post_init__(self) -> None:
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0: torch's default), got {self.cpu_threads}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.progressive.enabled and self.guide.enabled:
            raise ValueError("progressive.enabled samples subnets uniformly per phase: set guide.enabled to false")
        if not RUN_NAME.fullmatch(self.name):
            raise ValueError(
                f"name must be a plain folder name (letters, digits, _ . -; not starting with . -), got {self.name!r}"
            )

    @property
    def run_dir(self) -> Path:
        """``out_dir / name``."""
        return Path(self.out_dir) / self.name

    def measurement_source(self, checkpoint: Path | None) -> dict[str, object]:
        """What a measurement in this run depends on besides the arch and the calibration seed: the weights
        (digest of the ``checkpoint`` file, empty without one) and how BN is calibrated. Arch CSVs record it; a
        change means stale rows."""
        section = self.calibration
        return {
            "checkpoint_sha256": file_sha256(checkpoint) if checkpoint is not None else "",
            "calibration_batches": section.batches_for(self.data.name),
            "calibration_batch_size": section.batch_size,
            "calibration_augment": section.augment,
        }


def load_train_config(path: str | Path | None, overrides: tuple[str, ...] = ()) -> TrainConfig:
    """Read a training config (defaults when ``path`` is None) with dotted ``KEY=VALUE`` overrides."""
    data = load_yaml(path) if path is not None else {}
    return config_from_dict(TrainConfig, apply_overrides(data, overrides))
