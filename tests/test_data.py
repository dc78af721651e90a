"""Data sets: the fixed digits split, seeded augmentation and loaders, image folders, missing-data errors."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ofa.data import (
    DATASETS,
    DIGITS_SPLIT_SIZES,
    DataConfig,
    SplitDataset,
    _cifar_bundle,
    build_datasets,
    build_loader,
    calibration_batches,
    random_resized_box,
    random_translate,
)
from tests.conftest import write_images

SIZE = 16


@pytest.fixture(scope="module")
def digits():
    return build_datasets(DataConfig(name="digits", image_size=SIZE), seed=0)


def _items(dataset, count: int = 12) -> torch.Tensor:
    return torch.stack([dataset[index][0] for index in range(count)])


# ---------------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_are_fixed_and_stratified(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == DIGITS_SPLIT_SIZES == (1257, 270, 270)
    assert digits.num_classes == 10 and digits.input_channels == 3 and digits.image_size == SIZE
    whole = Counter(digits.train.labels + digits.val.labels + digits.test.labels)
    assert sum(whole.values()) == 1797
    for split in (digits.train, digits.val, digits.test):
        counts = Counter(split.labels)
        assert set(counts) == set(range(10))
        for label, count in counts.items():  # stratified: each class keeps its share of the split
            assert abs(count / len(split) - whole[label] / 1797) < 0.01
    indices = [set(split.indices) for split in (digits.train, digits.val, digits.test)]
    assert not (indices[0] & indices[1]) and not (indices[0] & indices[2]) and not (indices[1] & indices[2])


def test_digits_split_is_identical_across_calls_and_seeds(digits):
    again = build_datasets(DataConfig(name="digits", image_size=SIZE), seed=7)
    for first, second in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        assert first.indices == second.indices and first.labels == second.labels
    assert torch.equal(_items(digits.val), _items(again.val))
    assert digits.mean == again.mean and digits.std == again.std


def test_digits_images_shape_and_train_normalisation(digits):
    image, label = digits.val[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    plain = digits.train.without_augmentation()
    images = torch.stack([plain[index][0] for index in range(len(plain))])
    assert abs(float(images.mean())) < 1e-3
    assert abs(float(images.std()) - 1.0) < 1e-2
    assert len(digits.mean) == len(digits.std) == 3 and 0.1 < digits.mean[0] < 0.6


def test_digits_resolution_is_set_at_load_time():
    bundle = build_datasets(DataConfig(name="digits", image_size=8))
    assert bundle.val[0][0].shape == (3, 8, 8)


def test_eval_splits_are_deterministic(digits):
    assert torch.equal(_items(digits.val), _items(digits.val))


def test_augmentation_is_reproducible_by_seed():
    def augmented(seed: int) -> torch.Tensor:
        return _items(build_datasets(DataConfig(name="digits", image_size=SIZE), seed=seed).train, 20)

    first = augmented(0)
    assert torch.equal(first, augmented(0))
    assert not torch.equal(first, augmented(1))


def test_augmentation_translates_only(digits):
    plain = _items(digits.train.without_augmentation(), 20)
    augmented = _items(digits.train, 20)
    assert not torch.equal(plain, augmented)
    background = float(digits.train.transform(torch.zeros(1, SIZE, SIZE), None)[0, 0, 0])
    matches = 0
    for plain_image, augmented_image in zip(plain, augmented):
        padded = torch.nn.functional.pad(plain_image, (2, 2, 2, 2), value=background)
        crops = [padded[:, top : top + SIZE, left : left + SIZE] for top in range(5) for left in range(5)]
        matches += any(torch.allclose(crop, augmented_image, atol=1e-5) for crop in crops)
    assert matches >= 20  # every augmented image is its original shifted by at most 2 pixels


def test_random_translate_is_a_padded_crop():
    image = torch.arange(16.0).view(1, 4, 4)
    generator = torch.Generator().manual_seed(3)
    shifted = random_translate(image, 1, generator)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1))
    crops = [padded[:, top : top + 4, left : left + 4] for top in range(3) for left in range(3)]
    assert any(torch.equal(shifted, crop) for crop in crops)
    assert torch.equal(random_translate(image, 0, generator), image)


def test_random_resized_box_stays_inside_the_image():
    generator = torch.Generator().manual_seed(0)
    for height, width in [(12, 12), (30, 7), (7, 30), (1, 1)]:
        for _ in range(20):
            top, left, box_height, box_width = random_resized_box(height, width, (0.08, 1.0), (3 / 4, 4 / 3), generator)
            assert top >= 0 and box_height > 0 and top + box_height <= height
            assert left >= 0 and box_width > 0 and left + box_width <= width


# ---------------------------------------------------------------------------------------------------
# loaders and calibration


def _labels_in_order(loader) -> list[int]:
    return [int(label) for _, labels in loader for label in labels]


def test_loaders_with_the_same_seed_give_the_same_order(digits):
    dataset = digits.val
    first = _labels_in_order(build_loader(dataset, 64, shuffle=True, seed=5))
    assert first == _labels_in_order(build_loader(dataset, 64, shuffle=True, seed=5))
    assert first != _labels_in_order(build_loader(dataset, 64, shuffle=True, seed=6))
    assert sorted(first) == sorted(dataset.labels)
    assert _labels_in_order(build_loader(dataset, 64, shuffle=False, seed=5)) == list(dataset.labels)
    assert len(build_loader(dataset, 64, shuffle=True, seed=5, drop_last=True)) == len(dataset) // 64


def test_worker_loaders_reproduce_augmented_batches(digits):
    subset = SplitDataset(
        digits.train.base, digits.train.indices[:64], digits.train.labels[:64], digits.train.transform, True, seed=0
    )

    def batches() -> list[torch.Tensor]:
        return [images for images, _ in build_loader(subset, 16, shuffle=True, seed=1, workers=2)]

    first = batches()
    assert all(torch.equal(a, b) for a, b in zip(first, batches()))
    assert pickle.loads(pickle.dumps(subset)).indices == subset.indices


def test_calibration_batches_are_fixed_by_seed(digits):
    first = calibration_batches(digits.train, 3, 32, seed=0)
    again = calibration_batches(digits.train, 3, 32, seed=0)
    other = calibration_batches(digits.train, 3, 32, seed=1)
    assert len(first) == 3 and first[0][0].shape == (32, 3, SIZE, SIZE) and first[0][1].dtype == torch.long
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    augmented = calibration_batches(digits.train, 3, 32, seed=0, augment=True)
    assert torch.equal(augmented[0][1], first[0][1]) and not torch.equal(augmented[0][0], first[0][0])
    assert torch.equal(augmented[0][0], calibration_batches(digits.train, 3, 32, seed=0, augment=True)[0][0])


def test_calibration_covers_a_small_data_set_without_repeats_per_round():
    dataset = torch.utils.data.TensorDataset(torch.randn(10, 3, 8, 8), torch.arange(10))
    batches = calibration_batches(dataset, 3, 4, seed=0)
    labels = torch.cat([labels for _, labels in batches]).tolist()
    assert len(labels) == 12 and sorted(labels[:10]) == list(range(10))


# ---------------------------------------------------------------------------------------------------
# bad values


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", 4), ("batch_size", 0), ("eval_batch_size", 0), ("workers", -1), ("image_size", 32.0)],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"data\.{field}.*{value}"):
        DataConfig(**{field: value})


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(ValueError, match="mnist") as error:
        DataConfig(name="mnist")
    assert all(name in str(error.value) for name in DATASETS)


def test_root_is_required_outside_digits():
    with pytest.raises(ValueError, match=r"data\.root"):
        DataConfig(name="imagefolder")


def test_build_loader_rejects_a_bad_batch_size(digits):
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(digits.val, 0, shuffle=False, seed=0)


# ---------------------------------------------------------------------------------------------------
# CIFAR (no data files here: the missing-data errors, and the split logic on synthetic arrays)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_root_says_how_to_get_the_data(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="download") as error:
        build_datasets(DataConfig(name=name, root=str(missing)))
    assert str(missing) in str(error.value)
    with pytest.raises(ValueError, match="download") as error:  # the folder exists but holds no files
        build_datasets(DataConfig(name=name, root=str(tmp_path)))
    assert str(tmp_path) in str(error.value)


def test_cifar_splits_on_synthetic_arrays():
    rng = np.random.default_rng(0)
    train_labels, test_labels = np.arange(200) % 10, np.arange(30) % 10
    train = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    classes = [f"class{index}" for index in range(10)]
    config = DataConfig(name="cifar10", root="unused", image_size=24)
    bundle = _cifar_bundle(config, train, train_labels, test, test_labels, classes, val_size=50)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (150, 50, 30)
    assert Counter(bundle.val.labels) == dict.fromkeys(range(10), 5)
    assert not set(bundle.train.indices) & set(bundle.val.indices)
    image, _ = bundle.test[0]
    assert image.shape == (3, 24, 24)
    expected = (torch.from_numpy(test[0]).permute(2, 0, 1).float() / 255 - torch.tensor(bundle.mean).view(3, 1, 1)) / (
        torch.tensor(bundle.std).view(3, 1, 1)
    )
    resized = torch.nn.functional.interpolate(expected[None], size=(24, 24), mode="bilinear", antialias=True)[0]
    assert torch.allclose(image, resized, atol=1e-4)
    again = _cifar_bundle(config, train, train_labels, test, test_labels, classes, val_size=50)
    assert again.val.indices == bundle.val.indices
    assert torch.equal(_items(bundle.train, 8), _items(again.train, 8))


# ---------------------------------------------------------------------------------------------------
# image folders


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    write_images(tmp_path / "train", {"cat": 4, "dog": 4})
    write_images(tmp_path / "val", {"cat": 2, "dog": 2})
    return tmp_path


def test_imagefolder_loads_classes_and_images(image_tree):
    bundle = build_datasets(DataConfig(name="imagefolder", root=str(image_tree), image_size=8), seed=0)
    assert bundle.classes == ("cat", "dog") and bundle.num_classes == 2 and bundle.input_channels == 3
    assert (len(bundle.train), len(bundle.val)) == (8, 4)
    assert bundle.train.labels == (0, 0, 0, 0, 1, 1, 1, 1) and bundle.val.labels == (0, 0, 1, 1)
    assert bundle.test is None  # no test folder: no test split, never val in its place
    with pytest.raises(ValueError, match=r"data\.test_fraction") as error:
        bundle.require_test()
    assert str(image_tree) in str(error.value) and "no test/ folder" in str(error.value)
    again = build_datasets(DataConfig(name="imagefolder", root=str(image_tree), image_size=8), seed=0)
    assert torch.equal(_items(bundle.train, 8), _items(again.train, 8))  # same seed, same random crops
    for dataset in (bundle.train, bundle.val):
        image, label = dataset[0]
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label == 0
    assert torch.equal(bundle.val[1][0], bundle.val[1][0])
    batches = calibration_batches(bundle.train, 2, 4, seed=0)
    assert batches[0][0].shape == (4, 3, 8, 8)


def test_imagefolder_uses_a_test_folder_when_present(image_tree):
    write_images(image_tree / "test", {"cat": 1, "dog": 1})
    bundle = build_datasets(DataConfig(name="imagefolder", root=str(image_tree), image_size=8))
    assert len(bundle.require_test()) == 2 and bundle.test.labels == (0, 1)
    with pytest.raises(ValueError, match="must be 0"):  # a test folder and a val split at once: ambiguous
        build_datasets(DataConfig(name="imagefolder", root=str(image_tree), image_size=8, test_fraction=0.5))


def test_imagefolder_test_fraction_holds_out_part_of_val(tmp_path):
    write_images(tmp_path / "train", {"cat": 2, "dog": 2})
    write_images(tmp_path / "val", {"cat": 6, "dog": 6})
    bundle = build_datasets(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.5))
    assert (len(bundle.val), len(bundle.require_test())) == (6, 6)
    assert not set(bundle.val.indices) & set(bundle.test.indices)  # disjoint halves of val
    assert Counter(bundle.test.labels) == {0: 3, 1: 3}  # stratified
    again = build_datasets(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.5), seed=3)
    assert again.test.indices == bundle.test.indices  # fixed, whatever the run's seed


@pytest.mark.parametrize("fraction", [-0.1, 1.0, "half", True])
def test_imagefolder_bad_test_fraction(tmp_path, fraction):
    with pytest.raises(ValueError, match=r"data.test_fraction must be a number in \[0, 1\)"):
        DataConfig(name="imagefolder", root=str(tmp_path), test_fraction=fraction)


def test_test_fraction_and_augment_are_imagefolder_options():
    with pytest.raises(ValueError, match="applies to imagefolder"):
        DataConfig(name="digits", test_fraction=0.5)
    with pytest.raises(ValueError, match="applies to imagefolder only"):
        DataConfig(name="digits", augment="crop_flip")
    with pytest.raises(ValueError, match="'flip' is not one of auto, resized_crop, crop_flip"):
        DataConfig(name="imagefolder", root="x", augment="flip")


def test_imagefolder_crop_flip_keeps_small_images_whole(tmp_path):
    write_images(tmp_path / "train", {"cat": 2, "dog": 2}, size=16)
    write_images(tmp_path / "val", {"cat": 1, "dog": 1}, size=16)
    config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, augment="crop_flip")
    bundle = build_datasets(config)
    pixels = np.array(Image.open(tmp_path / "val" / "cat" / "0.png").convert("RGB"))
    mean, std = torch.tensor(bundle.mean).view(3, 1, 1), torch.tensor(bundle.std).view(3, 1, 1)
    whole = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(bundle.val[0][0], whole, atol=1e-5)  # eval: the whole image, no resize-and-crop
    resized = build_datasets(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16))
    assert not torch.allclose(resized.val[0][0], whole, atol=1e-2)  # the ImageNet protocol crops the border
    shifted = [bundle.train[0][0] for _ in range(6)]  # crops of the zero-padded image: up to 2 px shifts
    assert any(not torch.equal(shifted[0], other) for other in shifted[1:])


def _error(root: Path) -> str:
    with pytest.raises(ValueError) as error:
        build_datasets(DataConfig(name="imagefolder", root=str(root), image_size=8))
    return str(error.value)


def test_imagefolder_missing_root(tmp_path):
    assert str(tmp_path / "absent") in _error(tmp_path / "absent")


def test_imagefolder_empty_train_folder(tmp_path):
    (tmp_path / "train").mkdir()
    write_images(tmp_path / "val", {"cat": 1})
    assert str(tmp_path / "train") in _error(tmp_path)


def test_imagefolder_class_folder_without_images(tmp_path):
    write_images(tmp_path / "train", {"cat": 1})
    (tmp_path / "train" / "dog").mkdir()
    write_images(tmp_path / "val", {"cat": 1, "dog": 1})
    assert str(tmp_path / "train") in _error(tmp_path)


def test_imagefolder_missing_val_folder(tmp_path):
    write_images(tmp_path / "train", {"cat": 1})
    assert str(tmp_path / "val") in _error(tmp_path)


def test_imagefolder_mismatched_classes(tmp_path):
    write_images(tmp_path / "train", {"cat": 1, "dog": 1})
    write_images(tmp_path / "val", {"cat": 1, "bird": 1})
    message = _error(tmp_path)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "dog" in message and "bird" in message
