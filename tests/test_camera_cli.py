"""`sanawm traj`: generation, conversion, and one-line errors with exit code 2."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from sanawm.camera import action_to_c2w, default_intrinsics, load_trajectory
from sanawm.cli import main


def test_action_to_npz_and_plot(tmp_path, capsys):
    out, png = tmp_path / "walk.camera.npz", tmp_path / "walk.png"
    argv = ["traj", "--action", "w-10,l-5", "--out", str(out), "--plot", str(png)]
    argv += ["--translation-speed", "0.2", "--rotation-speed", "3", "--image-size", "64x96", "--fov", "90"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    traj = load_trajectory(out)
    torch.testing.assert_close(traj.c2w, action_to_c2w("w-10,l-5", 0.2, 3.0))
    assert traj.image_size == (64, 96)
    torch.testing.assert_close(traj.intrinsics[0], default_intrinsics((64, 96), 90.0))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_convert_with_opengl(tmp_path):
    src = tmp_path / "a.npz"
    assert main(["traj", "--action", "wd-4", "--out", str(src)]) == 0
    assert load_trajectory(src).image_size == (704, 1280)
    assert main(["traj", "--from", str(src), "--out", str(tmp_path / "b.json")]) == 0
    assert main(["traj", "--from", str(src), "--opengl", "--out", str(tmp_path / "c.txt")]) == 0
    a, b = load_trajectory(src), load_trajectory(tmp_path / "b.json")
    c = load_trajectory(tmp_path / "c.txt", image_size=(704, 1280))
    torch.testing.assert_close(b.c2w, a.c2w)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    torch.testing.assert_close(c.c2w, a.c2w @ flip, atol=1e-6, rtol=0)


def test_action_with_the_v2_keys(tmp_path):
    out = tmp_path / "v2.npz"
    assert main(["traj", "--action", "ja-8,none-4", "--keys", "v2", "--out", str(out)]) == 0
    got = load_trajectory(out).c2w
    torch.testing.assert_close(got, action_to_c2w("ja-8,none-4", keys="v2"), atol=1e-6, rtol=0)
    assert not torch.allclose(got, action_to_c2w("ja-8,none-4"), atol=1e-3)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--action", "w-3,q-2"], "'q-2'"),
        (["--action", "w-0"], "'w-0'"),
        (["--action", "w-3", "--opengl"], "--opengl"),
        (["--action", "w-3", "--fov", "200"], "field of view"),
        (["--from", "{missing}"], "No such file"),
        (["--from", "{npy}"], "image size"),
        (["--from", "{npy}", "--image-size", "8x8", "--rotation-speed", "2"], "--rotation-speed"),
        (["--from", "{npy}", "--image-size", "8x8", "--keys", "v2"], "--keys"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, capsys, args, fragment):
    npy = tmp_path / "p.npy"
    np.save(npy, np.eye(4)[None])
    args = [a.format(missing=tmp_path / "nope.npz", npy=npy) for a in args]
    assert main(["traj", *args, "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sanawm traj: error:") and fragment in err
    assert not (tmp_path / "o.npz").exists()


def test_bad_output_suffix_and_image_size(tmp_path, capsys):
    assert main(["traj", "--action", "w-3", "--out", str(tmp_path / "o.csv")]) == 2
    assert "'.csv'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["traj", "--action", "w-3", "--image-size", "64by64", "--out", str(tmp_path / "o.npz")])
    assert info.value.code == 2 and "HxW" in capsys.readouterr().err


def test_installed_script(tmp_path):
    script = shutil.which("sanawm")
    if script is None:
        pytest.skip("the sanawm console script is not installed (pip install -e .)")
    out = tmp_path / "s.camera.npz"
    ok = subprocess.run([script, "traj", "--action", "w-8", "--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_trajectory(out).num_frames == 9
    bad = subprocess.run([script, "traj", "--action", "w-8,zz-1", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'zz-1'" in bad.stderr
