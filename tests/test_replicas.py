"""K seeds in one run (`num_seeds`): equal to K single runs, reproducible, exactly resumable.

The command-line runs share `test_reproducibility`'s tiny config (8 steps,
checkpoints every 2). Replica k is compared with the single run of seed k:
its train and eval lines and its final parameters, bit for bit in CPU's
`loop` layout, and within the bound that XLA's fusion of a K-step program
allows in the others (see `TOLERANCE`).
"""

import json
import os
import statistics
import subprocess

import jax
import numpy as np
import pytest
from test_reproducibility import (
    STEPS,
    assert_same_state,
    cli_args,
    final_state,
    private_cache_env,
    run_cli,
    wait_for_step,
)

from pix2pix_jax import config as config_lib
from pix2pix_jax import evaluate, predict, replicas
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError

K = 2
# Layouts that compile the K steps as one program (map, vmap, devices): over 8 steps of
# the tiny config, replica k and the single run of seed k differ by float rounding only.
TOLERANCE = dict(rtol=2e-3, atol=2e-4)


def lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def k_run(tmp_path_factory, data_dir):
    """An uninterrupted CLI run of K replicas (seeds 0 and 1): workdir, final state, lines."""
    workdir = str(tmp_path_factory.mktemp("k_run"))
    run_cli(workdir, data_dir, f"--config.num_seeds={K}", "--config.eval.best_metric=l1")
    step, state = final_state(workdir)
    assert step == STEPS
    return workdir, state, lines(workdir)


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory, data_dir):
    """The single runs of seeds 0 and 1: their workdirs, final states and lines."""
    runs = []
    for seed in range(K):
        workdir = str(tmp_path_factory.mktemp(f"seed_{seed}"))
        run_cli(workdir, data_dir, f"--config.seed={seed}")
        runs.append((workdir, final_state(workdir)[1], lines(workdir)))
    return runs


def without_speed(record):
    return {k: v for k, v in record.items() if k not in ("images_per_second", "seed")}


def numbers(record):
    """The record's numeric values in key order (the split name dropped)."""
    return [v for k, v in without_speed(record).items() if k != "split"]


def test_each_replica_is_bitwise_the_single_run_of_its_seed(k_run, single_runs):
    """CPU's layout (`loop`) runs each replica with the single run's own arithmetic."""
    _, state, k_lines = k_run
    for seed, (_, single_state, single_lines) in enumerate(single_runs):
        mine = [without_speed(r) for r in k_lines if r.get("seed") == seed]
        assert mine == [without_speed(r) for r in single_lines]  # every loss and eval
        assert_same_state(replicas.unstack(state["state"], seed), single_state["state"])
        assert state["data"]["replicas"][seed] == single_state["data"]  # same data position


def test_the_initial_states_are_bitwise_those_of_the_single_runs(tiny_config):
    from pix2pix_jax import assembly

    tiny_config.num_seeds = K
    setup = assembly.make_setup(tiny_config, 10)
    stacked = assembly.initial_states(tiny_config, setup)
    for k in range(K):
        single = replicas.replica_config(tiny_config, k)
        expected = assembly.initial_state(single, assembly.make_setup(single, 10))
        assert_same_state(replicas.unstack(stacked, k), expected)


def test_eval_lines_carry_seeds_and_an_aggregate(k_run):
    workdir, _, k_lines = k_run
    evals = [r for r in k_lines if r.get("split") == "val" and r["step"] == STEPS]
    per_seed = {r["seed"]: r for r in evals if r["seed"] != "all"}
    (aggregate,) = [r for r in evals if r["seed"] == "all"]
    assert sorted(per_seed) == list(range(K))
    for name in ("l1", "psnr", "ssim"):
        values = [per_seed[s][name] for s in range(K)]
        assert aggregate[f"{name}_mean"] == pytest.approx(statistics.fmean(values))
        assert aggregate[f"{name}_std"] == pytest.approx(statistics.stdev(values))
        half = 12.7062047 * statistics.stdev(values) / np.sqrt(K)  # t(0.975, df=1)
        assert aggregate[f"{name}_ci95_high"] == pytest.approx(
            statistics.fmean(values) + half, rel=1e-4
        )
    assert all("seed" in r for r in k_lines)
    for seed in range(K):
        assert os.listdir(os.path.join(workdir, "samples", f"seed_{seed}"))
        assert os.path.isdir(os.path.join(workdir, "checkpoints_best", f"seed_{seed}"))


def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(k_run, tmp_path, data_dir):
    workdir = str(tmp_path)
    args = cli_args(workdir, data_dir, f"--config.num_seeds={K}", "--config.eval.best_metric=l1")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=private_cache_env(tmp_path))  # fmt: skip
    wait_for_step(process, workdir, 5)
    process.kill()
    process.wait()
    assert final_state(workdir)[0] < STEPS  # it really was interrupted
    run_cli(workdir, data_dir, f"--config.num_seeds={K}", "--config.eval.best_metric=l1")
    step, state = final_state(workdir)
    assert step == STEPS
    assert_same_state(k_run[1], state)
    train = [without_speed(r) for r in lines(workdir) if "split" not in r]
    assert train == [without_speed(r) for r in k_run[2] if "split" not in r]


def test_resuming_with_another_num_seeds_stops_in_one_line(k_run, tmp_path, data_dir):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(k_run[0], workdir)
    result = subprocess.run(
        cli_args(workdir, data_dir, "--config.num_seeds=3"), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "num_seeds=3 does not match" in result.stderr and "2 replica(s)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["num_seeds"] == K  # nothing overwritten


def test_evaluate_and_predict_take_a_replica(k_run, single_runs, tmp_path):
    workdir = k_run[0]
    record, _ = evaluate.evaluate(workdir, "val", seed_index=1, progress=False)
    (line,) = [r for r in k_run[2] if r.get("seed") == 1 and r.get("step") == STEPS and "l1" in r]
    assert record["seed"] == 1 and record["l1"] == pytest.approx(line["l1"], rel=1e-6)
    aggregate, folder = evaluate.evaluate_replicas(workdir, "val", progress=False)
    assert aggregate["seeds"] == [0, 1] and sorted(os.listdir(folder)) == [
        "metrics.json", "seed_0", "seed_1"
    ]  # fmt: skip
    assert aggregate["l1_mean"] == pytest.approx(
        statistics.fmean(aggregate["per_seed"][s]["l1"] for s in ("0", "1"))
    )
    image = np.zeros((32, 32, 3), np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "in.png")
    outs = [str(tmp_path / f"out{k}") for k in range(K)]
    for k in range(K):
        predict.predict(workdir, str(tmp_path / "in.png"), outs[k], seed_index=k, progress=False)
    a, b = (np.asarray(Image.open(os.path.join(o, "in.png"))) for o in outs)
    assert not np.array_equal(a, b)  # two different models
    with pytest.raises(ConfigError, match="seed_index=2"):
        evaluate.evaluate(workdir, "val", seed_index=2, progress=False)


def test_the_devices_layout_places_one_replica_per_device(k_run, tmp_path, data_dir):
    """Two CPU devices, one replica each at the whole batch: each equals the one-device run."""
    workdir = str(tmp_path)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    args = cli_args(workdir, data_dir, f"--config.num_seeds={K}", "--config.seeds_layout=devices")
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    train = [without_speed(r) for r in lines(workdir) if "split" not in r]
    expected = [without_speed(r) for r in k_run[2] if "split" not in r]
    for a, b in zip(train, expected, strict=True):
        np.testing.assert_allclose(numbers(a), numbers(b), **TOLERANCE)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_seeds", 0, "num_seeds must be a positive integer"),
        ("num_seeds", -1, "num_seeds must be a positive integer"),
        ("seeds_layout", "spread", "seeds_layout='spread' is not one of"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    config = default.get_config()
    config[field] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_devices_layout_needs_a_multiple_of_the_devices(monkeypatch):
    config = default.get_config()
    config.num_seeds, config.seeds_layout = 3, "devices"
    monkeypatch.setattr(jax, "local_device_count", lambda: 2)
    with pytest.raises(ConfigError, match="num_seeds=3 must be divisible by the 2 local devices"):
        replicas.check(config)


def test_t_quantile_matches_scipy():
    from scipy import stats

    for df in (1, 2, 3, 4, 7, 15, 30, 100):
        assert replicas.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-4)


def test_auto_layout():
    config = default.get_config()
    config.num_seeds = 4
    assert replicas.layout(config) == ("loop" if jax.default_backend() == "cpu" else "vmap")


def test_the_layouts_take_the_same_step(tiny_config):
    """map, vmap (the accelerators' default) and loop (CPU's) step the replicas alike."""
    from pix2pix_jax import assembly, benchmark, parallel

    tiny_config.num_seeds = K
    setup = assembly.make_setup(tiny_config, 10)
    host_state = assembly.initial_states(tiny_config, setup)
    rng = np.random.default_rng(0)
    batches = [benchmark.random_batch(tiny_config, rng) for _ in range(K)]
    outcomes = []
    for how in ("map", "vmap", "loop"):
        tiny_config.seeds_layout = how
        place = replicas.placement(tiny_config, setup)
        batch = jax.device_put(place.batch(batches), parallel.device_sharding())
        state, step_metrics = place.train_step()(place.to_devices(host_state), batch)
        outcomes.append((place.to_host(state), place.metrics(step_metrics)))
    (map_state, map_metrics) = outcomes[0]
    assert map_metrics[0] != map_metrics[1]  # two different replicas
    for other_state, other_metrics in outcomes[1:]:
        for a, b in zip(map_metrics, other_metrics, strict=True):
            np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-4, atol=1e-5)
        for x, y in zip(jax.tree.leaves(map_state), jax.tree.leaves(other_state), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)
