"""2-D toy quantizers of revq_core.paper.toy (seconds)."""
import pytest
import torch

from revq_core.paper.toy import (TOY_DISTRIBUTIONS, build_toy_quantizer, code_grid, codes_used, init_codes_far,
                                 make_toy_points, quantization_mse, train_toy_quantizer)


@pytest.mark.parametrize("name", TOY_DISTRIBUTIONS)
def test_toy_points_are_seeded(name):
    points = make_toy_points(name, 300, seed=1)
    assert points.shape == (300, 2)
    torch.testing.assert_close(points, make_toy_points(name, 300, seed=1))
    assert not torch.equal(points, make_toy_points(name, 300, seed=2))


def test_single_group_grid_is_symmetric_about_the_diagonal():
    quantizer = build_toy_quantizer(multi_group=False, codes_per_group=5)
    grid = {tuple(row) for row in code_grid(quantizer).tolist()}
    assert len(grid) == 25 and grid == {(y, x) for x, y in grid}
    multi = build_toy_quantizer(multi_group=True, codes_per_group=5)
    multi_grid = {tuple(row) for row in code_grid(multi).tolist()}
    assert len(multi_grid) == 25 and multi_grid != {(y, x) for x, y in multi_grid}


def test_quantization_mse_and_codes_used_by_hand():
    quantizer = build_toy_quantizer(multi_group=True, codes_per_group=2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[[0.0], [10.0]], [[1.0], [5.0]]]))  # x codes {0, 10}, y codes {1, 5}
    points = torch.tensor([[0.5, 0.0], [9.0, 4.0], [1.0, 2.0]])
    # nearest: (0, 1), (10, 5), (0, 1) -> squared errors 0.25 + 1, 1 + 1, 1 + 1 over 6 numbers
    assert quantization_mse(quantizer, points) == pytest.approx(5.25 / 6)
    assert codes_used(quantizer, points) == {"codes": 4, "codebook_size": 4, "grid_points": 2}


@pytest.mark.parametrize("multi_group, codes_at_start", [(False, 1), (True, 2)])
def test_far_init_uses_one_code_per_codebook_and_reset_revives_all(multi_group, codes_at_start):
    # K = 10: the reset revives floor(0.2 * K) = 2 codes per codebook per epoch
    points = make_toy_points("blobs", 512, seed=0)
    quantizer = build_toy_quantizer(multi_group, codes_per_group=10)
    init_codes_far(quantizer, offset=8.0, spread=0.3, seed=0)
    assert codes_used(quantizer, points)["codes"] == codes_at_start
    no_reset = build_toy_quantizer(multi_group, codes_per_group=10)
    no_reset.load_state_dict(quantizer.state_dict())
    history = train_toy_quantizer(no_reset, points, epochs=4, batch_size=32, lr=0.2, reset=False, seed=0)
    assert sum(history.codes_reset) == 0
    assert codes_used(no_reset, points)["codes"] == codes_at_start  # dead codes stay dead
    history = train_toy_quantizer(quantizer, points, epochs=10, batch_size=32, lr=0.2, reset=True, seed=0)
    assert codes_used(quantizer, points)["codes"] == quantizer.num_groups * 10
    assert history.mse[-1] < quantization_mse(no_reset, points)
