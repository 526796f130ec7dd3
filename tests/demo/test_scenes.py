"""The scene generator: deterministic per seed, valid layouts, and pixels that show the objects."""

import numpy as np
import pytest

from minilazy.demo.scenes import CELL, COLORS, GRID, IMAGE_SIZE, MAX_OBJECTS, SHAPES, SIZES, make_scene, render


def test_same_seed_same_scene_and_pixels():
    for seed in (0, 7, 123456):
        assert make_scene(seed) == make_scene(seed)
        assert np.array_equal(np.asarray(render(make_scene(seed))), np.asarray(render(make_scene(seed))))
    assert make_scene(1) != make_scene(2)


def test_layouts_are_valid_and_varied():
    scenes = [make_scene(seed) for seed in range(300)]
    counts = {len(s.objects) for s in scenes}
    assert counts == set(range(1, MAX_OBJECTS + 1))
    for scene in scenes:
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(set(cells)) == len(cells), "two objects share a cell"
        assert cells == sorted(cells), "objects must be listed row-major"
        for obj in scene.objects:
            assert obj.shape in SHAPES and obj.color in COLORS and obj.size in SIZES
            assert 0 <= obj.row < GRID and 0 <= obj.col < GRID
    seen = {(o.shape, o.color, o.size) for s in scenes for o in s.objects}
    assert len(seen) == len(SHAPES) * len(COLORS) * len(SIZES)


def test_max_objects_is_respected_and_checked():
    assert all(len(make_scene(seed, 1, 2).objects) <= 2 for seed in range(50))
    with pytest.raises(ValueError, match="max_objects"):
        make_scene(0, 3, 2)


def _near(pixels, color, tolerance=40.0):
    return np.linalg.norm(pixels.astype(float) - np.array(color, dtype=float), axis=-1) < tolerance


@pytest.mark.parametrize("seed", range(10))
def test_each_object_is_painted_in_its_cell_and_empty_cells_stay_empty(seed):
    scene = make_scene(seed)
    image = np.asarray(render(scene))
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    for row in range(GRID):
        for col in range(GRID):
            cell = image[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
            obj = scene.at(row, col)
            if obj is None:
                assert all(_near(cell, c).sum() < 3 for c in COLORS.values()), f"cell {row},{col} should be empty"
            else:
                painted = _near(cell, COLORS[obj.color]).sum()
                assert painted >= (100 if obj.size == "large" else 20), f"{obj} has only {painted} pixels"
                assert painted <= (400 if obj.size == "large" else 120), f"{obj} covers {painted} pixels"
