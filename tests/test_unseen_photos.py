"""benchmarks.unseen_photos holds back whole near-duplicate groups: a held-back photo's twin never
calibrates."""

from __future__ import annotations

import numpy as np

from benchmarks.unseen_photos import split_rows


def test_a_fold_holds_back_the_twin_of_a_held_back_photo():
    n = 12
    groups = np.tile(np.arange(n), 3)  # view-major: 3 views of 12 photos
    anchors = np.arange(n)
    anchors[5] = 0  # photo 5 is photo 0's near-duplicate (5 % 4 == 1, 0 % 4 == 0)
    cal, seen, unseen = split_rows(groups, 0, fold=0, calib_rows=8, anchors=anchors)
    held = set(groups[unseen].tolist())
    assert held == {0, 4, 5, 8}
    assert not held & set(groups[np.concatenate([cal, seen])].tolist())
    _, _, unseen1 = split_rows(groups, 0, fold=1, calib_rows=8, anchors=anchors)
    assert set(groups[unseen1].tolist()) == {1, 9}
    # without anchors each photo is its own group (the fold is its index % 4)
    _, _, plain = split_rows(groups, 0, fold=1, calib_rows=8)
    assert set(groups[plain].tolist()) == {1, 5, 9}
