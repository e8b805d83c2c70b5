"""URL sources through yt-dlp, against a web server on 127.0.0.1 (no network): direct files, a page with a
<video> tag, a URL list, dead links; provenance recorded; reruns never download again."""

import json

import pytest
from ingest_fixtures import serve, write_video

from data_ingest.download import DownloadSettings
from data_ingest.settings import IngestSettings
from data_ingest.video_ingest import IngestOptions, ingest_video_sources
from genie_jax.data import ClipDataset

OPTIONS = IngestOptions(settings=IngestSettings(height=32, width=32, clip_len=8), val_fraction=0.34,
                        download=DownloadSettings(max_height=32, retries=1, retry_wait=0.01, socket_timeout=5))


@pytest.mark.slow  # importing yt-dlp's extractors alone takes ~5 s
def test_urls_are_downloaded_recorded_and_not_fetched_twice(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for i, name in enumerate(["one.mp4", "two.webm", "three.mp4", "a/video.mp4", "b/video.mp4"]):
        (site / name).parent.mkdir(exist_ok=True)
        write_video(site / name, 60, seed=20 + i, codec="libvpx-vp9" if name.endswith("webm") else "libx264")
    (site / "watch.html").write_text("<html><head><title>A speedrun</title></head><body>"
                                     '<video src="two.webm" controls></video></body></html>')
    out = tmp_path / "out"
    with serve(site) as base:
        (tmp_path / "list.txt").write_text(f"# runs to ingest\n{base}/three.mp4\n\n{base}/missing.mp4  # gone\n")
        sources = [f"{base}/one.mp4", f"{base}/watch.html", "@" + str(tmp_path / "list.txt"),
                   "http://127.0.0.1:9/unreachable.mp4", f"{base}/a/video.mp4", f"{base}/b/video.mp4"]
        logs = []
        report = ingest_video_sources(sources, out, OPTIONS, log=logs.append)
        # Killed after yt-dlp noted a download in its archive but before our record of it was written: the rerun
        # finds the finished file by name instead of failing (yt-dlp itself skips it).
        downloads = out / ".ingest" / "downloads"
        record = downloads / "videos" / f"{report.manifest['sources'][0]['provenance']['record']}.json"
        file = downloads / "videos" / json.loads(record.read_text())["file"]
        record.unlink()
        for url_record in (downloads / "urls").iterdir():
            url_record.unlink()
        modified = file.stat().st_mtime_ns
        skipped = ingest_video_sources(sources, out, OPTIONS, log=lambda _: None)
        assert skipped.manifest["dataset"]["fingerprint"] == report.manifest["dataset"]["fingerprint"]
        assert record.is_file() and file.stat().st_mtime_ns == modified  # not downloaded again
    assert report.exit_code == 1
    failed = {s["name"]: s["reason"] for s in report.manifest["sources"] if s["status"] == "failed"}
    assert set(failed) == {f"{base}/missing.mp4", "http://127.0.0.1:9/unreachable.mp4"}
    assert "404" in failed[f"{base}/missing.mp4"] and "Connection refused" in failed["http://127.0.0.1:9/unreachable.mp4"]
    assert any("retry 1/1" in line and "unreachable" in line for line in logs)  # retried with backoff
    assert not any("retry" in line and "missing" in line for line in logs)  # a 404 is not retried
    ok = {s["name"]: s for s in report.manifest["sources"] if s["status"] == "ok"}
    # Two sites' "video.mp4" (the same name, other videos) are two sources.
    assert set(ok) == {f"{base}/one.mp4", f"{base}/watch.html", f"{base}/three.mp4", f"{base}/a/video.mp4",
                       f"{base}/b/video.mp4"}
    page = next(s for s in ok.values() if s["provenance"]["url"] == f"{base}/watch.html")
    assert page["provenance"]["title"].startswith("A speedrun") and page["provenance"]["webpage_url"]
    for s in ok.values():
        assert {"url", "title", "uploader", "license", "webpage_url"} <= set(s["provenance"])
        assert (out / ".ingest" / "downloads" / "videos" / s["provenance"]["file"]).is_file()
    # Downloads stay inside --out.
    downloads = out / ".ingest" / "downloads"
    assert len(list((downloads / "videos").glob("*.mp4"))) + len(list((downloads / "videos").glob("*.webm"))) == 5
    assert sum(len(a.read_text().splitlines()) for a in (downloads / "archives").iterdir()) == 5
    assert ClipDataset(out).info.num_clips["train"] > 0

    # Rerun with the server gone: finished URLs come from the records, only the failures are tried again.
    again = ingest_video_sources(sources, out, OPTIONS, log=lambda _: None)
    assert {s["name"] for s in again.manifest["sources"] if s["status"] == "ok"} == set(ok)
    assert all(s["reused"] for s in again.manifest["sources"] if s["status"] == "ok")
    assert again.manifest["dataset"]["fingerprint"] == report.manifest["dataset"]["fingerprint"]
    assert json.loads((out / "manifest.json").read_text())["dataset"] == again.manifest["dataset"]
