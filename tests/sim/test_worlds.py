"""Tests of sim.worlds and sim.noise: truth equals BoTorch's, noise is separate."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from botorch.test_functions import Branin, Hartmann

from instruments.driver import OutputSpec, ParameterLimit
from models.errors import InvalidCampaignError, ParameterLimitError, RegistryError
from sim.noise import GaussianNoise, seed_from_name
from sim.worlds import BoTorchWorld, World, get_world, register_world, world_names

CASES = [
    ("hartmann6", lambda: Hartmann(dim=6, negate=True)),
    ("branin", lambda: Branin(negate=True)),
]


def _random_points(world: BoTorchWorld, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = world.bounds
    return lo + (hi - lo) * rng.random((n, world.dim))


def test_registry_lists_builtin_worlds() -> None:
    assert {"hartmann6", "branin"} <= set(world_names())


def test_unknown_world_raises_registry_error_listing_known() -> None:
    with pytest.raises(RegistryError, match="hartmann6"):
        get_world("no-such-world")


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(RegistryError, match="already registered"):

        @register_world("branin")
        class Again(World):  # pragma: no cover - never instantiated
            def parameters(self) -> list[ParameterLimit]:
                return []

            def outputs(self) -> list[OutputSpec]:
                return []

            def evaluate_true(self, params: Mapping[str, float]) -> dict[str, float]:
                return {}


@pytest.mark.parametrize(("name", "make"), CASES)
def test_truth_equals_botorch_at_random_points(name: str, make: object) -> None:
    world = get_world(name)
    assert isinstance(world, BoTorchWorld)
    problem = make()  # type: ignore[operator]
    x = _random_points(world, 200, seed=0)
    expected = problem(torch.from_numpy(x), noise=False).numpy()
    # BoTorch's evaluate_true is the un-negated function; forward(noise=False) negates.
    np.testing.assert_allclose(
        expected, -problem.evaluate_true(torch.from_numpy(x)).numpy(), rtol=0, atol=0
    )
    np.testing.assert_allclose(world.evaluate_array(x), expected, rtol=1e-12, atol=1e-12)
    for row, y in zip(x[:20], expected[:20], strict=True):
        point = dict(zip(world.parameter_names, row.tolist(), strict=True))
        assert world.evaluate_true(point) == pytest.approx({"y": float(y)}, rel=1e-12)


@pytest.mark.parametrize(("name", "make"), CASES)
def test_optimum_matches_botorch(name: str, make: object) -> None:
    world = get_world(name)
    problem = make()  # type: ignore[operator]
    opt = world.optimum
    assert opt is not None
    assert opt.direction == "maximize"
    assert opt.value == pytest.approx(float(problem.optimal_value))
    assert world.optimal_value == opt.value
    assert len(world.optimizers) == problem.optimizers.shape[0]
    for point in world.optimizers:
        truth = world.evaluate_true(point)["y"]
        assert truth == pytest.approx(opt.value, abs=1e-4)
        x = torch.tensor([list(point.values())], dtype=torch.float64)
        assert truth == pytest.approx(float(problem(x, noise=False)[0]), rel=1e-12)
    # The optimum is the best value: random points never beat it.
    assert isinstance(world, BoTorchWorld)
    assert world.evaluate_array(_random_points(world, 2000, seed=1)).max() <= opt.value + 1e-4


@pytest.mark.parametrize(("name", "make"), CASES)
def test_constants_are_botorchs_to_the_bit(name: str, make: object) -> None:
    """The NumPy copies of BoTorch's constants (kept so that a simulated server need not
    import torch) equal the buffers and optimum of BoTorch's own instance exactly."""
    world = get_world(name)
    assert isinstance(world, BoTorchWorld)
    problem = make()  # type: ignore[operator]
    np.testing.assert_array_equal(world.bounds, problem.bounds.double().numpy())
    known = world.known_optimum()
    assert known is not None
    assert known[0] == float(problem.optimal_value)
    assert known[1] == problem.optimizers.double().tolist()
    if name == "hartmann6":
        for attr in ("ALPHA", "A", "P"):
            np.testing.assert_array_equal(
                getattr(world, attr), getattr(problem, attr).double().numpy()
            )
    assert type(world.problem) is type(problem)  # built on demand


def test_branin_currin_constants_are_botorchs() -> None:
    from botorch.test_functions.multi_objective import BraninCurrin

    world = get_world("branin-currin")
    problem = BraninCurrin(negate=True)
    assert world.ref_point == [-float(v) for v in problem._ref_point]  # type: ignore[attr-defined]
    assert world.max_hv == float(problem._max_hv)  # type: ignore[attr-defined]


def test_building_a_builtin_world_imports_neither_torch_nor_other_worlds() -> None:
    """A simulated server hosting Branin or Hartmann imports neither torch nor BoTorch, nor
    the modules (pymatgen) of the worlds it does not host."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sim.drivers import load_builtin_drivers, make_driver\n"
        "from models.instrument_spec import SimulatedInstrumentSpec\n"
        "load_builtin_drivers()\n"
        "for world in ('branin', 'hartmann6', 'branin-currin'):\n"
        "    spec = SimulatedInstrumentSpec(driver='objective-station', world=world)\n"
        "    make_driver('s', spec).describe()\n"
        "print(sorted(m for m in ('torch', 'botorch', 'pymatgen', 'sim.alab.world')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_known_maxima() -> None:
    assert get_world("hartmann6").optimal_value == pytest.approx(3.32237)
    assert get_world("branin").optimal_value == pytest.approx(-0.397887)


def test_bounds_and_outputs() -> None:
    h = get_world("hartmann6")
    assert [(p.name, p.minimum, p.maximum) for p in h.parameters()] == [
        (f"x{i}", 0.0, 1.0) for i in range(1, 7)
    ]
    b = get_world("branin")
    assert [(p.name, p.minimum, p.maximum) for p in b.parameters()] == [
        ("x1", -5.0, 10.0),
        ("x2", 0.0, 15.0),
    ]
    assert [o.name for o in b.outputs()] == ["y"]


def test_output_option_renames_the_output() -> None:
    w = get_world("branin", output="score")
    assert [o.name for o in w.outputs()] == ["score"]
    assert set(w.evaluate_true({"x1": 0.0, "x2": 0.0})) == {"score"}
    opt = w.optimum
    assert opt is not None
    assert opt.output == "score"


def test_bad_options_name_the_key() -> None:
    with pytest.raises(InvalidCampaignError) as info:
        get_world("hartmann6", colour="blue")
    assert info.value.problems[0].key == "options.colour"
    with pytest.raises(InvalidCampaignError) as info:
        get_world("branin", output=3)
    assert info.value.problems[0].key == "options.output"


def test_limits_option_narrows_and_rate_limits_the_declared_inputs() -> None:
    w = get_world("branin", limits={"x1": {"maximum": 5, "max_rate_per_s": 0.5}})
    x1, x2 = w.parameters()
    assert (x1.minimum, x1.maximum, x1.max_rate_per_s) == (-5.0, 5.0, 0.5)
    assert (x2.minimum, x2.maximum, x2.max_rate_per_s) == (0.0, 15.0, None)
    plain = get_world("branin")
    point = {"x1": 8.0, "x2": 1.0}  # outside the declared limit: the truth is still there
    assert w.evaluate_true(point) == plain.evaluate_true(point)


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ({"x9": {"maximum": 1}}, "options.limits.x9"),
        ({"x1": {"maximum": 11}}, "options.limits.x1"),
        ({"x1": {"minimum": 3, "maximum": 2}}, "options.limits.x1"),
        ({"x1": {"step": 1}}, "options.limits.x1.step"),
        ({"x1": {"max_rate_per_s": "fast"}}, "options.limits.x1.max_rate_per_s"),
        ({"x1": {"max_rate_per_s": -1}}, "options.limits.x1.max_rate_per_s"),
        ({"x1": 3}, "options.limits.x1"),
        (["x1"], "options.limits"),
    ],
)
def test_bad_limits_name_the_key(limits: object, key: str) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        get_world("branin", limits=limits)
    assert info.value.problems[0].key == key


def test_missing_or_bad_input_is_refused() -> None:
    w = get_world("branin")
    with pytest.raises(ParameterLimitError, match="x2"):
        w.evaluate_true({"x1": 0.0})
    with pytest.raises(ParameterLimitError, match="x1"):
        w.evaluate_true({"x1": "a", "x2": 0.0})


def test_out_of_bounds_points_are_still_evaluated() -> None:
    # Refusing out-of-range points is the server's job, not the world's.
    w = get_world("hartmann6")
    assert np.isfinite(w.evaluate_true({f"x{i}": 2.0 for i in range(1, 7)})["y"])


def test_gaussian_noise_has_configured_std_and_is_reproducible() -> None:
    noise = GaussianNoise(0.3, seed=7)
    draws = noise.sample(20000)
    # Std of the sample std is about 0.3 / sqrt(2 n) = 0.0015; allow ~5 sigma.
    assert draws.std() == pytest.approx(0.3, abs=0.008)
    assert abs(draws.mean()) < 5 * 0.3 / np.sqrt(draws.size)
    np.testing.assert_array_equal(GaussianNoise(0.3, seed=7).sample(20000), draws)
    assert not np.array_equal(GaussianNoise(0.3, seed=8).sample(100), draws[:100])
    assert noise.uncertainty("y") == 0.3


def test_noise_is_separate_from_truth() -> None:
    world = get_world("hartmann6")
    noise = GaussianNoise(0.1, seed=3)
    point = {f"x{i}": 0.5 for i in range(1, 7)}
    truth = world.evaluate_true(point)
    noisy = [noise.apply(truth)["y"] for _ in range(5000)]
    # The truth does not change by being measured, and the residuals have the noise std.
    assert world.evaluate_true(point) == truth
    residuals = np.array(noisy) - truth["y"]
    assert residuals.std() == pytest.approx(0.1, abs=0.006)
    assert abs(residuals.mean()) < 5 * 0.1 / np.sqrt(residuals.size)


def test_zero_noise_returns_truth() -> None:
    noise = GaussianNoise(0.0, seed=1)
    assert noise.apply({"y": 1.25}) == {"y": 1.25}


def test_negative_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="noise std"):
        GaussianNoise(-1.0)


def test_seed_from_name_is_stable() -> None:
    assert seed_from_name("station-a") == 8943388313929657049  # same on every run
    assert seed_from_name("station-a") != seed_from_name("station-b")
    assert 0 <= seed_from_name("x") < 2**63
