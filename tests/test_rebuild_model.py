"""scripts/rebuild_model.py: a model folder rebuilt from a newer run carries an encoder, directions and
quality numbers made for the new generator, with the old folder's settings, and a failed rebuild leaves
the old folder as it was."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from test_train import _tiny_dataset

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("rebuild_model", REPO / "scripts" / "rebuild_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _invoke(*args: str) -> None:
    from ganinv.cli import main

    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def old_model(tmp_path_factory):
    """A tiny model folder with every part an embedded model has, and its run trained two steps further."""
    from ganinv.editing import find_directions
    from ganinv.models.registry import load_model
    from ganinv.train.embedding import train_embedding_on_dataset

    root = tmp_path_factory.mktemp("rebuild")
    data = _tiny_dataset(root / "data")
    run = root / "run"
    train = ["train", "--data", str(data), "--outdir", str(run), "--batch", "8", "--z-dim", "16", "--w-dim", "16",
             "--channel-base", "128", "--channel-max", "16", "--max-steps", "2"]
    _invoke(*train)
    _invoke("train-classifier", "--data", str(data), "--outdir", str(root / "clf"), "--epochs", "1", "--batch", "8",
            "--width", "4")
    old = root / "old"
    _invoke("export-model", "--run", str(run), "--data", str(data), "--classifier", str(root / "clf"),
            "--outdir", str(old), "--name", "tiny", "--description", "a tiny model", "--notes", "old notes",
            "--num-real", "10", "--num-quality-samples", "16")
    train_embedding_on_dataset(data, old / "embedding", steps=2, batch_size=8, base_width=8, max_width=16)
    _invoke("train-encoder", "--model", str(old), "--data", str(data), "--outdir", str(root / "enc"),
            "--batch-real", "2", "--batch-generated", "2", "--max-steps", "2", "--dfeat-weight", "0",
            "--w-weight", "0.5", "--device", "cpu")
    _invoke("export-encoder", str(root / "enc"), "--model-dir", str(old))
    model = load_model(old)
    for method, settings in (("sefa", dict(layers="0-2", num=2, name="sefa_coarse")),
                             ("interfacegan", dict(attribute="class:top/shoe", num_samples=400)),
                             ("interfacegan", dict(attribute="class:shoe", num_samples=400)),
                             ("steerability", dict(transformations="zoom,brightness", steps=2, batch_size=2,
                                                   num_std_samples=50))):
        find_directions(method, model, **settings).save(old / "directions")
    _invoke(*train)  # the newer snapshot: two more steps
    return root, data, run, old


def test_rebuild_makes_every_part_for_the_new_generator(old_model, tmp_path):
    from ganinv.editing import find_directions
    from ganinv.editing.direction import load_direction
    from ganinv.models.registry import load_model

    root, data, run, old = old_model
    new = tmp_path / "new"
    stats = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    threads = 2 if stats["threads"] == 1 else 1  # other than the run's, which the card must keep
    code = _script().main(["--run", str(run), "--data", str(data), "--from", str(old), "--outdir", str(new),
                           "--encoder-steps", "2", "--threads", str(threads), "--quality-num-eval", "8",
                           "--workdir", str(tmp_path / "work"),
                           "--set", "interfacegan.num_samples=300"])
    assert code == 0
    assert not new.with_name("new.partial").exists()
    old_card, card = (json.loads((p / "card.json").read_text()) for p in (old, new))
    assert card["images_seen_kimg"] == pytest.approx(2 * old_card["images_seen_kimg"])
    assert card["sha256"] != old_card["sha256"]
    assert (card["name"], card["description"], card["notes"]) == ("tiny", "a tiny model", "old notes")
    assert card["threads"] == stats["threads"]  # the run's threads, not the rebuild's
    embedding = json.loads((new / "embedding" / "card.json").read_text())
    assert embedding == json.loads((old / "embedding" / "card.json").read_text())  # copied: the dataset's
    assert card["shape_quality"]["embedding_sha256"] == embedding["sha256"]
    assert card["shape_quality"]["samples_psi1_vs_train"]["frechet_distance"] >= 0

    model = load_model(new)
    model.encoder.check_generator(model.G)  # the encoder was made for the new weights
    encoder_card = json.loads((new / "encoder" / "card.json").read_text())
    assert encoder_card["generator"]["sha256"] == card["sha256"]
    old_encoder = json.loads((old / "encoder" / "card.json").read_text())["training"]["config"]
    config = encoder_card["training"]["config"]
    assert (config["batch_real"], config["w_weight"], config["dfeat_weight"]) == (
        old_encoder["batch_real"], old_encoder["w_weight"], old_encoder["dfeat_weight"])
    assert any("initialized from an existing encoder" in note for note in encoder_card["notes"])

    assert sorted(model.directions) == sorted(load_model(old).directions) == [
        "interfacegan_class_shoe_vs_rest", "interfacegan_class_top_vs_shoe", "sefa_coarse", "steerability_all"]
    for name in model.directions:
        direction = load_direction(name, model=model)[0]
        before = load_direction(name, model=load_model(old))[0]
        assert direction.model["sha256"] == card["sha256"] != before.model["sha256"]
        assert (direction.method, direction.layers, len(direction)) == (before.method, before.layers, len(before))
    # Found again with the recorded settings: the same as finding it directly on the new generator.
    sefa = load_direction("sefa_coarse", model=model)[0]
    direct = find_directions("sefa", model, layers="0-2", num=2, name="sefa_coarse")
    assert torch.allclose(sefa.vectors, direct.vectors, atol=1e-6)
    boundary = load_direction("interfacegan_class_top_vs_shoe", model=model)[0]
    assert boundary.settings["num_samples"] == 300  # --set replaced the recorded 400
    # Both InterFaceGAN directions came from one classifier pass over the shared samples: the same as
    # the finder labelling its own samples.
    for name, attribute in (("interfacegan_class_top_vs_shoe", "class:top/shoe"), ("interfacegan_class_shoe_vs_rest",
                                                                                      "class:shoe")):
        rebuilt = load_direction(name, model=model)[0]
        alone = find_directions("interfacegan", model, attribute=attribute, num_samples=300, name=name)
        assert torch.allclose(rebuilt.vectors, alone.vectors, atol=1e-5)
        assert rebuilt.scores == pytest.approx(alone.scores) and rebuilt.settings["label_source"] == "classifier head class"
    assert load_direction("interfacegan_class_top_vs_shoe", model=load_model(old))[0].settings["num_samples"] == 400
    walks = load_direction("steerability_all", model=model)[0]  # its transformations, stored as a list
    assert walks.settings["transformations"] == ["zoom", "brightness"] and walks.settings["num_std_samples"] == 50


def test_a_failed_rebuild_leaves_the_old_folder_as_it_was(old_model, tmp_path):
    root, data, run, old = old_model
    target = tmp_path / "target"
    shutil.copytree(old, target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        _script().main(["--run", str(broken), "--data", str(data), "--from", str(target), "--outdir", str(target),
                        "--overwrite", "--encoder-steps", "1", "--threads", "1", "--workdir", str(tmp_path / "w")])
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(SystemExit, match="--overwrite"):
        _script().main(["--run", str(run), "--data", str(data), "--from", str(old), "--outdir", str(target)])
    for bad in ("interfacegan.num_sample=5", "nosuch.seed=1", "interfacegan=3"):
        with pytest.raises(SystemExit, match="FINDER.KEY=VALUE"):
            _script().main(["--run", str(run), "--data", str(data), "--from", str(old), "--outdir", str(tmp_path / "y"),
                            "--set", bad])
    assert not (tmp_path / "y").exists()
    with pytest.raises(SystemExit, match="checkpoint.pt"):
        _script().main(["--run", str(tmp_path), "--data", str(data), "--from", str(old), "--outdir", str(tmp_path / "x")])


def test_interfacegan_stability_compares_two_independent_sample_sets(old_model, tmp_path):
    """benchmarks/interfacegan_stability.py (behind the sample count a rebuild's InterFaceGAN directions use)."""
    spec = importlib.util.spec_from_file_location("ifg_stability", REPO / "benchmarks" / "interfacegan_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root, data, run, old = old_model
    out = tmp_path / "stability.json"
    rows = module.main(["--model", str(old), "--attributes", "class:top/shoe", "--counts", "200,400",
                        "--json", str(out)])
    assert [r["samples"] for r in rows] == [200, 400] and json.loads(out.read_text())["rows"] == rows
    for row in rows:
        assert -1 <= row["cosine"] < 0.999  # two different sets of samples, two different fits
        assert all(p + q <= row["samples"] for p, q in zip(row["positives"], row["negatives"]))
    assert module._attributes("a:x,y/z,b:w", {"a": [], "b": []}) == ["a:x,y/z", "b:w"]


def test_finders_benchmark_reuses_a_saved_direction_only_when_finder_settings_and_weights_match(old_model, tmp_path):
    """benchmarks/finders.py --reuse: the trained finders' directions a rebuild saved are measured, not found
    again; a saved direction with other settings is not taken for one."""
    spec = importlib.util.spec_from_file_location("finders_bench", REPO / "benchmarks" / "finders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root, data, run, old = old_model
    common = ["--model", str(old), "--finders", "sefa", "--num-samples", "4", "--threads", "1"]
    saved = tmp_path / "saved"
    module.main([*common, "--num", "2", "--save", str(saved), "--json", str(tmp_path / "found.json")])
    found = json.loads((tmp_path / "found.json").read_text())["summary"][0]
    module.main([*common, "--num", "2", "--reuse", str(saved), "--json", str(tmp_path / "reused.json")])
    reused = json.loads((tmp_path / "reused.json").read_text())["summary"][0]
    assert found["find_seconds"] is not None and reused["find_seconds"] is None
    assert reused["target_change"] == pytest.approx(found["target_change"])
    module.main([*common, "--num", "3", "--reuse", str(saved), "--json", str(tmp_path / "other.json")])
    other = json.loads((tmp_path / "other.json").read_text())["summary"][0]
    assert other["find_seconds"] is not None and other["components"] == 3  # num 3 is not the saved num 2
    with pytest.raises(SystemExit, match="not a folder"):
        module.main([*common, "--reuse", str(tmp_path / "missing")])


def test_one_classifier_pass_labels_the_prior_samples_as_labelling_them_one_attribute_at_a_time(old_model):
    """classify_prior_samples (the rebuild's one pass for all InterFaceGAN directions) gives the same samples
    and, per attribute, the same labels as label_prior_samples with that attribute's labeller."""
    from ganinv.editing import classifier_heads, classify_prior_samples, labels_from_logits, parse_attribute
    from ganinv.editing.interfacegan import attribute_labeller, label_prior_samples
    from ganinv.models.registry import load_model

    root, data, run, old = old_model
    model = load_model(old)
    ws, logits = classify_prior_samples(model, ["class"], num_samples=40, seed=3, batch_size=16)
    for attribute in ("class:top/shoe", "class:shoe"):
        spec = parse_attribute(attribute, classifier_heads(model))
        ws_one, labels = label_prior_samples(model, attribute_labeller(model.classifier, spec), num_samples=40,
                                             seed=3, batch_size=7)
        assert torch.equal(ws, ws_one) and len(labels) == 40
        assert torch.equal(labels_from_logits(logits["class"], spec), labels)
    with pytest.raises(ValueError, match="no head 'missing'"):
        classify_prior_samples(model, ["missing"], num_samples=4)
