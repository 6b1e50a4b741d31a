"""Bad input: one line naming the file and the field, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main


@pytest.fixture()
def bench_copy(tiny_benchmark, tmp_path) -> Path:
    """A copy of the tiny benchmark to damage: annotation files copied, images linked one by one."""
    root = tmp_path / "copy"
    root.mkdir()
    for entry in tiny_benchmark.iterdir():
        if entry.name == "annotations":
            shutil.copytree(entry, root / entry.name)
        elif entry.name == "images":
            (root / "images").mkdir()
            for img in entry.iterdir():
                os.symlink(img, root / "images" / img.name)
        else:
            os.symlink(entry, root / entry.name)
    return root


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _damage(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _check_val(capsys, root: Path) -> tuple[int, str]:
    return _run(capsys, "data", "check", str(root), "--split", "val")


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("copa-bench: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_the_undamaged_copy_passes(capsys, bench_copy):
    assert main(["data", "check", str(bench_copy), "--split", "val"]) == 0
    assert "val" in capsys.readouterr().out


def test_malformed_json(capsys, bench_copy):
    path = bench_copy / "annotations" / "captions_val.json"
    path.write_text(path.read_text()[:1000])
    _assert_one_line(*_check_val(capsys, bench_copy), "captions_val.json", "line 1 column", "malformed JSON")


def test_missing_key(capsys, bench_copy):
    _damage(bench_copy / "annotations" / "instances_val.json", lambda d: d["annotations"][3].pop("bbox"))
    _assert_one_line(*_check_val(capsys, bench_copy), "instances_val.json", "annotations[3].bbox", "missing")


def test_missing_image_file(capsys, bench_copy):
    name = json.loads((bench_copy / "annotations" / "captions_val.json").read_text())["images"][5]["file_name"]
    (bench_copy / "images" / name).unlink()
    _assert_one_line(*_check_val(capsys, bench_copy), name, "image", "file not found")


def test_corrupt_image_file(capsys, bench_copy):
    name = json.loads((bench_copy / "annotations" / "captions_val.json").read_text())["images"][9]["file_name"]
    (bench_copy / "images" / name).unlink()
    (bench_copy / "images" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    _assert_one_line(*_check_val(capsys, bench_copy), name, "image", "cannot be decoded")


@pytest.mark.parametrize("box, message", [([100.0, 100.0, 5.0, 5.0], "lies outside the 64x64 image"),
                                          ([-20.0, 3.0, 10.0, 4.0], "lies outside the 64x64 image"),
                                          ([3.0, 3.0, 0.0, 7.0], "has zero area"),
                                          ([3.0, 3.0, 7.0], "expected [x, y, width, height]")])
def test_bad_box(capsys, bench_copy, box, message):
    def edit(d):
        d["annotations"][0]["bbox"] = box

    _damage(bench_copy / "annotations" / "instances_val.json", edit)
    _assert_one_line(*_check_val(capsys, bench_copy), "instances_val.json", "annotations[0].bbox", message)


def test_empty_caption(capsys, bench_copy):
    def edit(d):
        d["annotations"][7]["caption"] = "   "

    _damage(bench_copy / "annotations" / "captions_val.json", edit)
    _assert_one_line(*_check_val(capsys, bench_copy), "captions_val.json", "annotations[7].caption", "empty caption")


def test_wrong_type(capsys, bench_copy):
    def edit(d):
        d["images"][0]["id"] = "one"

    _damage(bench_copy / "annotations" / "captions_val.json", edit)
    _assert_one_line(*_check_val(capsys, bench_copy), "captions_val.json", "images[0].id", "expected int, got str")


def test_unknown_split(capsys, bench_copy):
    _assert_one_line(*_run(capsys, "data", "check", str(bench_copy), "--split", "dev"), "split",
                     "unknown split 'dev'")


def test_incomplete_benchmark_is_not_taken_for_a_dataset(capsys, bench_copy):
    (bench_copy / "MANIFEST.json").unlink()
    _assert_one_line(*_check_val(capsys, bench_copy), "MANIFEST.json", "not a complete copa-bench benchmark")


def test_unknown_preset_writes_nothing(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["data", "make", "--out", str(tmp_path / "x"), "--preset", "huge"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--preset" in err and "huge" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_pta_fraction_writes_nothing(capsys, tmp_path):
    _assert_one_line(*_run(capsys, "data", "make", "--out", str(tmp_path / "x"), "--pta-fraction", "1.5"),
                     "--pta-fraction", "between 0 and 1")
    assert list(tmp_path.iterdir()) == []


def test_make_refuses_to_overwrite_another_directory(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _assert_one_line(*_run(capsys, "data", "make", "--out", str(out)), str(out), "--out", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_cli_exit_status_end_to_end(tmp_path):
    """The installed entry point, as a user runs it: exit 2 and a single line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "data", "check", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"copa-bench: error: {tmp_path / 'nowhere' / 'MANIFEST.json'}: not found: not a complete copa-bench "
        "benchmark (run 'copa-bench data make')"]
