"""Object-to-patch labels and caption-to-category matching, against hand-computed expectations."""

import numpy as np
import pytest

from copa.patch_labels import box_patch_overlap, caption_patch_labels, mentioned_categories, patch_labels_from_boxes

COCO = {1: "person", 3: "car", 6: "bus", 10: "traffic light", 11: "fire hydrant", 20: "sheep", 44: "bottle",
        46: "wine glass", 49: "knife", 74: "mouse", 15: "bench", 64: "potted plant", 70: "light"}


def grid(labels, rows):
    return np.asarray(labels).reshape(rows, -1).tolist()


def test_box_covering_one_patch_exactly_marks_only_that_patch():
    # 32x32 image, 16px patches -> 2x2 grid; the box's right and bottom edges lie on patch borders,
    # so the neighbouring patches share zero area with it.
    labels = patch_labels_from_boxes([[0, 0, 16, 16]], (32, 32), 16, min_overlap=0.0)
    assert grid(labels, 2) == [[1, 0], [0, 0]]


def test_box_straddling_a_border_marks_both_patches_by_overlap_share():
    # x from 12 to 20 overlaps patch column 0 by 4px (25% of a 16px patch row when full height)
    box = [12, 0, 8, 16]
    assert grid(patch_labels_from_boxes([box], (32, 32), 16, min_overlap=0.2), 2) == [[1, 1], [0, 0]]
    # each side gets 4*16/256 = 25% of a patch: above 0.25 is needed, so neither qualifies
    assert grid(patch_labels_from_boxes([box], (32, 32), 16, min_overlap=0.25), 2) == [[0, 0], [0, 0]]


def test_box_partly_outside_is_clipped_to_the_image():
    # [-10, -10, 20, 20] keeps [0,0]-[10,10] inside: 100/64 of patch (0,0) at 8px... use 16px patches:
    # 100/256 = 39% of patch (0,0); nothing else.
    labels = patch_labels_from_boxes([[-10, -10, 20, 20]], (32, 32), 16, min_overlap=0.1)
    assert grid(labels, 2) == [[1, 0], [0, 0]]
    # a box hanging off the bottom-right corner: [24, 24, 40, 40] -> 8x8 inside patch (1,1) = 25%
    labels = patch_labels_from_boxes([[24, 24, 40, 40]], (32, 32), 16, min_overlap=0.2)
    assert grid(labels, 2) == [[0, 0], [0, 1]]


def test_box_fully_outside_or_empty_marks_nothing():
    assert patch_labels_from_boxes([[40, 40, 5, 5]], (32, 32), 16).sum() == 0
    assert patch_labels_from_boxes(np.zeros((0, 4)), (32, 32), 16).sum() == 0


def test_min_overlap_threshold_and_union_of_boxes():
    # 64x64 image, 8px patches. A 12x12 box at (4, 4): patch (0,0) gets 4x4=16/64=25%, (0,1) 4x8=50%,
    # (1,1) 8x8=100%, (0,2)/(2,0) nothing since 4+12=16 ends on the border.
    labels = patch_labels_from_boxes([[4, 4, 12, 12], [56, 56, 8, 8]], (64, 64), 8, min_overlap=0.3)
    expected = np.zeros((8, 8), dtype=int)
    expected[0, 1] = expected[1, 0] = expected[1, 1] = 1
    expected[7, 7] = 1
    assert grid(labels, 8) == expected.tolist()


def test_box_patch_overlap_is_each_patch_share_covered():
    # 64x64, 8px patches, a 12x12 box at (4, 4): patch (0,0) 4x4 of 64, (0,1) and (1,0) 4x8, (1,1) all of it
    shares = box_patch_overlap([4, 4, 12, 12], (64, 64), 8).reshape(8, 8)
    expected = np.zeros((8, 8))
    expected[0, 0], expected[0, 1], expected[1, 0], expected[1, 1] = 16 / 64, 32 / 64, 32 / 64, 1.0
    np.testing.assert_allclose(shares, expected)
    # clipped: [-4, 60, 8, 8] keeps x 0..4, y 60..64, a 4x4 corner of the bottom-left patch
    shares = box_patch_overlap([-4, 60, 8, 8], (64, 64), 8).reshape(8, 8)
    assert shares[7, 0] == pytest.approx(4 * 4 / 64) and shares.sum() == pytest.approx(4 * 4 / 64)
    assert box_patch_overlap([70, 70, 4, 4], (64, 64), 8).sum() == 0


def test_image_not_a_multiple_of_patch_size_uses_a_ceil_grid():
    labels = patch_labels_from_boxes([[16, 0, 4, 20]], (20, 20), 16, min_overlap=0.05)
    # grid is 2x2; the box covers x 16..20 (4px into the right column) for the full height
    assert grid(labels, 2) == [[0, 1], [0, 1]]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        patch_labels_from_boxes([[0, 0, 1, 1]], (32, 32), 0)
    with pytest.raises(ValueError):
        patch_labels_from_boxes([[0, 0, 1, 1]], (32, 32), 16, min_overlap=1.5)


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A man waiting at a traffic light next to two buses.", {10, 6}),
        ("people standing by a fire hydrant", {1, 11}),
        ("a flock of sheep on a hill", {20}),
        ("two knives and a computer mouse on a bench", {49, 74, 15}),
        ("a car parked behind another car", {3}),
        ("wine glasses and bottles", {46, 44}),
        ("a lamp with a bright light", {70}),
        ("potted plants on benches", {64, 15}),
        ("carpet and busy streets", set()),  # no substring matches: 'car' is not 'carpet', 'bus' not 'busy'
    ],
)
def test_mentioned_categories_on_coco_names(caption, expected):
    assert mentioned_categories(caption, COCO) == expected


def test_a_multiword_name_is_not_also_counted_as_its_last_word():
    # 'traffic light' takes the words, so the category 'light' is not mentioned too
    assert mentioned_categories("a traffic light", COCO) == {10}


def test_caption_labels_use_every_box_of_each_mentioned_category():
    anns = [{"bbox": [0, 0, 16, 16], "category_id": 3}, {"bbox": [16, 16, 16, 16], "category_id": 3},
            {"bbox": [16, 0, 16, 16], "category_id": 1}]
    labels = caption_patch_labels("two cars", anns, COCO, (32, 32), 16)
    assert grid(labels, 2) == [[1, 0], [0, 1]]
    assert caption_patch_labels("a dog", anns, COCO, (32, 32), 16).sum() == 0
