"""The benchmark figures (benchmarks/plots.py) draw from the JSON the benchmark scripts write."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

if importlib.util.find_spec("matplotlib") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("matplotlib is missing: the test extra must install it")
    pytest.skip("matplotlib not installed (pip install matplotlib)", allow_module_level=True)


@pytest.fixture(scope="module")
def plots():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import plots as module
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


INVERSION = {
    "benchmark": "inversion", "model": "tiny", "threads": 2, "target_psnr": 35.0,
    "rows": [
        {"variant": "optimize", "image": "heldout0", "trace": [[0.1, 12.0, "optimize"], [0.5, 15.5, "optimize"],
                                                                [0.9, 15.1, "optimize"], [1.4, 18.2, "optimize"]]},
        {"variant": "clone", "image": "heldout0", "trace": [[0.2, 14.0, "encoder"], [1.0, 30.0, "clone"],
                                                             [1.6, 35.2, "result"]]},
        {"variant": "clone", "image": "heldout9", "trace": [[0.3, 13.0, "encoder"], [2.0, 35.1, "result"]]},
    ],
}
CLONE_SWEEP = {
    "benchmark": "clone_sweep", "model": "tiny", "threads": 2, "target_psnr": 35.0,
    "rows": [{"image": 0, "config": {}, "trace": [[1.0, 20.0], [2.0, 36.0]]},
             {"image": 0, "config": {"preset": "paper"}, "trace": [[1.0, 18.0], [3.0, 18.0]]}],
}
EDITABILITY = {
    "benchmark": "editability", "model": "tiny", "images": ["heldout0", "heldout5"], "report_strength": 2.0,
    "summary": [{"source": "sampled", "psnr": None, "seconds": None, "ratio_plus": 1.0},
                {"source": "optimize", "psnr": 22.6, "seconds": 12.9, "ratio_plus": 0.67},
                {"source": "clone", "psnr": 35.3, "seconds": 1.8, "ratio_plus": 1.81}],
}
SPEED = {
    "benchmark": "generator_speed", "device": "cpu", "threads": 2,
    "rows": [{"config": "32px", "batch": 1, "img_per_s": 125.4, "official_path_img_per_s": 108.7,
              "ratio_vs_official_path": 1.15, "device": "cpu", "threads": 2},
             {"config": "256px", "batch": 16, "img_per_s": 2.69, "official_path_img_per_s": 1.03,
              "ratio_vs_official_path": 2.62, "device": "cpu", "threads": 2}],
}

ENCODER_TRAINING = {
    "benchmark": "encoder_training", "model": "tiny", "reference_psnr": 19.0, "target_psnr": 18.0,
    "extrapolate_to": 4000, "extrapolations": [{"from": "benchmark_psnr", "slope": 0.5}],
    "rows": [{"steps": 500, "check_psnr": 15.0, "benchmark_psnr": 14.0},
             {"steps": 1000, "check_psnr": 15.6, "benchmark_psnr": None}],
}


@pytest.mark.parametrize("name, data", [("inversion", INVERSION), ("clone_sweep", CLONE_SWEEP),
                                        ("editability", EDITABILITY), ("generator_speed", SPEED),
                                        ("encoder_training", ENCODER_TRAINING)])
def test_each_benchmark_json_becomes_a_png(plots, tmp_path, name, data):
    source = tmp_path / f"{name}_tiny.json"
    source.write_text(json.dumps(data))
    written = plots.plot_file(source, tmp_path / "img")
    assert written == tmp_path / "img" / f"{name}_tiny.png"
    assert _is_png(written)


def test_main_redraws_every_file_of_a_folder(plots, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, data in [("a", INVERSION), ("b", EDITABILITY), ("c", SPEED), ("d", {"benchmark": "faces", "rows": []})]:
        (data_dir / f"{name}.json").write_text(json.dumps(data))
    written = plots.main([str(data_dir), "--outdir", str(tmp_path / "out")])
    # A folder's table data without a figure (d) is passed over; named on its own it is an error.
    assert sorted(p.name for p in written) == ["a.png", "b.png", "c.png"]
    assert all(_is_png(p) for p in written)
    with pytest.raises(SystemExit, match="unknown benchmark 'faces'"):
        plots.main([str(data_dir / "d.json"), "--outdir", str(tmp_path / "out")])


def test_older_generator_speed_files_are_a_bare_list(plots, tmp_path):
    source = tmp_path / "speed.json"
    source.write_text(json.dumps(SPEED["rows"]))
    assert _is_png(plots.plot_file(source, tmp_path))


def test_best_so_far_keeps_the_running_maximum(plots):
    times, best = plots.best_so_far([[0.5, 15.5], [0.1, 12.0], [0.9, 15.1], [1.4, 18.2]])
    assert times == [0.1, 0.5, 1.4, 1.4]
    assert best == [12.0, 15.5, 18.2, 18.2]


def test_unknown_or_empty_data_is_a_clear_error(plots, tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        plots.benchmark_of({"benchmark": "nonsense"})
    with pytest.raises(ValueError, match="trace"):
        plots.plot_time_psnr({"rows": [{"variant": "optimize", "trace": []}]}, tmp_path / "x.png")
