"""`genie demo --quick`: the README's main command, end to end at a few steps per stage."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from genie_jax.demo import run_demo


@pytest.mark.slow
def test_quick_demo_writes_everything_a_person_looks_at(tmp_path):
    summary = run_demo(tmp_path, quick=True, progress=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("nmi", "nmi_ceiling", "delta_t_psnr"):
        assert isinstance(saved[key], float), key
    assert 0.0 <= saved["nmi"] <= 1.0 and 0.0 < saved["nmi_ceiling"] <= 1.0
    assert saved["delta_t_psnr_detail"]["clips"] > 1 and saved["delta_t_psnr_detail"]["t"] == 4
    for name in ("mixed_rollout.gif", "reconstruction.gif", "actions/all_actions.gif"):
        with Image.open(tmp_path / name) as gif:
            assert gif.n_frames > 1, name
    assert len(list((tmp_path / "actions").glob("action_*.gif"))) == 8  # one per latent action of the demo preset
    assert (tmp_path / "data" / "genie_dataset.json").is_file() and (tmp_path / "run" / "dynamics").is_dir()
    # a second run resumes instead of redoing the work
    again = run_demo(tmp_path, quick=True, progress=False)
    assert again["timings"]["tokenizer_s"] < summary["timings"]["tokenizer_s"]

    # What a user runs next on the demo's run and data: `genie eval` (real I3D) and `genie inspect-actions`.
    from genie_jax.cli import main

    report_path = tmp_path / "report.json"
    assert main(["eval", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--clips", "4",
                 "--batch-size", "2", "--resamples", "10", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["generated_clips"] == 4 and report["fvd"]["fvd"]["mean"] >= 0
    assert 0.0 <= report["alignment"]["nmi"]["mean"] <= 1.0
    assert report["controllability"]["delta_t_psnr_db"]["mean"] == pytest.approx(
        report["controllability"]["psnr_inferred_actions_db"] - report["controllability"]["psnr_random_actions_db"],
        abs=1e-4)
    atlas = tmp_path / "atlas"
    assert main(["inspect-actions", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--out",
                 str(atlas), "--contexts", "2", "--frames", "2", "--clips", "4"]) == 0
    page = (atlas / "index.html").read_text()
    for name in ("atlas.gif", "atlas.png", "effects.png", "usage.png", "confusion.png"):
        assert f'"{name}"' in page and (atlas / name).is_file(), name
