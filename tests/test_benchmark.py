"""The benchmark command runs and reports what it promises (not how fast)."""

import json
import os
import subprocess
import sys

TINY = [
    "--config.dataset.name=synthetic_facades/res32_small",
    "--config.image_size=32",
    "--config.batch_size=2",
    "--config.model.ngf=4",
    "--config.model.ndf=4",
]


def run_benchmark(data_dir, *args):
    command = [sys.executable, "-m", "pix2pix_jax.benchmark", *TINY, *args]
    command += [f"--config.dataset.data_dir={data_dir}", "--steps=2", "--warmup=1"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_step_mode_reports_timings_memory_and_the_peer_ratio(data_dir, tmp_path):
    peer = tmp_path / "peer.py"  # a stand-in with the peer's command line and output
    peer.write_text(
        "import argparse, json\n"
        "p = argparse.ArgumentParser()\n"
        "for a in ('--batch', '--size', '--steps', '--warmup'): p.add_argument(a, type=int)\n"
        "a = p.parse_args()\n"
        "print(json.dumps({'impl': 'torch', 'batch': a.batch, 'size': a.size, 'step_ms': 500.0}))\n"
    )
    records = run_benchmark(data_dir, "--repeats=2", f"--peer={peer}")
    ours = [r for r in records if r.get("impl") == "pix2pix_jax"]
    assert len(ours) == 2 and "compile_seconds" in ours[0]
    for record in ours:
        assert record["step_ms"] > 0 and record["peak_host_memory_mb"] > 0
        assert record["images_per_second"] == 2 / (record["step_ms"] / 1000)
        assert (record["generator"], record["image_size"], record["batch"]) == ("unet", 32, 2)
    peers = [r for r in records if "peer" in r]
    assert [(p["batch"], p["size"]) for p in peers] == [(2, 32), (2, 32)]
    summary = records[-1]
    assert summary["summary"] == "step" and summary["peer_images_per_second"] == 4.0
    assert summary["ratio_vs_peer"] == summary["images_per_second"] / 4.0
    assert summary["peer_comparable"] is False  # unet with 4 filters is not the peer's model


def test_input_mode_times_the_pipeline(data_dir):
    records = run_benchmark(data_dir, "--mode=input", "--repeats=1")
    summary = records[-1]
    assert summary["summary"] == "input" and summary["images_per_second"] > 0
    assert summary["images_per_second_per_worker"] == summary["images_per_second"]


def test_input_mode_on_generated_jpegs(data_dir):
    records = run_benchmark(data_dir, "--mode=input", "--repeats=1", "--synthetic_jpegs=6")
    assert records[-1]["summary"] == "input"
    assert any(r.get("dataset") == "folder" for r in records)


def test_a_bad_peer_is_reported(data_dir, tmp_path):
    peer = tmp_path / "broken.py"
    peer.write_text("raise SystemExit('no torch here')\n")
    command = [sys.executable, "-m", "pix2pix_jax.benchmark", *TINY, f"--peer={peer}"]
    command += [f"--config.dataset.data_dir={data_dir}", "--steps=1", "--warmup=0", "--repeats=1"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
    assert result.returncode != 0
    assert "pix2pix_jax.benchmark: error: peer" in result.stderr
    assert "no torch here" in result.stderr


def test_seeds_mode_times_one_k_run_against_k_single_runs(data_dir):
    records = run_benchmark(
        data_dir, "--mode=seeds", "--config.num_seeds=2", "--config.num_train_steps=2",
        "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2",
        "--config.eval.batch_size=8",
    )  # fmt: skip
    runs = [r for r in records if r.get("mode") == "seeds"]
    assert [(r["run"], r.get("seed")) for r in runs] == [("together", None), ("single", 0),
                                                         ("single", 1)]  # fmt: skip
    assert all(r["seconds"] > 0 and r["peak_host_memory_mb"] > 100 for r in runs)
    summary = records[-1]
    assert summary["summary"] == "seeds" and summary["num_seeds"] == 2
    assert summary["sequential_seconds"] == runs[1]["seconds"] + runs[2]["seconds"]
    assert summary["ratio"] == summary["together_seconds"] / summary["sequential_seconds"]


def test_compiled_memory_counts_arguments_outputs_temporaries_less_aliases():
    import jax
    import jax.numpy as jnp

    from pix2pix_jax import benchmark

    x = jax.ShapeDtypeStruct((256, 256), jnp.float32)  # 0.25 MiB
    kept = benchmark.compiled_memory_mb(jax.jit(lambda a: a * 2).lower(x).compile())
    donated = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
    donated = benchmark.compiled_memory_mb(donated)
    if not kept:  # a backend without memory analysis reports nothing
        return
    assert kept["compiled_argument_mb"] == kept["compiled_output_mb"] == 0.25
    assert kept["compiled_peak_mb"] >= 0.5
    assert donated["compiled_peak_mb"] == kept["compiled_peak_mb"] - 0.25  # the output reuses x
