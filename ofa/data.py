"""Datasets for supernet training and evaluation: the embedded digits, CIFAR-10/100 and image folders.

Every data set yields ``(image, label)``: a normalised float tensor (C, image_size, image_size) and an int.
Images are produced at one ``image_size`` (the space's largest resolution); the training and evaluation
steps resize each batch to the active subnet's resolution (once-for-all, Cai et al., ICLR 2020).

* ``digits`` (the embedded default): scikit-learn's ``load_digits`` — 1797 real 8x8 handwritten digits
  of 10 classes (UCI optical recognition of handwritten digits). A fixed stratified split of
  1257 / 270 / 270 images, pixels scaled to [0, 1], resized (bilinear) once at load time, replicated
  to 3 channels, normalised with the mean/std of the train split. Train augmentation: random
  translation by up to ``image_size // 8`` pixels (one original digit pixel) with zero fill, which
  is a random crop of the zero-padded image.
* ``cifar10`` / ``cifar100`` (Krizhevsky, 2009): read from a local ``root`` (downloaded only with
  ``download=True``). A fixed stratified 5000-image validation split of the official train set; test is
  the official test set. Train augmentation: random crop 32 with padding 4 and horizontal flip.
* ``imagefolder``: ``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet's layout), optional
  ``root/test``. Without it there is no test split (``DataBundle.test`` is None and whatever reports test
  accuracy refuses the data) unless ``test_fraction`` holds out a fixed stratified part of val as test:
  val is never silently reused as test. Augmentation (``augment``): ``resized_crop`` (the ImageNet
  protocol, the default) trains on random resized crops (scale 0.08..1, ratio 3/4..4/3) and flips and
  evaluates on a resize to ``image_size / 0.875`` and a centre crop; ``crop_flip`` (the CIFAR protocol,
  for small images such as the CIFAR-10 development set) trains on random crops of the image zero-padded
  by ``image_size // 8`` and flips, and evaluates on the whole image (resized only if its size differs).

Splits never depend on the run's seed. Augmentation draws from an explicit ``torch.Generator`` per data
set, seeded with ``build_datasets``'s ``seed``; inside a DataLoader worker it is combined with the worker's seed,
which the loader's own seeded generator fixes (see ``build_loader``). The global RNG is never used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from ofa.train_config import AUGMENTATIONS, DATASETS, DataConfig, check_int

__all__ = [
    "AUGMENTATIONS",
    "CIFAR_VAL_SIZE",
    "DATASETS",
    "DEFAULT_IMAGE_SIZE",
    "DIGITS_SPLIT_SIZES",
    "DataBundle",
    "DataConfig",
    "ImageTransform",
    "PilTensorTransform",
    "ResizedCropTransform",
    "SplitDataset",
    "TensorTransform",
    "build_datasets",
    "build_loader",
    "calibration_batches",
    "calibration_images",
    "random_resized_box",
    "random_translate",
]

DEFAULT_IMAGE_SIZE = 32  # a DataConfig without image_size (training uses the space's largest resolution)
SPLIT_SEED = 0  # every split is fixed by this seed, never by the run's seed
DIGITS_SPLIT_SIZES = (1257, 270, 270)  # train / val / test of the 1797 digits (70 / 15 / 15 %)
CIFAR_VAL_SIZE = 5000  # images held out of the official CIFAR train set for validation
CIFAR_PADDING = 4
EVAL_CROP_FRACTION = 0.875  # eval: resize to image_size / 0.875, then centre crop image_size

# per-channel statistics of the train sets, pixels in [0, 1]
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------
# config and result


@dataclass
class DataBundle:
    """The three splits of one data set and what a model and an export need to know about them."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset | None  # None: an image folder without a test split (see ``require_test``)
    num_classes: int
    input_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    missing_test_reason: str = ""  # why ``test`` is None

    def require_test(self) -> Dataset:
        """The test split; a ``ValueError`` saying how to get one when the data set has none."""
        if self.test is None:
            raise ValueError(self.missing_test_reason or f"data set {self.name!r} has no test split")
        return self.test


# ---------------------------------------------------------------------------------------------------
# seeded augmentation primitives


def random_translate(image: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """``image`` (C, H, W) shifted by up to ``max_shift`` pixels each way, zero-filled.

    The same as a random crop of the image zero-padded by ``max_shift``.
    """
    if max_shift == 0:
        return image
    shift_y, shift_x = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    height, width = image.shape[-2:]
    result = torch.zeros_like(image)
    result[..., max(shift_y, 0) : height + min(shift_y, 0), max(shift_x, 0) : width + min(shift_x, 0)] = image[
        ..., max(-shift_y, 0) : height + min(-shift_y, 0), max(-shift_x, 0) : width + min(-shift_x, 0)
    ]
    return result


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_resized_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, box_height, box_width)`` of a random crop of ``scale`` area and ``ratio`` aspect.

    At most 10 draws; if none fits, a central crop clamped to the allowed aspect ratios.
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _attempt in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        box_width = round(math.sqrt(target_area * aspect))
        box_height = round(math.sqrt(target_area / aspect))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = int(torch.randint(0, height - box_height + 1, (), generator=generator))
            left = int(torch.randint(0, width - box_width + 1, (), generator=generator))
            return top, left, box_height, box_width
    aspect = width / height
    if aspect < ratio[0]:
        box_width, box_height = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        box_width, box_height = round(height * ratio[1]), height
    else:
        box_width, box_height = width, height
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


ImageTransform = Callable[[Any, "torch.Generator | None"], torch.Tensor]
"""``transform(image, generator)``: random augmentation when ``generator`` is given, deterministic when None."""


class TensorTransform:
    """Image tensor (C, H, W; uint8, or float in [0, 1]) -> normalised float (channels, size, size).

    With a generator: random translation by up to ``max_shift`` pixels (at the stored size), then a
    horizontal flip with probability 1/2 if ``flip``. Then a bilinear resize to ``size`` if the image has
    another size, single-channel images replicated to ``len(mean)`` channels, and normalisation.
    """

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], max_shift: int = 0, flip: bool = False
    ) -> None:
        self.size = size
        self.max_shift = max_shift
        self.flip = flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        image = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        if generator is not None:
            image = random_translate(image, self.max_shift, generator)
            if self.flip and float(torch.rand((), generator=generator)) < 0.5:
                image = image.flip(-1)
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(
                image[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )[0]
        if image.shape[0] == 1 and self.mean.shape[0] > 1:
            image = image.expand(self.mean.shape[0], -1, -1)
        return (image - self.mean) / self.std


class ResizedCropTransform:
    """PIL image -> normalised float (3, size, size), the ImageNet protocol.

    With a generator: random resized crop (``scale`` of the area, aspect 3/4..4/3) to ``size`` and a
    horizontal flip with probability 1/2. Without: resize the short side to ``int(size / 0.875)`` and
    centre crop ``size``.
    """

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], scale: tuple[float, float] = (0.08, 1.0)
    ) -> None:
        self.size = size
        self.mean = list(mean)
        self.std = list(std)
        self.scale = scale
        self.ratio = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            image = TF.center_crop(TF.resize(image, int(self.size / EVAL_CROP_FRACTION)), [self.size, self.size])
        else:
            top, left, height, width = random_resized_box(image.height, image.width, self.scale, self.ratio, generator)
            image = TF.resized_crop(image, top, left, height, width, [self.size, self.size])
            if float(torch.rand((), generator=generator)) < 0.5:
                image = TF.hflip(image)
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)


class PilTensorTransform:
    """PIL image -> uint8 tensor -> :class:`TensorTransform` (the CIFAR protocol for image folders)."""

    def __init__(self, tensor_transform: TensorTransform) -> None:
        self.tensor_transform = tensor_transform

    def __call__(self, image: Image.Image, generator: torch.Generator | None) -> torch.Tensor:
        return self.tensor_transform(TF.pil_to_tensor(image.convert("RGB")), generator)


# ---------------------------------------------------------------------------------------------------
# one split of a data set


class SplitDataset(Dataset):
    """Items ``base[indices[i]]`` passed through ``transform``; randomly augmented when ``augment``.

    The augmentation generator is seeded with ``seed`` in the main process; in a DataLoader worker with
    ``seed`` combined with the worker's seed (different per worker and per epoch, fixed by the loader's
    generator). ``labels`` are the split's labels in order, known without loading an image.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int],
        labels: Sequence[int],
        transform: ImageTransform,
        augment: bool,
        seed: int = 0,
    ) -> None:
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.base = base
        self.indices = tuple(int(index) for index in indices)
        self.labels = tuple(int(label) for label in labels)
        self.transform = transform
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._generators: dict[int, torch.Generator] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.item(index, self._generator() if self.augment else None)

    def item(self, index: int, generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
        """Item ``index`` augmented with ``generator`` (None: the deterministic evaluation view)."""
        image, label = self.base[self.indices[index]]
        return self.transform(image, generator), int(label)

    def without_augmentation(self) -> SplitDataset:
        """The same split seen as evaluation sees it (deterministic)."""
        return SplitDataset(self.base, self.indices, self.labels, self.transform, augment=False, seed=self.seed)

    def set_epoch(self, epoch: int) -> None:
        """Restart the augmentation stream for ``epoch``, so a resumed run augments exactly as a straight one."""
        self.epoch = epoch
        self._generators = {}

    def _generator(self) -> torch.Generator:
        worker = get_worker_info()
        key = -1 if worker is None else worker.id
        if key not in self._generators:
            base = self.seed * 1_000_003 + self.epoch
            seed = base if worker is None else (worker.seed * 1_000_003 + base) % 2**63
            self._generators[key] = torch.Generator().manual_seed(seed)
        return self._generators[key]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_generators"] = {}
        return state


def _split(
    base: Dataset,
    indices: Sequence[int],
    all_labels: Sequence[int],
    transform: ImageTransform,
    augment: bool,
    seed: int,
) -> SplitDataset:
    return SplitDataset(base, indices, [all_labels[index] for index in indices], transform, augment, seed)


def _stratified(labels: Sequence[int], held_out: int) -> tuple[list[int], list[int]]:
    """Indices (kept, held out) of a fixed stratified split, each sorted."""
    kept, out = train_test_split(
        np.arange(len(labels)), test_size=held_out, stratify=np.asarray(labels), random_state=SPLIT_SEED
    )
    return sorted(kept.tolist()), sorted(out.tolist())


# ---------------------------------------------------------------------------------------------------
# the three families


def _digits(config: DataConfig, seed: int) -> DataBundle:
    digits = load_digits()
    labels = digits.target.tolist()
    pixels = torch.from_numpy(digits.images).float().div(16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    images = F.interpolate(pixels, size=(config.image_size,) * 2, mode="bilinear", align_corners=False)
    _, val_size, test_size = DIGITS_SPLIT_SIZES
    rest, test_indices = _stratified(labels, test_size)
    train_in_rest, val_in_rest = _stratified([labels[index] for index in rest], val_size)
    train_indices = [rest[index] for index in train_in_rest]
    val_indices = [rest[index] for index in val_in_rest]
    train_images = images[train_indices]
    mean, std = (float(train_images.mean()),) * 3, (float(train_images.std()),) * 3
    base = TensorDataset(images, torch.tensor(labels))
    max_shift = config.image_size // 8  # one pixel of the original 8x8 digit
    train_transform = TensorTransform(config.image_size, mean, std, max_shift=max_shift)
    eval_transform = TensorTransform(config.image_size, mean, std)
    return DataBundle(
        name="digits",
        train=_split(base, train_indices, labels, train_transform, True, seed),
        val=_split(base, val_indices, labels, eval_transform, False, seed),
        test=_split(base, test_indices, labels, eval_transform, False, seed),
        num_classes=10,
        input_channels=3,
        image_size=config.image_size,
        mean=mean,
        std=std,
        classes=tuple(str(digit) for digit in range(10)),
    )


def _cifar_bundle(
    config: DataConfig,
    train_images: np.ndarray,
    train_labels: Sequence[int],
    test_images: np.ndarray,
    test_labels: Sequence[int],
    classes: Sequence[str],
    seed: int = 0,
    val_size: int = CIFAR_VAL_SIZE,
) -> DataBundle:
    """CIFAR splits from uint8 (N, 32, 32, 3) arrays: a stratified ``val_size`` split of train, the test set."""
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    train_labels, test_labels = [int(label) for label in train_labels], [int(label) for label in test_labels]
    train_base = TensorDataset(torch.from_numpy(train_images).permute(0, 3, 1, 2), torch.tensor(train_labels))
    test_base = TensorDataset(torch.from_numpy(test_images).permute(0, 3, 1, 2), torch.tensor(test_labels))
    train_indices, val_indices = _stratified(train_labels, val_size)
    train_transform = TensorTransform(config.image_size, mean, std, max_shift=CIFAR_PADDING, flip=True)
    eval_transform = TensorTransform(config.image_size, mean, std)
    return DataBundle(
        name=config.name,
        train=_split(train_base, train_indices, train_labels, train_transform, True, seed),
        val=_split(train_base, val_indices, train_labels, eval_transform, False, seed),
        test=_split(test_base, range(len(test_labels)), test_labels, eval_transform, False, seed),
        num_classes=len(classes),
        input_channels=3,
        image_size=config.image_size,
        mean=mean,
        std=std,
        classes=tuple(classes),
    )


def _cifar(config: DataConfig, seed: int) -> DataBundle:
    dataset_class = CIFAR10 if config.name == "cifar10" else CIFAR100
    root = Path(str(config.root)).expanduser()
    how = (
        f"set data.download=true to download {config.name} into {root}, "
        f"or put the extracted '{dataset_class.base_folder}' folder there"
    )
    if not config.download and not root.is_dir():
        raise ValueError(f"{config.name}: data root {root} does not exist; {how}")
    try:
        train = dataset_class(str(root), train=True, download=config.download)
        test = dataset_class(str(root), train=False, download=config.download)
    except (RuntimeError, OSError) as error:
        raise ValueError(f"{config.name}: cannot read the data under {root} ({error}); {how}") from None
    return _cifar_bundle(config, train.data, train.targets, test.data, test.targets, train.classes, seed)


def _image_folder(path: Path) -> ImageFolder:
    if not path.is_dir():
        raise ValueError(f"imagefolder: {path} does not exist or is not a folder; expected {path}/<class>/<image>")
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as error:
        raise ValueError(f"imagefolder: no usable images in {path} ({error})") from None


def _check_same_classes(reference: Path, classes: Sequence[str], other: Path, other_classes: Sequence[str]) -> None:
    if list(classes) != list(other_classes):
        only_reference = sorted(set(classes) - set(other_classes))
        only_other = sorted(set(other_classes) - set(classes))
        raise ValueError(
            f"imagefolder: class folders differ between {reference} and {other}: "
            f"only in {reference.name}: {only_reference}, only in {other.name}: {only_other}"
        )


def _imagefolder_transform(config: DataConfig) -> ImageTransform:
    """The image folders' transform (it augments when given a generator)."""
    if config.augment == "crop_flip":
        size = config.image_size
        return PilTensorTransform(TensorTransform(size, IMAGENET_MEAN, IMAGENET_STD, max_shift=size // 8, flip=True))
    return ResizedCropTransform(config.image_size, IMAGENET_MEAN, IMAGENET_STD)


def _imagefolder(config: DataConfig, seed: int) -> DataBundle:
    root = Path(str(config.root)).expanduser()
    if not root.is_dir():
        raise ValueError(f"imagefolder: data root {root} does not exist; expected {root}/train/<class>/<image>")
    train = _image_folder(root / "train")
    val = _image_folder(root / "val")
    _check_same_classes(root / "train", train.classes, root / "val", val.classes)
    has_test = (root / "test").exists()
    if has_test and config.test_fraction:
        raise ValueError(
            f"imagefolder: {root / 'test'} exists, so data.test_fraction must be 0 (got {config.test_fraction})"
        )
    transform = _imagefolder_transform(config)

    def split(folder: ImageFolder, indices: Sequence[int], augment: bool) -> SplitDataset:
        return _split(folder, indices, folder.targets, transform, augment, seed)

    val_indices, test_split, reason = list(range(len(val))), None, ""
    if has_test:
        test = _image_folder(root / "test")
        _check_same_classes(root / "train", train.classes, root / "test", test.classes)
        test_split = split(test, range(len(test)), False)
    elif config.test_fraction:
        held_out = max(len(val.classes), round(config.test_fraction * len(val)))
        if held_out >= len(val):
            raise ValueError(
                f"imagefolder: data.test_fraction {config.test_fraction} leaves no validation images "
                f"of the {len(val)} in {root / 'val'}"
            )
        val_indices, test_indices = _stratified(val.targets, held_out)
        test_split = split(val, test_indices, False)
    else:
        reason = (
            f"imagefolder: {root} has no test/ folder, so there is no test accuracy to report; add "
            f"{root}/test/<class>/<image>, or set data.test_fraction (e.g. 0.5) to hold out part of val as test"
        )
    return DataBundle(
        name="imagefolder",
        train=split(train, range(len(train)), True),
        val=split(val, val_indices, False),
        test=test_split,
        num_classes=len(train.classes),
        input_channels=3,
        image_size=config.image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=tuple(train.classes),
        missing_test_reason=reason,
    )


_BUILDERS: dict[str, Callable[[DataConfig, int], DataBundle]] = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagefolder": _imagefolder,
}


def build_datasets(config: DataConfig, seed: int = 0) -> DataBundle:
    """The train / val / test splits of ``config.name`` at ``config.image_size`` (``DEFAULT_IMAGE_SIZE`` when
    unset); ``seed`` drives augmentation only. Missing data is a ``ValueError`` naming the path."""
    if config.name not in _BUILDERS:
        raise ValueError(f"data.name: unknown data set {config.name!r}; allowed: {', '.join(DATASETS)}")
    if config.image_size is None:
        config = dataclasses.replace(config, image_size=DEFAULT_IMAGE_SIZE)
    check_int(seed, "seed", 0)
    return _BUILDERS[config.name](config, seed)


# ---------------------------------------------------------------------------------------------------
# batching


def build_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, workers: int = 0, drop_last: bool = False
) -> DataLoader:
    """A DataLoader whose order and worker seeds come from a ``torch.Generator`` seeded with ``seed``.

    Two loaders built alike yield the same batches (augmentation included) epoch after epoch.
    """
    check_int(batch_size, "data.batch_size", 1)
    check_int(workers, "data.workers", 0)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last, generator=generator
    )


def calibration_batches(
    dataset: Dataset, num_batches: int, batch_size: int, seed: int, augment: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of ``num_batches`` (images, labels) batches of ``dataset`` for BN recalibration.

    Images are drawn without replacement in a seeded order (the order repeats if the data set holds fewer
    than ``num_batches * batch_size`` images). Same arguments -> identical tensors, so the caller builds
    the list once and keeps it (that list is the cache). A ``SplitDataset`` is seen without augmentation
    (as evaluation sees it) unless ``augment``, whose randomness is then drawn from the seeded generator;
    any other data set is read under a temporarily seeded global RNG, which is restored afterwards.
    """
    check_int(num_batches, "calibration.num_batches", 1)
    check_int(batch_size, "calibration.batch_size", 1)
    if len(dataset) == 0:
        raise ValueError("calibration batches need a non-empty data set")
    generator = torch.Generator().manual_seed(seed)
    total = num_batches * batch_size
    rounds = -(-total // len(dataset))
    order = torch.cat([torch.randperm(len(dataset), generator=generator) for _ in range(rounds)])[:total].tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(dataset, SplitDataset):
            items = [dataset.item(index, generator if augment else None) for index in order]
        else:
            items = [dataset[index] for index in order]
    batches = []
    for start in range(0, total, batch_size):
        chunk = items[start : start + batch_size]
        images = torch.stack([image for image, _ in chunk])
        labels = torch.tensor([int(label) for _, label in chunk], dtype=torch.long)
        batches.append((images, labels))
    return batches


def calibration_images(
    dataset: Dataset, num_batches: int, batch_size: int, seed: int, augment: bool = False
) -> list[torch.Tensor]:
    """The images of ``calibration_batches`` (what BN recalibration uses), without the labels."""
    return [images for images, _ in calibration_batches(dataset, num_batches, batch_size, seed, augment)]
