"""Figures for docs/benchmarks.md, drawn from the JSON files the benchmark scripts write with `--json`.

Each benchmark script names itself in its JSON (`"benchmark": "inversion"`, `"clone_sweep"`,
`"editability"`, `"generator_speed"`), and this module draws the matching figure:

- inversion, clone_sweep: time vs PSNR, the best PSNR a run had reached by each moment (wall clock from
  the call, the method's own initialization included), one line per run, one colour per method or setting;
- editability: the distortion-editability trade-off, reconstruction PSNR against the editability ratio
  at the report strength (1 = edits act as on the GAN's own samples);
- generator_speed: images per second of ganinv and of the official implementation's code path, per
  configuration and batch size, with their ratio.

The scripts call these functions for `--plot PATH.png`; run this file to redraw every figure from the
saved JSON, so figures always show the numbers in the tables:

    python benchmarks/plots.py docs/data --outdir docs/img
    python benchmarks/plots.py docs/data/editability_fashion32.json --outdir /tmp/figures

matplotlib is optional (`pip install -e ".[bench]"`); it is imported only when a figure is drawn.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise SystemExit('plots need matplotlib: pip install -e ".[bench]"') from e
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def best_so_far(trace) -> tuple[list[float], list[float]]:
    """[[seconds, psnr], ...] -> (seconds, best PSNR reached by then), as a step curve's corners."""
    times, best = [], []
    top = float("-inf")
    for seconds, psnr in sorted((float(t), float(p)) for t, p, *_ in trace):
        if psnr > top:
            top = psnr
            times.append(seconds)
            best.append(top)
    if trace:
        times.append(max(float(t) for t, *_ in trace))
        best.append(top)
    return times, best


def _series_label(row: dict) -> str:
    if "variant" in row:
        return str(row["variant"])
    config = row.get("config") or {}
    return json.dumps(config, sort_keys=True) if config else "defaults"


def plot_time_psnr(data: dict, path: str | Path, title: str | None = None) -> Path:
    """Time vs PSNR from an inversion or clone_sweep JSON (rows with a `trace` of [seconds, psnr])."""
    plt = _pyplot()
    rows = [r for r in data.get("rows", []) if r.get("trace")]
    if not rows:
        raise ValueError("no rows with a (time, PSNR) trace: rerun the benchmark with --json")
    labels = list(dict.fromkeys(_series_label(r) for r in rows))
    images = list(dict.fromkeys(str(r.get("image")) for r in rows))
    colours = plt.get_cmap("tab10")
    panels = images if len(images) <= 6 else ["all images"]  # one panel per image, unless there are many
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.5, 4), dpi=120, sharey=True,
                             squeeze=False)
    target = data.get("target_psnr")
    for ax, panel in zip(axes[0], panels):
        for k, label in enumerate(labels):
            mine = [r for r in rows if _series_label(r) == label and panel in ("all images", str(r.get("image")))]
            for i, row in enumerate(mine):
                times, best = best_so_far(row["trace"])
                ax.step(times, best, where="post", color=colours(k % 10), alpha=0.85, linewidth=1.4,
                        label=label if i == 0 else None)
                ax.plot(times[-1:], best[-1:], "o", color=colours(k % 10), markersize=3)  # where the run ended
        if target:
            ax.axhline(float(target), color="0.4", linestyle="--", linewidth=1, label=f"target {float(target):g} dB")
        ax.set_xlim(left=0)
        ax.set_xlabel("seconds")
        ax.set_title(panel if panel == "all images" else f"image {panel}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best PSNR so far (dB)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    clock = "CPU time" if data.get("clock") == "cpu" else "wall clock"
    fig.suptitle(title or f"{data.get('model', '')}: time vs PSNR ({clock} from the call, initialization "
                          f"included), {data.get('threads', '?')} threads", fontsize=10)
    return _save(fig, path)


def plot_editability(data: dict, path: str | Path, title: str | None = None) -> Path:
    """Distortion-editability scatter from an editability JSON (its `summary`, one entry per source)."""
    plt = _pyplot()
    points = [s for s in data.get("summary", []) if s.get("psnr") is not None and s.get("ratio_plus") is not None]
    if not points:
        raise ValueError("no inverted sources with PSNR and ratio in the summary")
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="sampled latents (reference)")
    for s in points:
        ax.scatter(s["psnr"], s["ratio_plus"], s=36)
        seconds = s.get("seconds")
        note = f"{s['source']}" + (f" ({seconds:.1f} s)" if seconds is not None else "")
        ax.annotate(note, (s["psnr"], s["ratio_plus"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    strength = data.get("report_strength", 2.0)
    ax.set_xlabel("reconstruction PSNR (dB, median over images)  → less distortion")
    ax.set_ylabel(f"editability ratio at +{float(strength):g}  → more editable")
    ax.set_title(title or f"{data.get('model', '')}: distortion vs editability, "
                          f"{len(data.get('images', []))} held-out images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_generator_speed(data: dict | list, path: str | Path, title: str | None = None) -> Path:
    """Images/s per configuration and batch from a generator_speed JSON, ganinv beside the official path."""
    plt = _pyplot()
    rows = data["rows"] if isinstance(data, dict) else data
    if not rows:
        raise ValueError("no rows in the generator speed JSON")
    compare = all("official_path_img_per_s" in r for r in rows)
    names = [f"{r['config']}\nbatch {r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    width = 0.38 if compare else 0.6
    xs = list(range(len(rows)))
    ours = [r["img_per_s"] for r in rows]
    ax.bar([x - (width / 2 if compare else 0) for x in xs], ours, width, label="ganinv")
    if compare:
        ref = [r["official_path_img_per_s"] for r in rows]
        ax.bar([x + width / 2 for x in xs], ref, width, label="official code path")
        for x, r in zip(xs, rows):
            ratio = r["ratio_vs_official_path"]
            ax.annotate(f"{ratio:.2f}x" + (" faster" if ratio >= 1 else ""),
                        (x, max(r["img_per_s"], r["official_path_img_per_s"])),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_yscale("log")
    top = max(max(ours), max((r.get("official_path_img_per_s") or 0) for r in rows))
    ax.set_ylim(top=top * 1.6)  # room for the ratio labels
    ax.set_xticks(xs)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("images / second (median, log scale)")
    first = rows[0]
    ax.set_title(title or f"generator throughput, {first.get('device', 'cpu')}, {first.get('threads', '?')} threads")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_encoder_training(data: dict, path: str | Path, title: str | None = None) -> Path:
    """Encoder PSNR against training steps (log scale) beside the optimization reference it aims at, with
    the log-linear extrapolation of each measured series."""
    import math
    plt = _pyplot()
    rows = sorted(data["rows"], key=lambda r: r["steps"])
    if not rows:
        raise ValueError("no rows in the encoder training JSON")
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    last_x = max(r["steps"] for r in rows)
    reach = max(data.get("extrapolate_to", last_x), last_x)
    extrapolations = data.get("extrapolations", [])  # {"from": series key, "slope": dB per doubling, "label"}
    steepest = max((line["slope"] for line in extrapolations), default=None)
    series = {}
    for key, label, marker in (("check_psnr", "trainer's check, other held-out images (2 passes)", "o"),
                               ("benchmark_psnr", "benchmark images (2 passes)", "s")):
        points = [(r["steps"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            series[key] = (points, ax.plot(*zip(*points), marker=marker, label=label)[0].get_color())
    for line in extrapolations:
        if line["from"] not in series:
            raise ValueError(f"extrapolation from {line['from']!r}, which has no points")
        points, color = series[line["from"]]
        x0, y0 = points[-1]
        xs = [x0 * 2 ** (k / 4) for k in range(int(4 * math.log2(reach / x0)) + 1)]
        ax.plot(xs, [y0 + line["slope"] * math.log2(x / x0) for x in xs], color=color, alpha=0.6,
                linestyle="--" if line["slope"] == steepest else ":",
                label=line.get("label", f"{line['slope']:.2f} dB per doubling"))
    for key, label, style in (("reference_psnr", "optimize W+ 300 steps (benchmark images)", "-"),
                              ("target_psnr", "target: within 1 dB of it", ":")):
        if data.get(key) is not None:
            ax.axhline(data[key], color="black", linestyle=style, linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("encoder training steps (log scale)")
    ax.set_ylabel("PSNR dB (median)")
    ax.set_title(title or f"{data.get('model', '')} encoder toward optimization quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


PLOTTERS = {
    "inversion": plot_time_psnr,
    "clone_sweep": plot_time_psnr,
    "editability": plot_editability,
    "generator_speed": plot_generator_speed,
    "encoder_training": plot_encoder_training,
}


def benchmark_of(data) -> str:
    """The benchmark a JSON file came from (generator_speed's older files are a bare list of rows)."""
    if isinstance(data, list):
        return "generator_speed"
    name = data.get("benchmark")
    if name not in PLOTTERS:
        raise ValueError(f"unknown benchmark {name!r}: expected one of {sorted(PLOTTERS)}")
    return name


def plot_file(json_path: str | Path, outdir: str | Path, skip_unknown: bool = False) -> Path | None:
    """Draw the figure of one benchmark JSON file as OUTDIR/<its stem>.png. With `skip_unknown`, a file of
    a benchmark that has no figure (table data) gives None instead of the error."""
    json_path = Path(json_path)
    data = json.loads(json_path.read_text())
    try:
        name = benchmark_of(data)
    except ValueError:
        if skip_unknown:
            return None
        raise
    return PLOTTERS[name](data, Path(outdir) / f"{json_path.stem}.png")


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="benchmark JSON files, or folders of them")
    parser.add_argument("--outdir", default="docs/img", help="where the PNGs go (named after the JSON files)")
    args = parser.parse_args(argv)
    files = []  # (path, found in a folder): a folder also holds the data of tables that have no figure
    for item in map(Path, args.inputs):
        if item.is_dir():
            files += [(path, True) for path in sorted(item.glob("*.json"))]
        elif item.is_file():
            files.append((item, False))
        else:
            sys.exit(f"{item}: no such file or folder")
    if not files:
        sys.exit("no JSON files found")
    written = []
    for file, in_folder in files:
        try:
            path = plot_file(file, args.outdir, skip_unknown=in_folder)
            if path is None:
                print(f"skipped {file} (no figure for its benchmark)")
                continue
            written.append(path)
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            sys.exit(f"{file}: {e}")
        print(f"wrote {written[-1]}")
    return written


if __name__ == "__main__":
    main()
