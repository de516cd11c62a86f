"""Tests of zoo.data: pure NumPy, so they run unchanged under every backend."""

import ast
import doctest
import importlib
import math
import pathlib

import numpy as np
import pytest

from zoo import data
from zoo.data import (
    GaussianMixture,
    Grid,
    MarkovText,
    Ring,
    SwissRoll,
    TwoMoons,
    bytes_from_file,
    digits,
    mode_coverage,
    text_from_bytes,
    toy_density,
    windows,
)

DATA_DIR = pathlib.Path(data.__file__).parent
GAUSS_ENTROPY_2D = lambda std: math.log(2 * math.pi * math.e * std**2)  # noqa: E731


# --------------------------------------------------------------------------
# The package itself


def test_data_modules_import_no_framework():
    # zoo.data must stay usable without (and identical under) any backend.
    forbidden = {"keras", "tensorflow", "jax", "jaxlib", "torch"}
    for path in sorted(DATA_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


@pytest.mark.parametrize("module", ["zoo.data", "zoo.data.digits", "zoo.data.toy", "zoo.data.text"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_api_is_exported():
    for name in data.__all__:
        assert hasattr(data, name), name


# --------------------------------------------------------------------------
# digits


@pytest.mark.parametrize("split, size", [("train", 1437), ("test", 360), ("all", 1797)])
def test_digits_shapes_dtypes_range(split, size):
    images, labels = digits(split)
    assert images.shape == (size, 8, 8, 1) and images.dtype == np.float32
    assert labels.shape == (size,) and labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))


def test_digits_pixel_mapping_is_x_over_8_minus_1():
    from sklearn.datasets import load_digits

    raw = load_digits()
    images, labels = digits("all")
    np.testing.assert_array_equal((images[..., 0] + 1.0) * 8.0, raw.images)
    np.testing.assert_array_equal(labels, raw.target)


def _sorted_rows(images, labels):
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_digits_split_is_a_partition():
    from sklearn.datasets import load_digits

    from zoo.data.digits import _split_indices

    train, test = _split_indices(load_digits().target)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))

    # The same holds for what the public function returns (as multisets of
    # rows, since the data set holds a few duplicate images).
    both = [np.concatenate(a) for a in zip(digits("train"), digits("test"), strict=True)]
    np.testing.assert_array_equal(_sorted_rows(*both), _sorted_rows(*digits("all")))


def test_digits_split_is_stratified_and_fixed():
    _, all_labels = digits("all")
    _, test_labels = digits("test")
    share = np.bincount(all_labels) * 360 / 1797
    assert np.all(np.abs(np.bincount(test_labels) - share) < 1.0)

    from zoo.data.digits import _split_indices

    # Pinned so that a change in NumPy's random stream (which would silently
    # change every published test-set number) fails loudly here.
    _, test = _split_indices(all_labels)
    assert test[:10].tolist() == [5, 9, 12, 14, 16, 17, 19, 23, 24, 34]
    assert int(test.sum()) == 326571


def test_digits_is_deterministic():
    a, b = digits("train"), digits("train")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("bad", ["validation", "Train", None, 0, ["train"]])
def test_digits_rejects_unknown_split(bad):
    with pytest.raises(ValueError, match=r"split.*'train', 'test', 'all'"):
        digits(bad)


# --------------------------------------------------------------------------
# toy densities: shared behaviour

ALL_DENSITIES = [Ring(), Grid(), TwoMoons(), SwissRoll()]
IDS = ["ring", "grid", "moons", "swiss_roll"]


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
def test_sample_shape_dtype_and_seeding(density):
    x = density.sample(500, seed=0)
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, density.sample(500, seed=0))
    assert not np.array_equal(x, density.sample(500, seed=1))
    assert density.sample(0, seed=0).shape == (0, 2)
    rng = np.random.default_rng(3)
    assert not np.array_equal(density.sample(10, seed=rng), density.sample(10, seed=rng))


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
def test_log_prob_shape_dtype(density):
    lp = density.log_prob(density.sample(100, seed=0))
    assert lp.shape == (100,) and lp.dtype == np.float64 and np.all(np.isfinite(lp))
    assert density.log_prob(np.zeros((0, 2))).shape == (0,)
    # Lists and integer arrays are accepted too.
    assert density.log_prob([[0, 0]]).shape == (1,)


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
@pytest.mark.parametrize("bad", [np.zeros(2), np.zeros((3, 3)), np.zeros((2, 2, 2)), [["a", "b"]]])
def test_log_prob_rejects_bad_shapes(density, bad):
    with pytest.raises(ValueError, match="x must"):
        density.log_prob(bad)


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
@pytest.mark.parametrize("n", [-1, 2.5, True, "10"])
def test_sample_rejects_bad_counts(density, n):
    with pytest.raises(ValueError, match="n must be an integer"):
        density.sample(n)


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
def test_sample_rejects_bad_seed(density):
    with pytest.raises(ValueError, match="seed must be an integer"):
        density.sample(5, seed=-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        density.sample(5, seed=1.5)


@pytest.mark.parametrize("density", ALL_DENSITIES, ids=IDS)
def test_get_config_round_trip(density):
    clone = type(density)(**density.get_config())
    assert clone.get_config() == density.get_config()
    np.testing.assert_array_equal(clone.sample(20, seed=0), density.sample(20, seed=0))
    assert repr(clone) == repr(density)


def test_toy_density_factory():
    assert isinstance(toy_density("ring"), Ring)
    assert isinstance(toy_density("grid"), Grid)
    assert isinstance(toy_density("moons"), TwoMoons)
    assert isinstance(toy_density("swiss_roll"), SwissRoll)
    assert toy_density("ring", n_modes=4, radius=1.0).modes.shape == (4, 2)
    assert toy_density("moons", noise=0.05).std == 0.05
    with pytest.raises(ValueError, match=r"name.*'ring', 'grid', 'moons', 'swiss_roll'.*'circles'"):
        toy_density("circles")
    with pytest.raises(TypeError):
        toy_density("ring", spacing=1.0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Ring(n_modes=0), "n_modes"),
        (lambda: Ring(radius=0.0), "radius"),
        (lambda: Ring(std=-0.1), "std"),
        (lambda: Grid(size=1.5), "size"),
        (lambda: Grid(spacing=float("inf")), "spacing"),
        (lambda: Grid(std="0.02"), "std"),
        (lambda: TwoMoons(noise=0.0), "noise"),
        (lambda: SwissRoll(noise=float("nan")), "noise"),
        (lambda: GaussianMixture(np.zeros((0, 2)), 1.0), "centres"),
        (lambda: GaussianMixture(np.zeros((3, 3)), 1.0), "centres"),
        (lambda: GaussianMixture([[np.nan, 0.0]], 1.0), "centres"),
    ],
)
def test_constructors_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------
# ring and grid


def test_ring_and_grid_modes():
    ring = Ring()
    assert ring.modes.shape == (8, 2) and ring.std == 0.02
    np.testing.assert_allclose(np.linalg.norm(ring.modes, axis=1), 2.0)
    np.testing.assert_allclose(ring.modes[0], [2.0, 0.0])
    np.testing.assert_allclose(ring.modes[2], [0.0, 2.0], atol=1e-12)

    grid = Grid()
    assert grid.modes.shape == (25, 2) and grid.std == 0.02
    assert sorted(set(grid.modes[:, 0])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert sorted(set(grid.modes[:, 1])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    np.testing.assert_allclose(Grid(size=4, spacing=1.0).modes.mean(axis=0), [0.0, 0.0])
    with pytest.raises(ValueError):
        grid.modes[0, 0] = 1.0  # read-only


@pytest.mark.parametrize(
    "density",
    [Ring(), Grid(), Grid(size=3, spacing=0.5, std=0.4)],
    ids=["ring", "grid", "overlapping"],
)
def test_mixture_samples_match_parameters(density):
    x = density.sample(20_000, seed=0).astype(np.float64)
    offsets = x - density.modes[np.argmin(((x[:, None] - density.modes) ** 2).sum(-1), axis=1)]
    if density.std < 0.1:  # well separated: the nearest mode is the true one
        assert abs(offsets.std() - density.std) < 0.02 * density.std
        counts = np.bincount(np.argmin(((x[:, None] - density.modes) ** 2).sum(-1), axis=1))
        expected = len(x) / len(density.modes)
        assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    np.testing.assert_allclose(x.mean(axis=0), density.modes.mean(axis=0), atol=0.05)


def _direct_mixture_log_prob(x, centres, std):
    x = np.asarray(x, dtype=np.float64)
    dens = np.zeros(len(x))
    for c in centres:
        dens += np.exp(-((x - c) ** 2).sum(axis=1) / (2 * std**2)) / (2 * np.pi * std**2)
    return np.log(dens / len(centres))


@pytest.mark.parametrize(
    "density", [Ring(std=0.3), Grid(std=0.5, spacing=1.0), Ring(n_modes=3, radius=1.0, std=1.0)]
)
def test_mixture_log_prob_matches_direct_formula(density):
    x = np.random.default_rng(0).uniform(-3, 3, size=(400, 2))
    np.testing.assert_allclose(
        density.log_prob(x),
        _direct_mixture_log_prob(x, density.modes, density.std),
        rtol=1e-10,
        atol=1e-10,
    )


def test_mixture_log_prob_is_stable_far_from_modes():
    # Direct exp() underflows to 0 here; log_prob must stay finite and exact.
    lp = Grid().log_prob([[100.0, 100.0]])
    expected = -(96.0**2 * 2) / (2 * 0.02**2) - math.log(25) - math.log(2 * math.pi * 0.02**2)
    np.testing.assert_allclose(lp, [expected], rtol=1e-12)


def _grid_integral(density, lo, hi, step):
    axis_x = np.arange(lo[0], hi[0], step) + step / 2
    axis_y = np.arange(lo[1], hi[1], step) + step / 2
    gx, gy = np.meshgrid(axis_x, axis_y)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.exp(density.log_prob(points)).sum() * step**2


@pytest.mark.parametrize(
    "density, lo, hi, step",
    [
        (Ring(std=0.2), (-3.5, -3.5), (3.5, 3.5), 0.05),
        (Grid(std=0.3, spacing=1.0), (-4.5, -4.5), (4.5, 4.5), 0.1),
        (TwoMoons(noise=0.25), (-2.5, -2.2), (3.5, 2.7), 0.1),
        (SwissRoll(noise=0.3), (-4.9, -4.9), (4.9, 4.9), 0.1),
    ],
    ids=IDS,
)
def test_density_integrates_to_one(density, lo, hi, step):
    # A midpoint sum of Gaussians with std >= 2 * step is exact to ~exp(-2 pi^2 std^2 / step^2).
    assert abs(_grid_integral(density, lo, hi, step) - 1.0) < 1e-3


# --------------------------------------------------------------------------
# entropy


@pytest.mark.parametrize("std", [0.02, 0.5, 3.0])
def test_single_gaussian_entropy_is_closed_form(std):
    for density in [
        GaussianMixture([[1.0, -2.0]], std),
        Ring(n_modes=1, std=std),
        Grid(size=1, std=std),
    ]:
        estimate = density.entropy_estimate()
        assert estimate.stderr == 0.0
        assert math.isclose(estimate.value, GAUSS_ENTROPY_2D(std), rel_tol=1e-12, abs_tol=1e-12)
        # ... and agrees with a plain Monte Carlo estimate from samples and log_prob.
        x = density.sample(50_000, seed=1)
        assert abs(-density.log_prob(x).mean() - GAUSS_ENTROPY_2D(std)) < 0.02


def test_separated_mixture_entropy_is_log_k_plus_gaussian():
    for density, k in [(Ring(), 8), (Grid(), 25)]:
        estimate = density.entropy_estimate()
        assert estimate.stderr == 0.0
        assert math.isclose(density.entropy(), math.log(k) + GAUSS_ENTROPY_2D(0.02), rel_tol=1e-12)


def test_entropy_is_cached_and_seeded():
    density = Grid(std=0.5, spacing=1.0)
    assert density.entropy() == density.entropy()
    assert density.entropy_estimate(seed=3) == density.entropy_estimate(seed=3)
    with pytest.raises(ValueError, match="num_samples"):
        density.entropy_estimate(num_samples=1)


def _plain_monte_carlo_entropy(density, n, seed):
    lp = density.log_prob(density.sample(n, seed=seed).astype(np.float64))
    return -lp.mean(), lp.std(ddof=1) / math.sqrt(n)


@pytest.mark.parametrize(
    "density, n",
    [
        (Grid(size=3, spacing=1.0, std=0.6), 100_000),  # heavy overlap
        (Ring(n_modes=6, radius=1.0, std=0.3), 100_000),  # partial overlap
        (TwoMoons(), 5_000),
        (SwissRoll(), 5_000),
    ],
    ids=["overlapping_grid", "overlapping_ring", "moons", "swiss_roll"],
)
def test_entropy_agrees_with_plain_monte_carlo(density, n):
    # For the curves, fewer points than the default keep this fast; the
    # TwoMoons docstring example runs the default.
    estimate = density.entropy_estimate(num_samples=n if n < 10_000 else None)
    plain, plain_se = _plain_monte_carlo_entropy(density, n, seed=7)
    assert estimate.stderr < 5e-3
    assert estimate.stderr < plain_se / 2  # the decomposition is the better estimator
    assert abs(estimate.value - plain) < 4 * math.hypot(estimate.stderr, plain_se)
    # Overlap lowers the entropy below the separated-modes value, never above.
    if isinstance(density, GaussianMixture):
        assert estimate.value < math.log(density.num_modes) + GAUSS_ENTROPY_2D(density.std)


# --------------------------------------------------------------------------
# two moons and swiss roll


def _moons_reference(u):
    a = np.pi * u
    return [np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1)]


def _roll_reference(u):
    t = 1.5 * np.pi * (1 + 2 * u)
    return [np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5]


@pytest.mark.parametrize(
    "density, curves",
    [
        (TwoMoons(), _moons_reference),
        (TwoMoons(noise=0.03), _moons_reference),
        (SwissRoll(), _roll_reference),
    ],
    ids=["moons", "thin_moons", "swiss_roll"],
)
def test_curve_log_prob_matches_fine_quadrature(density, curves):
    # An independent reference: 16 times more midpoint nodes than the density's own.
    nodes = 16 * len(density._quadrature.modes) // len(curves(np.zeros(1)))
    u = (np.arange(nodes) + 0.5) / nodes
    reference = GaussianMixture(np.concatenate(curves(u)), density.noise)
    x = density.sample(150, seed=0).astype(np.float64)
    near = x + density.noise * np.random.default_rng(1).uniform(-3, 3, size=x.shape)
    for points in (x, near):
        np.testing.assert_allclose(density.log_prob(points), reference.log_prob(points), atol=3e-3)


def test_moons_and_roll_match_scikit_learn_generators():
    from sklearn.datasets import make_moons, make_swiss_roll

    n = 20_000
    ours = TwoMoons(noise=0.1).sample(n, seed=0)
    theirs, _ = make_moons(n, noise=0.1, random_state=0)
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(ours.T), np.cov(theirs.T), atol=0.02)

    ours = SwissRoll().sample(n, seed=0)
    theirs = make_swiss_roll(n, noise=1.0, random_state=0)[0][:, [0, 2]] / 5
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(ours.T), np.cov(theirs.T), atol=0.08)


def test_curve_densities_have_no_modes():
    for density in (TwoMoons(), SwissRoll()):
        assert density.modes is None
        assert density.std == density.noise


# --------------------------------------------------------------------------
# mode coverage


def _hand_made():
    modes = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = np.array(
        [
            [0.0, 0.0],
            [1.0, 1.0],
            [-2.9, 0.0],  # mode 0, within 3 std
            [12.9, 0.0],  # mode 1, within 3 std
            [10.0, 3.1],  # mode 1, too far: not high quality
        ]
    )
    return samples, modes


def test_mode_coverage_on_hand_made_samples():
    samples, modes = _hand_made()
    result = mode_coverage(samples, modes, std=1.0)
    assert result["counts"].tolist() == [3, 1, 0]
    assert result["counts"].dtype == np.int64
    assert result["covered"].tolist() == [True, True, False]
    assert result["modes_covered"] == 2 and result["num_modes"] == 3
    assert result["high_quality"] == pytest.approx(4 / 5)
    # All 5 samples by nearest mode: 3, 2, 0 of 5 against uniform 1/3 each.
    expected_kl = 0.6 * math.log(0.6 * 3) + 0.4 * math.log(0.4 * 3)
    assert result["reverse_kl"] == pytest.approx(expected_kl)


def test_mode_coverage_thresholds():
    samples, modes = _hand_made()
    assert mode_coverage(samples, modes, 1.0, min_count=2)["covered"].tolist() == [
        True,
        False,
        False,
    ]
    assert mode_coverage(samples, modes, 1.0, threshold=4.0)["high_quality"] == 1.0
    assert mode_coverage(samples, modes, 1.0, threshold=0.5)["modes_covered"] == 1


def test_mode_coverage_of_true_and_collapsed_samples():
    grid = Grid()
    n = 25_000
    result = grid.mode_coverage(grid.sample(n, seed=0))
    assert result["modes_covered"] == 25
    # In 2-D, P(|z| <= 3) = 1 - exp(-9 / 2) exactly.
    p = 1 - math.exp(-4.5)
    assert abs(result["high_quality"] - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert result["reverse_kl"] < 0.005

    ring = Ring()
    collapsed = ring.modes[3] + ring.std * np.random.default_rng(0).standard_normal((1000, 2))
    result = ring.mode_coverage(collapsed)
    assert result["modes_covered"] == 1 and result["covered"][3]
    assert result["reverse_kl"] == pytest.approx(math.log(8))


def test_mode_coverage_method_equals_function():
    ring = Ring()
    x = ring.sample(300, seed=2)
    a, b = (
        ring.mode_coverage(x, threshold=2.0, min_count=3),
        mode_coverage(x, ring.modes, ring.std, 2.0, 3),
    )
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_mode_coverage_works_in_other_dimensions():
    modes = np.eye(4) * 10
    samples = np.repeat(modes, 2, axis=0) + 0.1
    assert mode_coverage(samples, modes, std=1.0)["modes_covered"] == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": np.zeros(2)}, "samples must have shape"),
        ({"samples": np.zeros((0, 2))}, "samples must hold at least one"),
        ({"samples": np.zeros((4, 3))}, "same number of columns"),
        ({"samples": np.array([[0.0, np.nan]])}, "samples must be finite"),
        ({"modes": np.zeros((0, 2))}, "modes must hold at least one"),
        ({"modes": np.zeros(2)}, "modes must have shape"),
        ({"std": 0.0}, "std must be a positive number"),
        ({"threshold": -1.0}, "threshold must be a positive number"),
        ({"min_count": 0}, "min_count must be an integer >= 1"),
        ({"min_count": 1.5}, "min_count must be an integer"),
    ],
)
def test_mode_coverage_rejects_bad_arguments(kwargs, match):
    args = {"samples": np.zeros((4, 2)), "modes": np.ones((3, 2)), "std": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mode_coverage(**args)


# --------------------------------------------------------------------------
# Markov text


def test_markov_defaults_and_alphabet():
    source = MarkovText()
    assert source.vocab_size == 27 and source.order == 1
    assert source.alphabet == "abcdefghijklmnopqrstuvwxyz "
    assert len(MarkovText(vocab_size=95).alphabet) == 95
    assert len(set(data.MARKOV_ALPHABET)) == 95 and data.MARKOV_ALPHABET.isprintable()


@pytest.mark.parametrize("vocab_size, order", [(27, 1), (10, 2), (5, 3)])
def test_markov_transitions_and_stationarity(vocab_size, order):
    source = MarkovText(vocab_size=vocab_size, order=order, seed=1)
    p = source.transitions
    assert p.shape == (vocab_size,) * (order + 1)
    assert np.all(p > 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    pi = source.stationary_distribution()
    assert pi.shape == (vocab_size,) * order
    assert np.all(pi > 0) and math.isclose(pi.sum(), 1.0, rel_tol=1e-12)
    # pi(x_2..x_k, y) = sum_{x_1} pi(x_1..x_k) P(y | x_1..x_k)
    np.testing.assert_allclose((pi[..., None] * p).sum(axis=0), pi, atol=1e-13)


def test_markov_entropy_rate_formula():
    source = MarkovText(vocab_size=12, seed=4)
    p, pi = source.transitions, source.stationary_distribution()
    expected = -np.sum(pi[:, None] * p * np.log(p))
    assert math.isclose(source.entropy_rate(), expected, rel_tol=1e-12)
    marginal = -np.sum(pi * np.log(pi))
    assert math.isclose(source.marginal_entropy(), marginal, rel_tol=1e-12)
    assert 0 < source.entropy_rate() < source.marginal_entropy() < math.log(12)


@pytest.mark.parametrize(
    "vocab_size, order, concentration", [(27, 1, 0.3), (16, 2, 0.2), (6, 3, 1.0)]
)
def test_markov_entropy_rate_equals_empirical_nll(vocab_size, order, concentration):
    source = MarkovText(vocab_size=vocab_size, order=order, concentration=concentration, seed=2)
    tokens = source.sequences(2000, 64, seed=0)
    # Chains are independent, so per-sequence means are i.i.d.
    per_sequence = -source.token_log_probs(tokens)[:, order:].mean(axis=1)
    se = per_sequence.std(ddof=1) / math.sqrt(len(per_sequence))
    assert abs(per_sequence.mean() - source.entropy_rate()) < 4 * se
    # Chains start stationary: the first token carries the marginal entropy.
    first = -source.token_log_probs(tokens)[:, 0]
    assert abs(first.mean() - source.marginal_entropy()) < 4 * first.std() / math.sqrt(len(first))


def test_markov_single_long_chain_nll():
    source = MarkovText(seed=5)
    tokens = source.sample(200_000, seed=1)
    nll = -source.token_log_probs(tokens)[1:].mean()
    assert abs(nll - source.entropy_rate()) < 0.02


def test_markov_sample_and_sequences_shapes_and_seeding():
    source = MarkovText(order=2, vocab_size=8)
    s = source.sample(1000, seed=0)
    assert s.shape == (1000,) and s.dtype == np.int32
    assert s.min() >= 0 and s.max() < 8
    np.testing.assert_array_equal(s, source.sample(1000, seed=0))
    assert not np.array_equal(s, source.sample(1000, seed=1))
    # The Python loop and the vectorised loop draw the same chain.
    np.testing.assert_array_equal(s, source.sequences(1, 1000, seed=0)[0])

    q = source.sequences(16, 40, seed=0)
    assert q.shape == (16, 40) and q.dtype == np.int32
    np.testing.assert_array_equal(q, source.sequences(16, 40, seed=0))
    assert source.sequences(3, 0).shape == (3, 0)
    assert source.sequences(0, 5).shape == (0, 5)
    assert source.sequences(4, 1, seed=0).shape == (4, 1)  # shorter than the order
    assert source.sample(0).shape == (0,)


def test_markov_chain_is_fixed_by_seed():
    a, b, c = MarkovText(seed=0), MarkovText(seed=0), MarkovText(seed=1)
    np.testing.assert_array_equal(a.transitions, b.transitions)
    assert not np.allclose(a.transitions, c.transitions)
    assert (
        MarkovText(concentration=0.05).entropy_rate() < MarkovText(concentration=5.0).entropy_rate()
    )


def test_markov_log_prob_matches_direct_computation():
    source = MarkovText(vocab_size=9, seed=3)
    tokens = source.sequences(5, 30, seed=0)
    p, pi = source.transitions, source.stationary_distribution()
    direct = np.log(pi[tokens[:, 0]]) + np.log(p[tokens[:, :-1], tokens[:, 1:]]).sum(axis=1)
    np.testing.assert_allclose(source.log_prob(tokens), direct, rtol=1e-12)
    assert isinstance(source.log_prob(tokens[0]), float)
    assert source.token_log_probs(tokens).shape == tokens.shape

    # Order 2: the first two tokens come from the stationary pair distribution.
    source = MarkovText(vocab_size=5, order=2, seed=3)
    t = source.sample(6, seed=0)
    p, pi = source.transitions, source.stationary_distribution()
    direct = math.log(pi[t[0], t[1]]) + sum(
        math.log(p[t[i - 2], t[i - 1], t[i]]) for i in range(2, 6)
    )
    assert math.isclose(source.log_prob(t), direct, rel_tol=1e-12)


def test_markov_encode_decode_round_trip():
    source = MarkovText()
    tokens = source.sample(200, seed=0)
    text = source.decode(tokens)
    assert isinstance(text, str) and len(text) == 200 and set(text) <= set(source.alphabet)
    np.testing.assert_array_equal(source.encode(text), tokens)
    assert source.decode(np.array([[0, 1], [25, 26]])) == ["ab", "z "]
    assert source.encode("hi there").dtype == np.int32
    assert source.decode([]) == "" and source.encode("").shape == (0,)
    assert source.log_prob(np.zeros((3, 0), dtype=np.int32)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="outside this source's alphabet"):
        source.encode("Hello")
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 26\]"):
        source.decode([0, 27])
    with pytest.raises(ValueError, match="tokens must be an integer array"):
        source.decode([0.5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"vocab_size": 96}, "vocab_size must be at most 95"),
        ({"order": 0}, "order"),
        ({"vocab_size": 27, "order": 3}, r"vocab_size \*\* order must be at most 4096"),
        ({"concentration": 0.0}, "concentration"),
        ({"seed": -1}, "seed"),
        ({"seed": None}, "seed"),
    ],
)
def test_markov_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarkovText(**kwargs)


def test_markov_sampling_rejects_bad_arguments():
    source = MarkovText()
    with pytest.raises(ValueError, match="num_tokens"):
        source.sample(-1)
    with pytest.raises(ValueError, match="num_sequences"):
        source.sequences(2.0, 4)
    with pytest.raises(ValueError, match="length"):
        source.sequences(2, -4)


# --------------------------------------------------------------------------
# bytes and windows


def test_bytes_from_file_round_trip(tmp_path):
    text = "Grüße, world!\n" * 3
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    tokens = bytes_from_file(path)
    assert tokens.dtype == np.int32 and tokens.ndim == 1
    assert tokens.tolist() == list(text.encode("utf-8"))
    assert text_from_bytes(tokens) == text
    np.testing.assert_array_equal(bytes_from_file(str(path)), tokens)


def test_bytes_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        bytes_from_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        bytes_from_file(empty)
    with pytest.raises(ValueError, match="must name a file"):
        bytes_from_file(tmp_path)


def test_text_from_bytes():
    assert text_from_bytes(np.array([0xE2, 0x82, 0xAC], dtype=np.int32)) == "\u20ac"
    assert text_from_bytes([0xE2, 0x82]) == "\ufffd"  # a cut multi-byte character
    assert text_from_bytes([]) == ""
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        text_from_bytes([256])
    with pytest.raises(ValueError, match="1-D integer array"):
        text_from_bytes([[1, 2]])


def test_windows_shapes_and_values():
    tokens = np.arange(10)
    w = windows(tokens, 4)
    assert w.dtype == np.int32 and w.flags["C_CONTIGUOUS"]
    assert w.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(tokens, 4, stride=1).shape == (7, 4)
    assert windows(tokens, 4, stride=3).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows(tokens, 10).shape == (1, 10)
    for n, length, stride in [(100, 7, 5), (64, 8, 8), (9, 3, 2)]:
        assert len(windows(np.arange(n), length, stride)) == (n - length) // stride + 1
    # Windows are a copy: training code may modify them in place.
    w[0, 0] = 99
    assert tokens[0] == 0


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.arange(3), 4), "windows of length 4 need at least 4 tokens; got 3"),
        ((np.arange(10).reshape(2, 5), 2), "tokens must be a 1-D integer array"),
        ((np.linspace(0, 1, 10), 2), "tokens must be a 1-D integer array"),
        ((np.arange(10), 0), "length must be an integer >= 1"),
        ((np.arange(10), 2, 0), "stride must be an integer >= 1"),
        ((np.array([-1, 2, 3]), 2), "non-negative"),
    ],
)
def test_windows_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        windows(*args)
