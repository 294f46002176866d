"""Issue 8's GPU benchmarks run end to end at tiny sizes on the CPU, so they cannot rot unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _refused(args: list[str]) -> str:
    """The error output of a bench run that must fail."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.stderr


@pytest.mark.slow
def test_train_throughput_quick_writes_every_figure(tmp_path: Path) -> None:
    _run(["bench/train_throughput.py", "--device", "cpu", "--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    for key in ("baseline_train_samples_per_s", "crossglg_train_samples_per_s", "eval_samples_per_s"):
        assert result[key] and all(v > 0 for v in result[key].values()), key
    assert result["numerics"]["passed"] is True
    assert result["short_training_accuracy"]["seeds"] == 2
    assert set(result["compare_modes_crossglg"]) >= {"auto+unfused", "auto+bmm"}
    assert "| crossglg |" in (tmp_path / "train_throughput.md").read_text()
    rows = result["profile_top_kernels"]["rows"]
    categories = [r for r in rows if r["kernel"].startswith("[")]
    assert categories and abs(sum(r["share"] for r in categories) - 1.0) < 0.01  # the families cover all time


@pytest.mark.slow
def test_train_throughput_prewarm_compiles_each_configuration_first(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--quick", "--sections", "train", "eval", "--variants", "baseline"]
    out = _run(["bench/train_throughput.py", *args, "--prewarm", "300", "--out", str(tmp_path)])
    # one job per timed configuration: baseline at batch 4, eval at batch 8
    assert "prewarm: 2 configurations compiled in parallel" in out and "(0 not finished)" in out
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    assert result["baseline_train_samples_per_s"]["4"] > 0 and result["eval_samples_per_s"]["8"] > 0


@pytest.mark.slow
def test_train_throughput_profiles_a_compare_setting(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--quick", "--sections", "profile", "evalprofile"]
    args += ["--profile-mode", "auto+unfused", "--profile-ops"]
    out = _run(["bench/train_throughput.py", *args, "--prewarm", "300", "--out", str(tmp_path)])
    assert "prewarm: 2 configurations compiled in parallel" in out and "(0 not finished)" in out
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    for key in ("profile_top_kernels", "eval_profile_top_kernels"):
        assert result[key]["compile"] == "auto+unfused" and result[key]["rows"][-1]["kernel"] == "TOTAL"
    ops = result["profile_aten_ops"]["rows"]  # on the CPU: the ATen ops outside Inductor's kernels
    assert ops and all(row["op"].startswith("aten::") and row["ms_per_step"] > 0 for row in ops)
    assert any("[" in row["input_shapes"] for row in ops)
    assert "ATen ops by the GPU time they launched themselves" in out


@pytest.mark.slow
def test_train_throughput_deadline_skips_the_rest_and_still_writes_the_table(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--quick", "--sections", "train", "eval", "--variants", "baseline"]
    out = _run(["bench/train_throughput.py", *args, "--deadline", "0.001", "--out", str(tmp_path)])
    assert "skipped train baseline 4: past --deadline" in out
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    assert set(result["skipped"]) == {"train baseline 4", "eval 8"}
    assert "baseline_train_samples_per_s" not in result
    assert "not timed: train baseline 4" in (tmp_path / "train_throughput.md").read_text()


def test_schedule_skips_unwarmed_configurations_and_everything_past_the_deadline() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import Schedule

    schedule = Schedule(deadline_s=3600, unwarmed={"compare auto+tile"})
    assert schedule.runs("compare auto") and not schedule.runs("compare auto+tile")
    schedule.deadline_s = 1e-9
    assert not schedule.runs("eval 256")
    assert schedule.skipped == {
        "compare auto+tile": "its --prewarm compile did not finish",
        "eval 256": "past --deadline 0 s",
    }


def test_step_time_fit_recovers_the_fixed_and_per_sample_cost() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import step_time_fit, summary_table

    # steps of 4 ms + 0.15 ms per sample: 64 → 13.6 ms, 128 → 23.2 ms, 256 → 42.4 ms
    rates = {str(b): b / (4.0 + 0.15 * b) * 1e3 for b in (64, 128, 256)}
    fixed, per_sample = step_time_fit(rates)
    assert fixed == pytest.approx(4.0) and per_sample == pytest.approx(0.15)
    assert step_time_fit({"128": 5000.0}) is None  # one batch size: no line
    result = {
        "gpu": "test",
        "torch": "x",
        "compile_mode": "auto",
        "flops_per_sample": {"baseline": 1e10, "crossglg": 1e10},
        "crossglg_train_samples_per_s": rates,
        "ceilings": {"copy_tb_s": 4.0},
    }
    # the bound at any batch is 1 / 0.15 ms; 0.15 ms at 4 TB/s is 600 MB per sample
    assert "| ∞ | 6,667 (bound at any batch)" in summary_table(result, cuda=True)
    assert "≈ 600 MB per sample" in summary_table(result, cuda=True)


@pytest.mark.slow
def test_ddp_throughput_runs_one_and_two_processes(tmp_path: Path) -> None:
    args = ["--gpus", "1", "2", "--batch", "4", "--steps", "2", "--warmup", "1", "--samples", "64"]
    _run(["bench/ddp_throughput.py", *args, "--classes", "5", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "ddp_throughput.json").read_text())
    assert [r["gpus"] for r in result["runs"]] == [1, 2]
    assert all(r["samples_per_s"] > 0 for r in result["runs"])
    assert "× one GPU" in result["table"]


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_sagc_attention_tuning_quick_picks_a_checked_launch_per_width(tmp_path: Path) -> None:
    out_file = tmp_path / "tuning.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = "bench/sagc_attention_tuning.py"
    args = [sys.executable, script, "--device", "cpu", "--quick", "--out", str(out_file)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    widths = {(row["kind"], row["columns"]) for row in result["rows"]}
    assert widths == {(k, n) for k in ("forward", "backward") for n in (40, 64)}
    for row in result["rows"]:
        assert 0 < row["ms_tuned"] <= row["ms_before"], row
        assert len(row["timed_launches"]) > 1, row  # the search tried more than the starting launch
        if "check" in row:
            errors = [row["check"][k] for k in ("z", "grad_qk", "grad_topology", "grad_y")]
            assert row["check"]["used_kernels"] and max(errors) < 2e-3, row["check"]
    assert "TUNED_FORWARD = {40: Launch(" in proc.stdout


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_sagc_attention_tuning_eval_sweeps_the_kernel_with_its_epilogue(tmp_path: Path) -> None:
    out_file = tmp_path / "eval.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = "bench/sagc_attention_tuning.py"
    args = [sys.executable, script, "--device", "cpu", "--quick", "--eval", "--out", str(out_file)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    assert result["batch"] == 256  # the eval batch unless --batch is given
    assert {(row["kind"], row["columns"]) for row in result["rows"]} == {("eval", 40), ("eval", 64)}
    for row in result["rows"]:
        assert 0 < row["ms_tuned"] <= row["ms_before"] and len(row["timed_launches"]) > 1, row
        assert row["check"]["used_kernels"] and row["check"]["out"] < 2e-3, row["check"]
    assert result["eval_ms_per_forward"]["tuned"] == round(sum(r["ms_tuned"] for r in result["rows"]), 3)
    assert "TUNED_EVAL_FORWARD = {40: Launch(" in proc.stdout


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_sagc_inference_tuning_quick_times_both_paths_per_shape(tmp_path: Path) -> None:
    out_file = tmp_path / "inference.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    args = [
        sys.executable,
        "bench/sagc_inference_tuning.py",
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out_file),
    ]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    assert sorted((r["shape"]["C"], r["shape"]["C_out"]) for r in result["rows"]) == [(64, 40), (128, 64)]
    for row in result["rows"]:
        assert row["ms_two_step"] > 0 and 0 < row["ms_one_kernel_tuned"] <= row["ms_one_kernel_default"], row
        assert len(row["timed_launches"]) > 1, row
        assert row["check"]["used_kernels"] and row["check"]["z"] < 2e-3, row["check"]
    totals = result["ms_per_eval_forward"]
    assert totals["ms_two_step"] == round(sum(r["ms_two_step"] for r in result["rows"]), 3)
    assert "| 128 → 64 | 1 |" in proc.stdout


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_sagc_inference_tuning_isolates_each_shape_in_a_child_process(tmp_path: Path) -> None:
    # the way it runs on CUDA: one process per shape, so a launch that kills the GPU context (as
    # pack 4 did on an H100) loses that shape only; a child that gives no row is listed as failed
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = [sys.executable, "bench/sagc_inference_tuning.py", "--device", "cpu", "--quick", "--isolate"]
    out_file = tmp_path / "isolated.json"
    proc = subprocess.run(
        [*script, "--out", str(out_file)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    assert result["failed"] == [] and len(result["rows"]) == 2
    assert all(r["check"]["z"] < 2e-3 for r in result["rows"])
    out_file = tmp_path / "timed_out.json"
    proc = subprocess.run(
        [*script, "--shape-timeout", "1", "--out", str(out_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    assert result["rows"] == [] and len(result["failed"]) == 2
    assert "not tuned: [5, 25, 96, 128, 64, 3]: no result in 1 s" in proc.stdout


def test_batchnorm_bandwidth_quick_times_every_recorded_call(tmp_path: Path) -> None:
    from torch import nn

    from dataspec import load_spec
    from trainer.models.crossglg import CrossGLG
    from trainer.models.infogcn import SelfAttentionGraphConv

    out = _run(["bench/batchnorm_bandwidth.py", "--device", "cpu", "--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "batchnorm_bandwidth.json").read_text())
    model = CrossGLG("infogcn", 100, load_spec("ntu120"), g2l=True, l2g=True)
    norms = nn.modules.batchnorm._BatchNorm | nn.LayerNorm
    n_norms = sum(isinstance(m, norms) for m in model.modules())
    # with fused_norm, SA-GC's LayerNorm runs inside its query/key op, not as a module call
    n_norms -= sum(isinstance(m, SelfAttentionGraphConv) and m.fused_norm for m in model.modules())
    rows = result["rows"]
    assert sum(r["calls_per_step"] for r in rows) == n_norms  # every norm runs once per forward
    assert {r["module"] for r in rows} == {"BatchNorm1d", "BatchNorm2d", "LayerNorm"}
    assert all(r["eager_ms"] > 0 and r["floor_ms"] > 0 for r in rows)
    # The recorded layouts are kept: channels-last rows, and the TCN's entry BN sees a channel slice.
    four_d = [r for r in rows if r["module"] == "BatchNorm2d"]
    assert all(r["stride"][1] == 1 for r in four_d)
    assert any(r["stride"][2] != r["shape"][1] * r["shape"][3] for r in four_d)
    total = sum(r["eager_ms"] * r["calls_per_step"] for r in rows)
    assert result["per_step_ms"]["all"]["eager_ms"] == pytest.approx(total, rel=1e-3, abs=1e-3)
    assert "| **per step, all norms** |" in out


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_batchnorm_bandwidth_times_the_candidate_kernels_where_they_apply(tmp_path: Path) -> None:
    # Triton's interpreter runs the candidate BatchNorm kernels on fp16 CPU tensors (~40 s).
    args = ["--device", "cpu", "--quick", "--modes", "kernels", "--dtype", "float16", "--out", str(tmp_path)]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "bench/batchnorm_bandwidth.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "batchnorm_bandwidth.json").read_text())
    for row in result["rows"]:
        timed = row["kernels_ms"] is not None
        assert timed == (row["module"] == "BatchNorm2d"), row  # BatchNorm2d only, every one of them
    assert result["per_step_ms"]["BatchNorm2d"]["kernels_ms"] > 0
    assert result["per_step_ms"]["all"]["kernels_ms"] is None


def test_inductor_bandwidth_report_keeps_each_graphs_last_call_and_rates_it() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from inductor_bandwidth import parse_report, summarise

    def block(graph: str, rows: list[tuple[float, float, str]]) -> str:
        lines = ["====================", f"TRITON KERNELS BANDWIDTH INFO ({graph})"]
        lines += [
            f"{ms:.3f}ms    \t{gb:.3f} GB \t {gb / ms * 1e3:7.2f}GB/s \t 50.00% \t {n}" for ms, gb, n in rows
        ]
        return "\n".join([*lines, f"SUMMARY ({graph})", "1.00ms   \t 1.00 GB\t 1000.00GB/s", ""])

    text = "\n".join(
        [
            block("/tmp/fwd.py", [(9.0, 9.0, "stale_first_call")]),  # replaced by the graph's next call
            block("/tmp/fwd.py", [(1.0, 2.0, "triton_red_fused_bn"), (0.5, 0.5, "triton_poi_fused_relu")]),
            block("/tmp/bwd.py", [(2.0, 0.4, "triton_red_fused_bn_backward")]),
        ]
    )
    graphs = parse_report(text)
    assert sorted(graphs) == ["/tmp/bwd.py", "/tmp/fwd.py"]
    assert [k["kernel"] for k in graphs["/tmp/fwd.py"]] == ["triton_red_fused_bn", "triton_poi_fused_relu"]
    s = summarise(graphs, copy_tb_s=4.0)
    assert s["kernels"] == 3 and s["ms"] == 3.5 and s["gb"] == 2.9
    assert s["floor_ms"] == round(2.9 / 4.0, 3)  # GB / (TB/s) = ms
    # at 4 TB/s: bn 2 GB in 1 ms = 50% (bucket "< 75%"), relu 25% ("< 50%"), bn backward 5% ("< 25%")
    assert s["time_by_rate"] == {"< 25%": 2.0, "< 50%": 0.5, "< 75%": 1.0, ">= 75%": 0.0}
    assert s["slowest"][0]["kernel"] == "triton_red_fused_bn_backward"  # loses 1.9 ms against the rate
    big = summarise(graphs, copy_tb_s=4.0, large_gb=0.45)["large"]  # bn and relu, not bn backward
    assert (
        big["kernels"] == 2
        and big["ms"] == 1.5
        and big["gb"] == 2.5
        and big["share_of_rate"] == round(2.5 / 4 / 1.5, 3)
    )


def test_profiled_kernels_join_inductors_byte_counts_per_launch() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from types import ModuleType, SimpleNamespace

    from inductor_bandwidth import in_graph_rows, kernel_bytes, summarise

    def wrapper(**kernels: float) -> ModuleType:  # a graph wrapper module with its kernel objects bound
        module = ModuleType("wrapper")
        for name, gb in kernels.items():
            setattr(module, name, SimpleNamespace(inductor_meta={"kernel_num_gb": gb}))
        module.call = lambda args: None
        return module

    forward, backward, old = (
        wrapper(triton_red_bn_1=0.4, triton_poi_add_2=0.1),
        wrapper(triton_red_bn_1=0.2),
        wrapper(triton_poi_x_0=9.0),
    )
    kernel_module = ModuleType("kernel")  # a kernel's own module binds the same object again
    kernel_module.triton_poi_add_2 = forward.triton_poi_add_2
    gb = kernel_bytes([old, forward, backward, kernel_module], skip=frozenset({id(old)}))
    assert gb == {"triton_red_bn_1": [0.4, 0.2], "triton_poi_add_2": [0.1]}  # same name in two graphs
    # the profiler: bn launched twice per step (0.3 ms in all), add once, a GEMM without a byte count
    times = {"triton_red_bn_1": (0.3, 2), "triton_poi_add_2": (0.05, 1), "nvjet_sm90_gemm": (1.0, 4)}
    rows = in_graph_rows(times, gb)["profiled step"]
    assert sorted((r["kernel"], round(r["ms"], 3), round(r["gb"], 3)) for r in rows) == [
        ("triton_poi_add_2", 0.05, 0.1),
        ("triton_red_bn_1", 0.15, 0.3),
        ("triton_red_bn_1", 0.15, 0.3),
    ]
    s = summarise({"step": rows}, copy_tb_s=4.0)
    assert s["kernels"] == 3 and s["ms"] == 0.35 and s["gb"] == 0.7 and s["floor_ms"] == 0.175


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_saved_activations_counts_the_fp32_the_dtype_switches_remove(tmp_path: Path) -> None:
    results = {}
    for name, options in {
        "default": [],
        "fp32": ["norm_in_input_dtype=false", "stem_in_compute_dtype=false"],
    }.items():
        out_file = tmp_path / f"{name}.json"
        args = [
            sys.executable,
            "bench/saved_activations.py",
            "--quick",
            "--out",
            str(out_file),
            "--options",
            *options,
        ]
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        results[name] = json.loads(out_file.read_text())
    default, fp32 = results["default"], results["fp32"]
    assert fp32["options"]["norm_in_input_dtype"] is False
    # the layer norm's fp32 input copies (one per block) and the fp32 residual stream of blocks 1-3
    # (Inductor's decompositions run every BatchNorm in fp32 before fusion, hence the default's share)
    assert default["inductor_decompositions"] is True
    assert fp32["saved_units_by_dtype"]["float32"] > default["saved_units_by_dtype"]["float32"] + 5
    assert (
        fp32["forward_intermediate_units_by_dtype"]["float32"]
        > default["forward_intermediate_units_by_dtype"]["float32"] + 25
    )  # quick sizes, 2026-12-07: 549.9 against 493.9 units
    assert default["saved_units_total"] < fp32["saved_units_total"]
    # fewer saved bytes, a higher bound on the rate
    assert default["traffic_floor"]["samples_per_s_bound"] > fp32["traffic_floor"]["samples_per_s_bound"]


def test_saved_activations_traffic_floor_writes_and_reads_each_saved_byte_once() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from saved_activations import traffic_floor

    # 10 units of 1 MB over a batch of 2: 5 MB per sample, written and read at 1 TB/s: 10 µs
    floor = traffic_floor({"saved_units_total": 10.0, "unit_bytes": 1_000_000, "batch": 2}, copy_tb_s=1.0)
    assert floor["saved_mb_per_sample"] == 5.0
    assert floor["write_and_read_us_per_sample"] == 10.0
    assert floor["samples_per_s_bound"] == 100_000


def test_importing_saved_activations_leaves_the_environment_alone() -> None:
    # the script runs Triton's interpreter on the CPU; an import of its helpers must not turn it on
    # for the importing process and its children
    code = "import os, sys; sys.path.insert(0, 'bench'); import saved_activations;"
    code += "print(os.environ.get('TRITON_INTERPRET'))"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = [sys.executable, "-c", code]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "None"


def test_block_shapes_cover_the_nine_blocks_with_their_frames() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from block_throughput import block_shapes

    shapes = block_shapes(64)
    assert sum(s.count for s in shapes) == 9
    assert [(s.in_channels, s.out_channels, s.stride, s.frames) for s in shapes] == [
        (64, 64, 1, 64),
        (64, 128, 2, 64),
        (128, 128, 1, 32),
        (128, 256, 2, 32),
        (256, 256, 1, 16),
    ]


def test_block_throughput_quick_times_each_shape_per_setting(tmp_path: Path) -> None:
    out_file = tmp_path / "blocks.json"
    args = ["bench/block_throughput.py", "--quick", "--compare", "fused_norm", "--out", str(out_file)]
    printed = _run(args)
    result = json.loads(out_file.read_text())
    assert set(result["settings"]) == {"default", "fused_norm"}
    assert result["settings"]["fused_norm"]["options"] == {"fused_norm": True}
    for setting in result["settings"].values():
        assert len(setting["blocks"]) == 5
        assert all(b["train_ms"] > b["forward_ms"] > 0 for b in setting["blocks"])
        total = sum(b["train_ms"] * b["count"] for b in setting["blocks"])
        assert setting["blocks_train_ms_per_step"] == pytest.approx(total, rel=1e-3)
    assert "| 64->64/s1 T=16 | 3 |" in printed
    assert (tmp_path / "blocks.png").stat().st_size > 10_000  # per block and setting
    replot = _run(["bench/block_throughput.py", "--replot", "--out", str(out_file)])
    assert replot.strip() == f"wrote {tmp_path / 'blocks.png'}"


def test_block_throughput_rejects_a_malformed_option() -> None:
    stderr = _refused(["bench/block_throughput.py", "--quick", "--options", "fused_norm=maybe"])
    assert "bad option 'fused_norm=maybe'" in stderr


def test_block_throughput_splits_inductor_flags_from_block_options() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from block_throughput import inductor_options, parse_options
    from train_throughput import INDUCTOR_FLAGS

    block, config = inductor_options(parse_options(["remat", "merged_dilations=false"]))
    assert block == {"merged_dilations": False}
    assert config == INDUCTOR_FLAGS["remat"] and config["realize_reads_threshold"] > 4


@pytest.mark.slow
def test_inductor_bytes_counts_fewer_units_when_inductor_recomputes(tmp_path: Path) -> None:
    out_file = tmp_path / "bytes.json"
    printed = _run(
        ["bench/inductor_bytes.py", "--shapes", "1", "--settings", "default", "remat", "--out", str(out_file)]
    )
    result = json.loads(out_file.read_text())
    row = result["blocks"][0]
    assert row["label"] == "64->64/s1 T=64"
    assert row["default"]["units"] > 50 and row["default"]["kernels"] > 10
    # the finding the setting is for (torch 2.13, CPU): the stored fp32 BatchNorm-backward gradients go
    assert row["remat"]["units"] < row["default"]["units"]
    assert "| 64->64/s1 T=64 | 3 |" in printed
    assert (tmp_path / "bytes.png").stat().st_size > 10_000


# Compiles the whole model for the CPU: 211 s (2026-12-07). It once ran past 600 s inside the full suite:
# an earlier test's import had turned on Triton's interpreter (with it on, > 480 s).
@pytest.mark.slow
def test_inductor_bytes_counts_the_whole_training_step(tmp_path: Path) -> None:
    out_file = tmp_path / "model.json"
    args = ["--whole-model", "--settings", "default", "--out", str(out_file)]
    printed = _run(["bench/inductor_bytes.py", *args])
    row = json.loads(out_file.read_text())["whole_model"]["default"]
    # nine blocks of ~150 activation units (0.4 MB per sample each) move ~550 MB per sample
    assert row["mb_per_sample"] > 100 and row["kernels"] > 500
    assert f"| default | {row['mb_per_sample']} | {row['kernels']} |" in printed


def test_inductor_bytes_rejects_an_unknown_setting() -> None:
    stderr = _refused(["bench/inductor_bytes.py", "--settings", "default", "bogus"])
    assert "unknown setting(s) ['bogus']" in stderr


def test_op_roofline_quick_times_every_non_inductor_op_against_its_floor(tmp_path: Path) -> None:
    out_file = tmp_path / "ops.json"
    printed = _run(["bench/op_roofline.py", "--device", "cpu", "--quick", "--out", str(out_file)])
    result = json.loads(out_file.read_text())
    names = {row["op"] for row in result["ops"]}
    assert {"mixing GEMM (3 heads)", "attention (ours)", "dilated convs merged (cuDNN)"} <= names
    assert {"dilated conv d=1 (separate)", "dilated conv d=2 (separate)"} <= names  # candidates since merged
    # the two channel-doubling blocks carry both shortcut GEMMs, the others none
    shortcuts = [row["block"] for row in result["ops"] if "shortcut" in row["op"]]
    assert sorted(set(shortcuts)) == ["128->256/s2 T=8", "64->128/s2 T=16"] and len(shortcuts) == 4
    for row in result["ops"]:
        assert row["train_ms"] > 0 and row["train_gb"] > 0
        assert row["of_floor"] == pytest.approx(row["floor_ms"] / row["train_ms"], rel=0.02)
    # the step's total is the default path's ops; the fused candidate is timed beside them
    assert result["per_op"]["mixing + attention fused (candidate)"]["candidate"] is True
    assert result["per_op"]["dilated conv d=1 (separate)"]["candidate"] is True
    assert result["per_op"]["dilated convs merged (cuDNN)"]["candidate"] is False
    total = sum(v["train_ms_per_step"] for v in result["per_op"].values() if not v["candidate"])
    assert result["train_ms_per_step"] == pytest.approx(total, rel=1e-3)
    assert "| all (default path) |" in printed
    assert (tmp_path / "ops.png").stat().st_size > 10_000  # measured against floor, per op
    replot = _run(["bench/op_roofline.py", "--replot", "--out", str(out_file)])
    assert replot.strip() == f"wrote {tmp_path / 'ops.png'}"


def test_op_roofline_floors_count_each_gemm_operand_once_per_pass() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from op_roofline import linear_op

    op = linear_op("g", rows=10, k=4, n=6, device=torch.device("cpu"))
    # forward: x, W read and y written; backward: dout twice, x once, dx once, dW once
    assert op.forward_bytes == (10 * 4 + 10 * 6 + 6 * 4) * 2
    assert op.train_bytes == op.forward_bytes + (2 * 10 * 6 + 2 * 10 * 4 + 6 * 4) * 2
    assert op.train_flop == 6 * 10 * 4 * 6


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_sagc_mixed_training_tuning_quick_times_both_paths_and_checks_the_pick(tmp_path: Path) -> None:
    out_file = tmp_path / "mixed_training.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    args = [sys.executable, "bench/sagc_mixed_training_tuning.py", "--device", "cpu", "--quick"]
    args += ["--isolate"]  # each shape in a child process, as on CUDA
    proc = subprocess.run(
        [*args, "--out", str(out_file)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out_file.read_text())
    assert [r["shape"] for r in result["rows"]] == [[6, 24, 40], [5, 48, 80]]
    for row in result["rows"]:
        assert row["two_step_ms"] > 0 and row["candidate_tuned_ms"] > 0, row
        assert len(row["backward_costs"]) > 1, row  # the sweep timed several launches
        check = row["check"]
        assert check["used_kernels"] and max(v for k, v in check.items() if isinstance(v, float)) < 2e-3
    steps = result["ms_per_training_step"]
    assert steps["two_step_ms"] == round(sum(r["two_step_ms"] * r["count"] for r in result["rows"]), 3)
    assert "| per training step | 3 |" in proc.stdout
    assert "TUNED_BACKWARD = {(24, 40): MixedBackwardLaunch(pack=" in proc.stdout
    assert result["failed"] == [] and proc.stdout.count("ROW ") == 2  # one row from each child


def test_sagc_mixed_training_tuning_writes_its_tables_into_the_module(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from sagc_mixed_training_tuning import MODULE_PATH, table_literal, write_tables

    module = tmp_path / "module.py"
    module.write_text(MODULE_PATH.read_text())
    rows = [{"shape": [8, 64, 128], "launch": {"pack": 2, "num_warps": 8}}]
    literal = table_literal(rows, "launch", "MixedBackwardLaunch")
    assert literal == "{(64, 128): MixedBackwardLaunch(pack=2, num_warps=8)}"
    write_tables(module, {"TUNED_BACKWARD": literal})
    write_tables(module, {"TUNED_BACKWARD": literal})  # a second write replaces the first
    namespace: dict = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)  # noqa: S102 - our own module
    launch = namespace["TUNED_BACKWARD"][(64, 128)]
    assert (launch.pack, launch.num_warps, launch.groups) == (2, 8, 4)
    with pytest.raises(SystemExit, match="found 0 assignments of TUNED_SIDEWAYS"):
        write_tables(module, {"TUNED_SIDEWAYS": "{}"})


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_kernel_resources_compiles_the_launch_the_wrapper_makes_for_hopper_without_a_gpu() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from kernel_resources import block_rows
    from triton.runtime.jit import JITFunction

    run = JITFunction.run
    rows = block_rows({(4, 64, 64): 1}, sweep=False)
    assert JITFunction.run is run  # the interception ends with the measurement
    assert [(r["path"], r["kernel"]) for r in rows] == [
        ("two-step", "_sagc_forward_kernel"),
        ("two-step", "_sagc_backward_kernel"),
        ("fused mixing", "_sagc_mixed_forward_kernel"),
        ("fused mixing", "_sagc_mixed_backward_kernel"),
    ]
    for row in rows:
        assert "failed" not in row, row
        assert 0 < row["registers"] <= 255 and row["stack_bytes"] >= 0 and row["shared_bytes"] > 0
    from dataclasses import asdict

    from trainer.models.sagc_mixed_training import backward_launch

    assert rows[3]["launch"] == asdict(backward_launch(64, 64))  # the launch the wrapper passed


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_roofline_times_the_temporal_conv_kernels_on_the_ops_own_work(stride: int) -> None:
    """The per-kernel split of ``--sweep-tconv`` calls the op's kernels on the TCN's layouts: each
    call's result is the reference convolution's forward, input gradient or weight/bias gradient."""
    code = f"""
import json, sys
sys.path.insert(0, "bench")
import torch
from block_throughput import BlockShape
from op_roofline import split_temporal_conv, temporal_conv_inputs, temporal_conv_kernels
from trainer.models.temporal_conv import _reference, _reference_backward
from trainer.models.triton_support import relative_error
torch.manual_seed(0)
shape = BlockShape(32, 32, {stride}, 9, 2)
inputs = temporal_conv_inputs(shape, 2, 16, torch.device("cpu"), torch.float16)  # the interpreter: no bf16
calls = temporal_conv_kernels(inputs, shape)
x, dy, w = (inputs[k].double() for k in ("x", "dy", "weight"))
dx_ref, dw_ref, db_ref = _reference_backward(dy, x, w, [1, 2], {stride})
dw, db = calls["weight_gradient"]()
print(json.dumps({{
    "y": relative_error(calls["forward"](), _reference(x, w, torch.zeros(32).double(), [1, 2], {stride})),
    "dx": relative_error(calls["input_gradient"](), dx_ref),
    "dw": relative_error(dw, dw_ref), "db": relative_error(db, db_ref),
    "split": split_temporal_conv([(shape, 2, 16)], torch.device("cpu"), 1),
}}))
"""
    result = run_in_interpreter(code)
    for key in ("y", "dx", "dw", "db"):
        assert result[key] < 2e-3, (key, result)  # fp16 rounding
    assert set(result["split"]) == {"forward", "input_gradient", "weight_gradient"}
    assert all(ms > 0 for ms in result["split"].values()), result


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_kernel_resources_builds_the_temporal_conv_launches_for_hopper() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from kernel_resources import temporal_conv_rows

    rows = temporal_conv_rows(batch=2, frames=64)  # five TCN shapes × forward, input and weight gradient
    assert len(rows) == 15
    assert {r["kernel"] for r in rows} == {"_shifted_gemm_kernel", "_weight_grad_kernel"}
    for row in rows:
        assert "failed" not in row, row
        # the chosen launches (timed on an H100) fit an sm_90 SM: registers, at most a few spilled
        # bytes, shared memory under its 227 KiB per block
        assert 0 < row["registers"] <= 255 and row["stack_bytes"] <= 64, row
        assert 0 < row["shared_bytes"] <= 227 * 1024, row
