"""CLI: info, convert, generate, and one-line errors."""
import os

from click.testing import CliRunner

from ganinv.cli import main
from ganinv.models.checkpoints import load_native


def test_convert_generate_and_info(fixtures_dir, tmp_path):
    runner = CliRunner()
    pkl = os.path.join(fixtures_dir, "sg2ada_res32.pkl")
    res = runner.invoke(main, ["convert", pkl, str(tmp_path / "native")])
    assert res.exit_code == 0, res.output
    G, D, card, _ = load_native(tmp_path / "native")
    assert D is not None and card["source"]["source_format"] == "nvidia-pickle"
    res = runner.invoke(main, ["info", str(tmp_path / "native")])
    assert res.exit_code == 0 and "num_ws: 8" in res.output
    res = runner.invoke(main, ["generate", "--model", str(tmp_path / "native"), "--seeds", "0,3,5-6",
                               "--truncation-psi", "0.7", "--outdir", str(tmp_path / "gen"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "gen")) == ["grid.png", "seed0000.png", "seed0003.png", "seed0005.png",
                                                    "seed0006.png"]
    # Same seed -> same image from the pickle directly and from the converted model.
    res = runner.invoke(main, ["generate", "--model", pkl, "--seeds", "3", "--truncation-psi", "0.7",
                               "--outdir", str(tmp_path / "gen2")])
    assert res.exit_code == 0
    assert (tmp_path / "gen" / "seed0003.png").read_bytes() == (tmp_path / "gen2" / "seed0003.png").read_bytes()
    # Refuses to overwrite.
    res = runner.invoke(main, ["generate", "--model", pkl, "--seeds", "3", "--outdir", str(tmp_path / "gen2")])
    assert res.exit_code != 0 and "overwrite" in res.output


def test_errors_are_one_line(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    res = runner.invoke(main, ["info", str(bad)])
    assert res.exit_code != 0
    assert "broken.pkl" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["generate", "--model", str(bad), "--seeds", "x-y", "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "Traceback" not in res.output
