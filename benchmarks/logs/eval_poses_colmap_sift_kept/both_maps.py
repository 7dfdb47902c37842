"""For each clip: COLMAP with SIFT only vs with the OpenCV tracks (when SIFT is thin); consensus of each on the OpenCV tracks."""
import sys, time, importlib.util, json
import os; sys.path.insert(0, os.path.abspath("tests")); sys.path.insert(0, os.path.abspath("scripts"))
import numpy as np, pycolmap, torch, cv2
from multiprocessing import Pool
from sanawm.evaluation import PoseEstimationConfig
from sanawm.evaluation import _pose_colmap as pc
from sanawm.evaluation._pose_opencv import opencv_tracks
from sanawm.evaluation.geometry import invert_rigid

def consensus(c2w, tracks, k, px=0.5):
    kps, ids = tracks
    w2c = invert_rigid(c2w)
    fx, fy, cx, cy = k
    obs = {}
    for j, (kp, tid) in enumerate(zip(kps, ids)):
        for i, t in enumerate(tid):
            if t >= 0: obs.setdefault(int(t), []).append((j, np.array([(kp[i,0]-cx)/fx, (kp[i,1]-cy)/fy])))
    limit = px / ((fx + fy) / 2); agreed = counted = 0
    for t, o in obs.items():
        if len(o) < 3: continue
        counted += 1
        cams = w2c[[j for j, _ in o], :3]
        x = np.stack([v for _, v in o])
        rows = (x[:, :, None] * cams[:, 2:3, :] - cams[:, :2, :]).reshape(-1, 4)
        p = np.linalg.svd(rows)[2][-1]
        if abs(p[3]) < 1e-12: continue
        cam = cams[:, :, :3] @ (p[:3] / p[3]) + cams[:, :, 3]
        if (cam[:, 2] <= 1e-6).any(): continue
        if (np.linalg.norm(cam[:, :2] / cam[:, 2:] - x, axis=1) < limit).all(): agreed += 1
    return agreed, counted

def job(args):
    name, ss, blur = args
    import importlib.util, sys
    from test_evaluation_poses_worlds import _clip, _blurred, SCRIPTS
    spec = importlib.util.spec_from_file_location("eval_poses", SCRIPTS / "eval_poses.py")
    ep = importlib.util.module_from_spec(spec); sys.modules["eval_poses"] = ep; spec.loader.exec_module(ep)
    from sanawm.evaluation.camera_metrics import camera_errors
    torch.set_num_threads(1); cv2.setNumThreads(1)
    frames, c2w_true, k = _clip(ep, name, supersample=ss)
    if blur: frames = _blurred(frames)
    cfg = PoseEstimationConfig(backend="colmap")
    kcv = k - np.array([0, 0, 0.5, 0.5])
    try:
        tracks = opencv_tracks(frames, np.broadcast_to(kcv, (len(frames), 4)), cfg)
    except Exception as e:
        tracks = None
    med = {}
    om = pc._median_consecutive_matches
    def spy(*a):
        v = om(*a); med["m"] = v; return v
    pc._median_consecutive_matches = spy
    out = {"name": name}
    og = pycolmap.global_mapping
    def gm(database, images, output, options):
        rec = og(database, images, output, options)
        if rec:
            r = max(rec.values(), key=lambda r: r.num_reg_images())
            med["stats"] = [r.num_points3D(), r.compute_num_observations(), round(r.compute_mean_reprojection_error(), 3), round(r.compute_mean_track_length(), 1)]
        return rec
    pycolmap.global_mapping = gm
    for label, few in (("sift", 0), ("default", 120)):
        if label == "default" and med.get("m", 0) >= 120:
            out[label] = "same"; continue
        pc._FEW_MATCHES = few
        med["stats"] = "turn"
        try:
            est = pc.colmap_poses(frames, k, cfg)
            rot = camera_errors(est, c2w_true).rot_err_deg
            out[label] = [round(float(rot.mean()), 3), round(float(rot.max()), 3)] + (list(consensus(est, tracks, kcv)) if tracks else []) + [med["stats"]]
        except Exception as e:
            out[label] = str(e)[:60]
    out["median"] = med.get("m")
    return out

if __name__ == "__main__":
    ss = int(sys.argv[1]); blur = sys.argv[2] == "blur"
    spec = importlib.util.spec_from_file_location("eval_poses", "scripts/eval_poses.py")
    ep = importlib.util.module_from_spec(spec); sys.modules["eval_poses"] = ep; spec.loader.exec_module(ep)
    names = [s.name for s in ep.default_clips()]
    if len(sys.argv) > 3: names = [n for n in names if n.split("_")[0] in sys.argv[3].split(",")]
    import multiprocessing as mp
    t0 = time.time()
    with mp.get_context("spawn").Pool(int(os.environ.get("WORKERS", "2"))) as pool:
        for r in pool.imap(job, [(n, ss, blur) for n in names]):
            print(json.dumps(r), flush=True)
    print("seconds", round(time.time() - t0), flush=True)
