"""configs/experiments/: one complete file per experiment of the manifest, never stale.

The end-to-end runs of these files through the real ``terratorch`` command are in
tests/e2e/test_experiment_files_cli.py.
"""

from __future__ import annotations

import yaml
from config_helpers import CONFIGS, REPO_ROOT, manifest

from terratorch_hsi_peft.configs_gen import EXPERIMENTS_DIR, generate, main


def test_every_experiment_file_is_generated_from_the_current_manifest():
    wanted = generate(REPO_ROOT)
    assert set(wanted) == {EXPERIMENTS_DIR / f"{name}.yaml" for name in manifest()}
    stale = sorted(
        str(path)
        for path, text in wanted.items()
        if not (REPO_ROOT / path).is_file() or (REPO_ROOT / path).read_text() != text
    )
    assert not stale, f"stale: {stale}; run python -m terratorch_hsi_peft.configs_gen"
    on_disk = {p.relative_to(REPO_ROOT) for p in (REPO_ROOT / EXPERIMENTS_DIR).rglob("*.yaml")}
    assert on_disk == set(wanted), "files of configs/experiments/ that no experiment writes"


def test_check_reports_a_stale_file(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    for folder in ("base", "data", "indian_pines", "methods", "paper", "pretraining"):
        (tmp_path / "configs" / folder).symlink_to(CONFIGS / folder)
    for name in ("manifest.yaml", "full_finetuning.yaml", "quickstart.yaml"):
        (tmp_path / "configs" / name).symlink_to(CONFIGS / name)
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    edited = tmp_path / EXPERIMENTS_DIR / "quickstart.yaml"
    edited.write_text(edited.read_text().replace("max_epochs: 30", "max_epochs: 3"))
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert "stale: configs/experiments/quickstart.yaml" in capsys.readouterr().out


def test_an_experiment_file_is_its_composition_with_the_method_inline():
    text = (REPO_ROOT / EXPERIMENTS_DIR / "indian_pines/classification/krona_plus.yaml").read_text()
    config = yaml.safe_load(text)
    method = yaml.safe_load((CONFIGS / "methods" / "krona_plus.yaml").read_text())
    model_args = config["model"]["init_args"]["model_args"]
    assert model_args["peft_config"] == method
    assert model_args["backbone"] == "spectralgpt_vit_base"  # the task file's, kept
    assert config["trainer"]["default_root_dir"] == "outputs/indian_pines/classification/krona_plus"
    assert config["trainer"]["logger"] == {  # base/trainer.yaml's logger, merged with the name
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "outputs", "name": "indian_pines/classification/krona_plus"},
    }
    assert config["data"]["class_path"].endswith("HyperspectralPatchDataModule")
    full = yaml.safe_load(
        (REPO_ROOT / EXPERIMENTS_DIR / "indian_pines/classification/full.yaml").read_text()
    )
    assert "peft_config" not in full["model"]["init_args"]["model_args"]
    assert full["model"]["init_args"]["lr"] == 1.0e-4  # configs/full_finetuning.yaml's
    callbacks = [c["class_path"].rsplit(".", 1)[1] for c in full["trainer"]["callbacks"]]
    assert "AdapterCheckpoint" not in callbacks  # the list is replaced, not merged
